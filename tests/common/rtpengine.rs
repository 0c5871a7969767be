//! rtpengine (userspace, Debian's `rtpengine-daemon`), the reference relay, driven over its ng
//! protocol exactly as Kamailio's module does; and an ng client for Hearken's own ng port.
#![allow(dead_code)]

use super::raw_sip::{audio_port, sdp};
use super::*;
use hearken::ng::{self, Ben};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Rtpengine {
    child: Child,
    ng: UdpSocket,
    ng_port: u16,
    next: u32,
    _dir: tempfile::TempDir,
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rtpengine {
    /// rtpengine (userspace) on its own ng port and media range, media `timeout` in seconds.
    pub fn start(timeout_s: u64) -> Rtpengine {
        let bin = which("rtpengine").expect("rtpengine is installed by scripts/setup.sh (rtpengine-daemon)");
        let dir = tempfile::tempdir().unwrap();
        let ng_port = free_port();
        let (lo, hi) = media_range(20);
        let cfg = format!(
            "[rtpengine]\ntable = -1\ninterface = 127.0.0.1\nlisten-ng = 127.0.0.1:{ng_port}\nport-min = {lo}\nport-max = {hi}\n\
             timeout = {timeout_s}\nforeground = true\nlog-stderr = true\nlog-level = 6\n"
        );
        std::fs::write(dir.path().join("rtpengine.conf"), cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("rtpengine.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config-file={}", dir.path().join("rtpengine.conf").display()))
            .arg(format!("--pidfile={}", dir.path().join("rtpengine.pid").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rtpengine");
        let ng = UdpSocket::bind("127.0.0.1:0").unwrap();
        ng.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut r = Rtpengine { child, ng, ng_port, next: 1, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while r.call(&Ben::dict(&[("command", Ben::s("ping"))])).is_none() {
            assert!(Instant::now() < deadline, "rtpengine did not answer ping");
        }
        r
    }

    /// One ng command; the reply (None: no answer within 500 ms).
    pub fn call(&mut self, msg: &Ben) -> Option<Ben> {
        let cookie = format!("d{}", self.next);
        self.next += 1;
        self.ng.send_to(&ng::datagram(&cookie, msg), ("127.0.0.1", self.ng_port)).ok()?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = self.ng.recv_from(&mut buf).ok()?;
        let (c, v) = ng::parse_datagram(&buf[..n]).ok()?;
        (c == cookie.as_bytes()).then_some(v)
    }

    /// offer (the PBX's SDP) and answer (the agent's), as Kamailio's rtpengine_offer/answer do.
    /// Returns (port the PBX sends to, port the agent sends to).
    pub fn setup(&mut self, call_id: &str, pbx_sdp: (&str, u16), agent_sdp: (&str, u16)) -> (u16, u16) {
        let replace = Ben::List(vec![Ben::s("origin"), Ben::s("session-connection")]);
        let offer = self
            .call(&Ben::dict(&[
                ("command", Ben::s("offer")),
                ("call-id", Ben::s(call_id)),
                ("from-tag", Ben::s("pbx")),
                ("sdp", Ben::s(&sdp(pbx_sdp.0, pbx_sdp.1))),
                ("replace", replace.clone()),
                ("ICE", Ben::s("remove")),
            ]))
            .expect("offer answered");
        assert_eq!(offer.str("result").as_deref(), Some("ok"), "{offer:?}");
        let answer = self
            .call(&Ben::dict(&[
                ("command", Ben::s("answer")),
                ("call-id", Ben::s(call_id)),
                ("from-tag", Ben::s("pbx")),
                ("to-tag", Ben::s("agent")),
                ("sdp", Ben::s(&sdp(agent_sdp.0, agent_sdp.1))),
                ("replace", replace),
                ("ICE", Ben::s("remove")),
            ]))
            .expect("answer answered");
        assert_eq!(answer.str("result").as_deref(), Some("ok"), "{answer:?}");
        (audio_port(&answer.str("sdp").unwrap()), audio_port(&offer.str("sdp").unwrap()))
    }

    /// A second answer for the same offer from another downstream dialog (`to_tag`), as
    /// Kamailio's rtpengine_answer does for every 2xx of a forked INVITE. Returns the port the
    /// PBX is told for that dialog.
    pub fn answer(&mut self, call_id: &str, to_tag: &str, agent_sdp: (&str, u16)) -> u16 {
        let a = self
            .call(&Ben::dict(&[
                ("command", Ben::s("answer")),
                ("call-id", Ben::s(call_id)),
                ("from-tag", Ben::s("pbx")),
                ("to-tag", Ben::s(to_tag)),
                ("sdp", Ben::s(&sdp(agent_sdp.0, agent_sdp.1))),
                ("replace", Ben::List(vec![Ben::s("origin"), Ben::s("session-connection")])),
                ("ICE", Ben::s("remove")),
            ]))
            .expect("answer answered");
        assert_eq!(a.str("result").as_deref(), Some("ok"), "{a:?}");
        audio_port(&a.str("sdp").unwrap())
    }

    /// The call still exists (rtpengine deletes a call whose media timed out).
    pub fn alive(&mut self, call_id: &str) -> bool {
        let r = self.call(&Ben::dict(&[("command", Ben::s("query")), ("call-id", Ben::s(call_id))])).expect("query answered");
        r.str("result").as_deref() == Some("ok")
    }
}

pub fn which(tool: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An ng client (the same datagrams Kamailio sends) for any ng server on loopback.
pub struct NgClient {
    sock: UdpSocket,
    port: u16,
    next: u32,
}

impl NgClient {
    pub fn new(port: u16) -> NgClient {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        NgClient { sock, port, next: 1 }
    }
    pub fn call(&mut self, msg: &Ben) -> Ben {
        let cookie = format!("k{}", self.next);
        self.next += 1;
        self.sock.send_to(&ng::datagram(&cookie, msg), ("127.0.0.1", self.port)).unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = self.sock.recv_from(&mut buf).expect("ng reply");
            let (c, v) = ng::parse_datagram(&buf[..n]).expect("ng reply decodes");
            if c == cookie.as_bytes() {
                return v;
            }
        }
    }
}
