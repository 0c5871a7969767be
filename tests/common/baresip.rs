//! Real SIP phones for tests: Debian's baresip (`baresip-core`), configured in a temp folder,
//! playing a WAV file, auto-answering, with the `srtp` and `ice` modules loaded.
#![allow(dead_code)]

use super::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct Phone {
    pub child: std::process::Child,
}
impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who a phone is: SIP address, user, what it plays, its RTP port range.
pub struct Who<'a> {
    pub ip: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub wav: &'a Path,
    pub rtp: (u16, u16),
}

/// A baresip phone in `dir`: listens on `ip:port`, sends `wav`, auto-answers; `account_params`
/// are appended to its account line (`;mediaenc=srtp-mand`, `;medianat=ice`, or "").
pub fn phone(dir: &Path, who: Who, account_params: &str, extra_args: &[&str]) -> Phone {
    let account = format!("<sip:{}@{}:{}>;regint=0;answermode=auto;audio_codecs=PCMU{account_params}", who.user, who.ip, who.port);
    phone_with_account(dir, who, &account, "", extra_args)
}

/// A baresip phone with its whole account line given (e.g. one that registers through an
/// outbound proxy) and `extra_config` lines (e.g. `sip_trace yes`).
pub fn phone_with_account(dir: &Path, who: Who, account: &str, extra_config: &str, extra_args: &[&str]) -> Phone {
    let Who { ip, port, user: _, wav, rtp } = who;
    std::fs::create_dir_all(dir).unwrap();
    let config = format!(
        "poll_method epoll\nsip_listen {ip}:{port}\naudio_player aufile,{}\naudio_source aufile,{}\naudio_alert aufile,/dev/null\n\
         audio_srate 8000\naudio_channels 1\nrtp_ports {}-{}\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
         module srtp.so\nmodule ice.so\nmodule_app account.so\nmodule_app menu.so\n{extra_config}\n",
        dir.join("heard.wav").display(),
        wav.display(),
        rtp.0,
        rtp.1
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(dir.join("accounts"), format!("{account}\n")).unwrap();
    let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start baresip");
    Phone { child }
}

/// What one phone-to-phone call through Hearken left behind.
pub struct CallResult {
    pub record: Value,
    /// Both phones' logs and Hearken's.
    pub logs: String,
    /// Hearken's /metrics after the call.
    pub metrics: String,
}

/// One call of a corpus scenario between two baresip phones through a fresh Hearken (`media_extra`
/// goes into its `[media]` section): the caller (PBX side) plays the customer WAV and hangs up
/// when it ends, the agent auto-answers and plays the agent WAV.
pub fn corpus_call(scenario: &str, account_params: &str, media_extra: &str) -> CallResult {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(scenario);
    let secs = (hound_len(&corpus.join("customer.wav")) + 1.5).ceil() as u64;
    let (pbx, agent) = (free_port(), free_port());
    let h = Hearken::start_with(pbx, agent, media_range(60), "", "", media_extra);
    let dir = tempfile::tempdir().unwrap();
    let (a_rtp, c_rtp) = (media_range(10), media_range(10));
    let (a_wav, c_wav) = (corpus.join("agent.wav"), corpus.join("customer.wav"));
    let _agent =
        phone(&dir.path().join("agent"), Who { ip: AGENT_IP, port: agent, user: "agent7", wav: &a_wav, rtp: a_rtp }, account_params, &[]);
    std::thread::sleep(Duration::from_millis(500));
    let dial = format!("/dial sip:agent7@127.0.0.1:{}", h.sip_port);
    let secs_s = secs.to_string();
    let mut caller = phone(
        &dir.path().join("caller"),
        Who { ip: PBX_IP, port: pbx, user: "cust", wav: &c_wav, rtp: c_rtp },
        account_params,
        &["-e", &dial, "-t", &secs_s],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(secs + 20);
    while caller.child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the caller did not finish");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rec = latest_record(&h);
    let logs = format!(
        "caller:\n{}\nagent:\n{}\nhearken:\n{}",
        std::fs::read_to_string(dir.path().join("caller/baresip.log")).unwrap_or_default(),
        std::fs::read_to_string(dir.path().join("agent/baresip.log")).unwrap_or_default(),
        h.log()
    );
    let metrics = h.get("/metrics").unwrap();
    CallResult { record: rec, logs, metrics }
}

fn hound_len(p: &Path) -> f64 {
    read_leg(p).len() as f64 / 8000.0
}
