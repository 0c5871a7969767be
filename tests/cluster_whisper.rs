//! Cluster whisper (issue 13): two Hearken nodes share one broker — Redis pub/sub (the
//! recommended one) or NATS, Debian's `redis-server` / `nats-server` started by the test. An
//! agent connected to node A receives the messages of its call anchored on node B — call start,
//! live snapshots, listening events and the nudge — each once, exactly as a subscriber on node B
//! sees them.

mod common;
use common::*;
use serde_json::Value;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use tungstenite::{stream::MaybeTlsStream, WebSocket};

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect(port: u16, token: &str) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/whisper?token={token}")).expect("whisper connects");
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    }
    ws
}

fn collect(mut ws: WebSocket<MaybeTlsStream<TcpStream>>, stop: mpsc::Receiver<()>) -> std::thread::JoinHandle<Vec<Value>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        while stop.try_recv().is_err() {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => got.push(serde_json::from_str(&t).unwrap()),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        got
    })
}

#[test]
fn an_agent_on_node_a_hears_its_call_on_node_b_through_redis() {
    require("redis-server");
    let port = free_port();
    let server = Server(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    across_two_nodes(&format!("redis://127.0.0.1:{port}"), port, server);
}

#[test]
fn an_agent_on_node_a_hears_its_call_on_node_b_through_nats() {
    require("nats-server");
    let port = free_port();
    let server = Server(
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server"),
    );
    across_two_nodes(&format!("nats://127.0.0.1:{port}"), port, server);
}

fn across_two_nodes(broker: &str, broker_port: u16, _server: Server) {
    wait_for(Duration::from_secs(10), "broker listening", || TcpStream::connect(("127.0.0.1", broker_port)).is_ok());
    let cfg = |node: &str| {
        format!(
            "[whisper]\nsupervisors = [\"sup-token-123\"]\n[whisper.agents]\nagent1 = \"agent1-token\"\n\
             [cluster]\nbroker = \"{broker}\"\nnode = \"{node}\"\n"
        )
    };
    let (pbx_a, agent_a, pbx_b, agent_b) = (free_port(), free_port(), free_port(), free_port());
    let a = Hearken::start(pbx_a, agent_a, &cfg("a"));
    let b = Hearken::start(pbx_b, agent_b, &cfg("b"));
    for h in [&a, &b] {
        wait_for(Duration::from_secs(10), "broker connected", || {
            metric(&h.get("/metrics").unwrap_or_default(), "hearken_broker_connected") == 1
        });
    }
    let (stop_a, on_a) = {
        let (tx, rx) = mpsc::channel();
        (tx, collect(connect(a.http_port, "agent1-token"), rx))
    };
    let (stop_b, on_b) = {
        let (tx, rx) = mpsc::channel();
        (tx, collect(connect(b.http_port, "sup-token-123"), rx))
    };
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d02_agent_interrupts");
    let (cust, agent_pcm) = (read_leg(&scenario.join("customer.wav")), read_leg(&scenario.join("agent.wav")));
    let (_, rec) = call_with_audio_on(&b, pbx_b, agent_b, &cust, &agent_pcm);
    std::thread::sleep(Duration::from_millis(700));
    let _ = (stop_a.send(()), stop_b.send(()));
    let (on_a, on_b) = (on_a.join().unwrap(), on_b.join().unwrap());
    let of_call = |v: &Vec<Value>| v.iter().filter(|m| m["type"] != "hello" && m["call"] == rec["id"]).cloned().collect::<Vec<_>>();
    let (ga, gb) = (of_call(&on_a), of_call(&on_b));
    let types = |v: &Vec<Value>, t: &str| v.iter().filter(|m| m["type"] == t).count();
    assert_eq!(types(&ga, "call_start"), 1, "{ga:?}");
    assert_eq!(types(&ga, "call_end"), 1);
    assert!(types(&ga, "snapshot") >= 3, "{ga:?}");
    assert!(ga.iter().any(|m| m["type"] == "nudge" && m["kind"] == "interruption"), "the nudge crossed the cluster: {ga:?}");
    assert_eq!(ga, gb, "node A delivers exactly what node B produced, once each, in order");
    let (ma, mb) = (a.get("/metrics").unwrap(), b.get("/metrics").unwrap());
    assert!(metric(&mb, "hearken_broker_published_total") >= gb.len() as u64, "{mb}");
    assert!(metric(&ma, "hearken_broker_received_total") >= ga.len() as u64, "{ma}");
    assert_eq!(metric(&mb, "hearken_broker_dropped_total"), 0);
    eprintln!("cluster ({broker}): {} messages of the call on B reached the agent on A", ga.len());
}
