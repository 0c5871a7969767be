//! SIP over TLS through Hearken (issue 14): a real softphone (baresip, Debian's 1.0) registers
//! over TLS with Hearken as its outbound proxy to a real Kamailio registrar (UDP), and the
//! customer's call (sipp → Kamailio → Hearken) reaches it over the TLS connection it opened:
//! Hearken aliases its Contact with transport 3 (TLS) and, with no `sip.tls_ca`, could not
//! open a TLS connection of its own, so only that connection can carry the INVITE. A client
//! that does not speak TLS to the TLS port gets nothing.

mod common;
use common::baresip::{phone_with_account, Who};
use common::kamailio::Kamailio;
use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

#[test]
fn a_softphone_over_tls_registers_and_is_called_through_hearken() {
    require("baresip");
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("sip.pem"), dir.path().join("sip.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let kam_port = free_port();
    let kam = Kamailio::registrar(kam_port);
    let tls_port = free_port();
    // The phone's TLS connection comes from 127.0.0.1 like the PBX: the PBX is told apart by
    // its port, as on a host that runs both.
    let (sip_port, http_port, media) = (free_port(), free_port(), media_range(20));
    let h = Hearken::from_config(
        &format!(
            "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [pbx]\naddresses = [\"127.0.0.1:{kam_port}\"]\nroute = \"sip:127.0.0.1:{kam_port}\"\n\
             [media]\nport_min = {}\nport_max = {}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[log]\nlevel = \"hearken=debug\"\n",
            cert_path.display(),
            key_path.display(),
            media.0,
            media.1
        ),
        sip_port,
        http_port,
        media,
    );
    // Plain text to the TLS port: no SIP answer.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
    plain.write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("SIP/2.0"), "no SIP over a non-TLS connection: {}", String::from_utf8_lossy(&got));

    let wav = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d01_quick_turns/agent.wav");
    let account = format!(
        "<sip:agent7@pbx.example.com>;regint=300;outbound=\"sip:127.0.0.1:{tls_port};transport=tls\";answermode=auto;audio_codecs=PCMU"
    );
    let _phone = phone_with_account(
        &dir.path().join("agent"),
        Who { ip: AGENT_IP, port: free_port(), user: "agent7", wav: &wav, rtp: media_range(10) },
        &account,
        "",
        &["-s"],
    );
    let blog = || std::fs::read_to_string(dir.path().join("agent/baresip.log")).unwrap_or_default();
    let t0 = std::time::Instant::now();
    while !kam.log().contains("REGISTER of agent7") {
        assert!(t0.elapsed() < Duration::from_secs(15), "baresip did not register over TLS:\nbaresip:\n{}\nhearken:\n{}", blog(), h.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let klog = kam.log();
    let line = klog.lines().find(|l| l.contains("REGISTER of agent7")).unwrap();
    assert!(line.contains("~3>"), "the Contact's alias names TLS (3): {line}");

    let sdir = tempfile::tempdir().unwrap();
    let scen = scenario(sdir.path(), "uac_call.xml", &[("AGENT", "agent7".into()), ("PLAY", String::new()), ("HOLD_MS", "2000".into())]);
    sipp_run(sdir.path(), &scen, free_port(), &format!("127.0.0.1:{kam_port}"), &["-m", "1"], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the call over TLS: {e}\nkamailio:\n{}\nhearken:\n{}\nbaresip:\n{}", kam.log(), h.log(), blog()));
    let rec = latest_record(&h);
    assert_eq!((rec["agent_id"].as_str(), rec["reason"].as_str()), (Some("agent7"), Some("bye")), "{rec}");
    let b = blog();
    // baresip's trace: a line `TLS from -> to`, then the message.
    let over_tls = |first: &str| b.split("\nTLS ").skip(1).any(|m| m.lines().nth(1).is_some_and(|l| l.starts_with(first)));
    assert!(over_tls("INVITE sip:") && over_tls("BYE sip:"), "baresip got the INVITE and the BYE over TLS:\n{b}");
    eprintln!("TLS: baresip registered and was called over its TLS connection through Hearken");
}

/// A next hop over TLS that Hearken connects to itself (`pbx.route = "sips:…"`): the server's
/// certificate is checked against `sip.tls_ca`. The PBX here is the test's own TLS server
/// (rustls) answering the agent's REGISTER; with a CA that did not sign its certificate the
/// handshake fails and the agent gets 503.
#[test]
fn hearken_opens_tls_to_a_next_hop_it_can_verify() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let pbx_cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let write = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let (good_ca, bad_ca) = (write("pbx-ca.pem", pbx_cert.cert.pem()), write("other-ca.pem", other.cert.pem()));
    let server_cfg = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![pbx_cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pbx_cert.key_pair.serialize_der().into()),
            )
            .unwrap(),
    );
    let pbx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pbx_port = pbx.local_addr().unwrap().port();
    // The PBX: answers each REGISTER 200 over the TLS connection it arrived on.
    std::thread::spawn(move || {
        for tcp in pbx.incoming().flatten() {
            let cfg = server_cfg.clone();
            std::thread::spawn(move || {
                let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg).unwrap(), tcp);
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = tls.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let keep = |name: &str| {
                        req.lines().filter(|l| l.to_ascii_lowercase().starts_with(name)).map(|l| format!("{l}\r\n")).collect::<String>()
                    };
                    let resp = format!(
                        "SIP/2.0 200 OK\r\n{}{}{}{}{}Content-Length: 0\r\n\r\n",
                        keep("via:"),
                        keep("from:"),
                        keep("to:"),
                        keep("call-id:"),
                        keep("cseq:")
                    );
                    let _ = tls.write_all(resp.as_bytes());
                }
            });
        }
    });
    // Hearken's own TLS listener (sip.tls_ca needs one: what comes back comes over TLS).
    let own = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (own_cert, own_key) = (write("own.pem", own.cert.pem()), write("own.key", own.key_pair.serialize_pem()));
    for (ca, want) in [(&good_ca, "SIP/2.0 200"), (&bad_ca, "SIP/2.0 503")] {
        let tls_listen = format!("127.0.0.1:{}", free_port());
        let (sip_port, http_port, media) = (free_port(), free_port(), media_range(4));
        let h = Hearken::from_config(
            &format!(
                "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\ntls_ca = \"{ca}\"\ntls_listen = \"{tls_listen}\"\ntls_cert = \"{own_cert}\"\ntls_key = \"{own_key}\"\n[pbx]\naddresses = [\"127.0.0.1:{pbx_port}\"]\nroute = \"sips:127.0.0.1:{pbx_port}\"\n\
                 [media]\nport_min = {}\nport_max = {}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[log]\nlevel = \"hearken=debug\"\n",
                media.0, media.1
            ),
            sip_port,
            http_port,
            media,
        );
        let agent = std::net::UdpSocket::bind((AGENT_IP, 0)).unwrap();
        agent.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let me = agent.local_addr().unwrap();
        let reg = format!(
            "REGISTER sip:pbx.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKtlsreg;rport\r\nMax-Forwards: 70\r\nFrom: <sip:agent7@pbx.example.com>;tag=t\r\n\
             To: <sip:agent7@pbx.example.com>\r\nCall-ID: tlsreg@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:agent7@{me}>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
        );
        agent.send_to(reg.as_bytes(), ("127.0.0.1", sip_port)).unwrap();
        let mut buf = vec![0u8; 8192];
        let n = agent.recv(&mut buf).unwrap_or_else(|e| panic!("{e}: no answer\n{}", h.log()));
        let r = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(r.starts_with(want), "with {ca}: {r}\n{}", h.log());
    }
}
