//! Hearken as Kamailio's media relay over rtpengine's ng protocol (issue 13): a real Kamailio
//! 5.6 with its `rtpengine` module pointed at Hearken's ng port routes a sipp PBX's calls to a
//! sipp agent; `rtpengine_offer` / `rtpengine_answer` anchor the media on Hearken, a corpus call
//! is replayed through the relay and measured within the corpus tolerances, and the BYE's
//! `rtpengine_delete` frees the ports. The SIP path never touches Hearken: its proxy is off.

mod common;
use common::kamailio::Kamailio;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Kamailio on `port`, relaying to the agent at `agent`, its rtpengine module driving the ng
/// sockets given (`udp:127.0.0.1:P=weight ...`), from deploy/kamailio/kamailio.cfg.
fn kamailio(port: u16, agent: u16, rtpengine_sock: &str) -> Kamailio {
    let cfg = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kamailio/kamailio.cfg"))
        .expect("deploy/kamailio/kamailio.cfg")
        .replace("listen=udp:127.0.0.1:5060", &format!("listen=udp:127.0.0.1:{port}"))
        .replace("listen=tcp:127.0.0.1:5060", &format!("listen=tcp:127.0.0.1:{port}"))
        .replace("udp:127.0.0.1:22222=1", rtpengine_sock)
        .replace("sip:127.0.0.1:5090", &format!("sip:{AGENT_IP}:{agent}"))
        // A dead relay is noticed within half a second (the default waits seconds).
        .replace(
            "modparam(\"rtpengine\", \"rtpengine_sock\"",
            "modparam(\"rtpengine\", \"rtpengine_tout_ms\", 500)\nmodparam(\"rtpengine\", \"rtpengine_retr\", 1)\nmodparam(\"rtpengine\", \"rtpengine_sock\"",
        );
    Kamailio::run(&cfg)
}

#[test]
fn kamailio_drives_hearken_over_ng_and_the_call_is_measured() {
    require("kamailio");
    let (pbx, agent, kam_port, ng_port) = (free_port(), free_port(), free_port(), free_port());
    // SIP goes through Kamailio only: Hearken is its media relay.
    let h =
        Hearken::start_with(pbx, agent, media_range(20), "", &format!("[ng]\nlisten = \"127.0.0.1:{ng_port}\"\ndelete_delay_s = 0\n"), "");
    let kam = kamailio(kam_port, agent, &format!("udp:127.0.0.1:{ng_port}=1"));
    let name = "d02_agent_interrupts";
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev").join(name);
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let (cust, agent_pcm) = (read_leg(&dir.join("customer.wav")), read_leg(&dir.join("agent.wav")));
    let (cap, rec) = call_through(&h, kam_port, pbx, agent, &cust, &agent_pcm, TestCodec::Pcmu);
    let logs = || format!("kamailio:\n{}\nhearken:\n{}", kam.log(), h.log());
    assert_eq!(cap.received_by_agent.len(), cap.sent_by_pbx.len(), "every packet through the relay\n{}", logs());
    let s = &rec["summary"];
    assert_eq!(rec["agent_id"], "agent1", "the agent id from the Kamailio script's agent-id flag");
    let t = &truth["metrics"];
    let (ratio, want) = (s["talk_ratio_agent"].as_f64().unwrap(), t["talk_ratio_agent"].as_f64().unwrap());
    assert!((ratio - want).abs() <= 0.03, "talk ratio {ratio} vs truth {want}");
    for k in ["by_agent", "by_customer"] {
        assert_eq!(s["interruptions"][k], t["interruptions"][k], "interruptions {k}");
    }
    // BYE -> rtpengine_delete: the call ended and its ports are back.
    h.wait_idle();
    assert_eq!(rec["reason"], "bye");
    let m = h.get("/metrics").unwrap();
    assert!(metric(&m, "hearken_ng_commands_total") >= 4, "ping, offer, answer, delete:\n{m}");
    assert_eq!(metric(&m, "hearken_ng_errors_total"), 0, "{m}\n{}", logs());
    assert_eq!(metric(&m, "hearken_sip_requests_total"), 0, "no SIP through Hearken");
    assert!(h.log().contains("ng call deleted"), "{}", h.log());
    eprintln!("ng via Kamailio: talk ratio {ratio} (truth {want}), interruptions {}", s["interruptions"]);
}

/// Two Hearken nodes in one Kamailio rtpengine set (weights 1 and 1): 100 calls spread over
/// both; then one node is killed, and the next calls all go to the other and succeed.
#[test]
fn two_nodes_in_one_set_share_calls_and_survive_a_dead_node() {
    require("kamailio");
    let (pbx, agent, kam_port) = (free_port(), free_port(), free_port());
    let (ng_a, ng_b) = (free_port(), free_port());
    let node = |ng: u16| {
        Hearken::start_with(pbx, agent, media_range(220), "", &format!("[ng]\nlisten = \"127.0.0.1:{ng}\"\ndelete_delay_s = 0\n"), "")
    };
    let a = node(ng_a);
    let mut b = Some(node(ng_b));
    let kam = kamailio(kam_port, agent, &format!("udp:127.0.0.1:{ng_a}=1 udp:127.0.0.1:{ng_b}=1"));
    let run_calls = |n: usize, tag: &str| {
        let dir = tempfile::tempdir().unwrap();
        let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42070".into())]);
        let uac = scenario(
            dir.path(),
            "uac_call.xml",
            &[("AGENT", format!("{tag}[call_number]")), ("PLAY", String::new()), ("HOLD_MS", "1000".into())],
        );
        let n_s = n.to_string();
        let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", &n_s]);
        let r = sipp_run(
            dir.path(),
            &uac,
            pbx,
            &format!("127.0.0.1:{kam_port}"),
            &["-m", &n_s, "-r", "50", "-l", "100"],
            Duration::from_secs(90),
        );
        let done = uas.wait(Duration::from_secs(30));
        (r, done)
    };
    let started = |h: &Hearken| metric(&h.get("/metrics").unwrap_or_default(), "hearken_ng_calls_started_total");
    let (r, done) = run_calls(100, "agent");
    r.unwrap_or_else(|e| panic!("{e}\n{}", kam.log()));
    done.unwrap();
    let (na, nb) = (started(&a), started(b.as_ref().unwrap()));
    assert_eq!(na + nb, 100, "every call anchored on one of the nodes");
    assert!(na >= 20 && nb >= 20, "the set spreads the calls: {na} / {nb}");
    a.wait_idle();
    b.as_ref().unwrap().wait_idle();
    // Node B dies (SIGKILL): Kamailio notices on its next command and uses node A.
    drop(b.take());
    let (r, done) = run_calls(20, "later");
    r.unwrap_or_else(|e| panic!("{e}\n{}", kam.log()));
    done.unwrap();
    assert_eq!(started(&a), na + 20, "after the failure every new call is anchored on the surviving node");
    a.wait_idle();
    eprintln!("two nodes: {na} / {nb} of 100; after killing B: 20 of 20 on A");
}

/// A call whose media ends by itself (nobody sends RTP) is reported to Kamailio the way
/// rtpengine reports it with `b2b-url` (XML-RPC `dlg.terminate_dlg` to Kamailio's xmlrpc and
/// dialog modules): Kamailio sends BYE to both parties, and the record says why.
#[test]
fn a_media_timeout_is_reported_to_kamailio_which_ends_the_dialog() {
    require("kamailio");
    let (pbx, agent, kam_port, ng_port) = (free_port(), free_port(), free_port(), free_port());
    let h = Hearken::start_with(
        pbx,
        agent,
        media_range(20),
        "",
        &format!("[ng]\nlisten = \"127.0.0.1:{ng_port}\"\ndelete_delay_s = 0\nteardown_url = \"http://127.0.0.1:{kam_port}/RPC2\"\n"),
        "rtp_timeout_s = 2",
    );
    let kam = kamailio(kam_port, agent, &format!("udp:127.0.0.1:{ng_port}=1"));
    let dir = tempfile::tempdir().unwrap();
    let uas = scenario(dir.path(), "uas_call.xml", &[("MEDIA_PORT", "42080".into())]);
    let uac = scenario(
        dir.path(),
        "uac_wait_bye.xml",
        &[("AGENT", "agent9".into()), ("PLAY", String::new()), ("WAIT_MS", "15000".into()), ("BYE_CHECK", "BYE sip:".into())],
    );
    let uas = Sipp::spawn(dir.path(), &uas, agent, &["-m", "1"]);
    sipp_run(dir.path(), &uac, pbx, &format!("127.0.0.1:{kam_port}"), &["-m", "1"], Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", kam.log(), h.log()));
    uas.wait(Duration::from_secs(10)).unwrap_or_else(|e| panic!("the agent got no BYE: {e}\n{}", kam.log()));
    wait_for(Duration::from_secs(5), "the teardown callback answered", || {
        metric(&h.get("/metrics").unwrap(), "hearken_ng_teardowns_total") == 1
    });
    assert_eq!(metric(&h.get("/metrics").unwrap(), "hearken_ng_teardown_errors_total"), 0);
    h.wait_idle();
    let list: Value = serde_json::from_str(&h.get("/records").unwrap()).unwrap();
    assert_eq!(list["records"][0]["reason"], "rtp_timeout", "{list}");
}
