//! A real Kamailio (Debian's 5.6) in a temp folder, on a config given as text.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Kamailio {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Kamailio {
    /// Check `cfg` with `kamailio -c` (a failure names the problem), then run it.
    pub fn run(cfg: &str) -> Kamailio {
        super::require("kamailio");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kamailio.cfg"), cfg).unwrap();
        let check = Command::new("kamailio").arg("-c").arg("-f").arg(dir.path().join("kamailio.cfg")).output().expect("kamailio -c");
        assert!(check.status.success(), "kamailio.cfg does not check: {}", String::from_utf8_lossy(&check.stderr));
        let log = std::fs::File::create(dir.path().join("kamailio.log")).unwrap();
        let child = Command::new("kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(dir.path().join("kamailio.cfg"))
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .arg("-Y")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kamailio");
        std::thread::sleep(Duration::from_millis(1500));
        Kamailio { child, dir }
    }

    /// The PBX of the registration tests: Kamailio as registrar (usrloc in memory, Path kept
    /// as its registrar module does by default) and proxy on `127.0.0.1:port`
    /// (tests/fixtures/kamailio-registrar.cfg).
    pub fn registrar(port: u16) -> Kamailio {
        let cfg = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kamailio-registrar.cfg"))
            .unwrap()
            .replace("127.0.0.1:5060", &format!("127.0.0.1:{port}"));
        Self::run(&cfg)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }
}
