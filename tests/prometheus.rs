//! A real Prometheus server (Debian `prometheus`) scrapes Hearken while a corpus call is replayed
//! as RTP through the relay; a PromQL query then returns that agent's interruption count, which
//! must equal the corpus truth.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Prometheus(Child);
impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The response of Prometheus' instant-query API for `q` (Null if there was none).
fn api_query(port: u16, q: &str) -> Value {
    let enc: String = q.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    http_get(port, &format!("/api/v1/query?query={enc}")).and_then(|body| serde_json::from_str(&body).ok()).unwrap_or_default()
}

fn query(port: u16, q: &str) -> Option<f64> {
    api_query(port, q)["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrape_shows_the_agents_interruptions() {
    require("prometheus");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/dev/d02_agent_interrupts");
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(scenario.join("truth.json")).unwrap()).unwrap();
    let expected = truth["metrics"]["interruptions"]["by_agent"].as_f64().unwrap();
    let (cust, agent) = (read_leg(&scenario.join("customer.wav")), read_leg(&scenario.join("agent.wav")));

    // Hearken first (its status port is known once it runs), then Prometheus scraping it every 1 s.
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let (pbx, agent_port) = (free_port(), free_port());
    let h = Hearken::start(pbx, agent_port, "");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hearken\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n", h.http_port),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    wait_for(Duration::from_secs(30), "prometheus ready", || http_get(prom_port, "/-/ready").is_some());
    wait_for(Duration::from_secs(30), "first scrape", || query(prom_port, "up{job=\"hearken\"}") == Some(1.0));

    // The call runs with Hearken under Prometheus's eye: agent id "agent1" from the Request-URI.
    let (_h2, rec) = call_with_audio_on(&h, pbx, agent_port, &cust, &agent);
    assert_eq!(rec["summary"]["interruptions"]["by_agent"].as_f64(), Some(expected));
    let q = "sum(hearken_interruptions_total{agent=\"agent1\",party=\"agent\"})";
    let mut last = None;
    wait_for(Duration::from_secs(30), "the interruption count in Prometheus", || {
        last = query(prom_port, q);
        last == Some(expected)
    });
    // The relay figures are there too.
    assert!(query(prom_port, "hearken_relay_packets_forwarded_total").unwrap_or(0.0) > 2000.0);
    wait_for(Duration::from_secs(30), "the analysed call in Prometheus", || {
        query(prom_port, "sum(hearken_calls_analysed_total{agent=\"agent1\"})") == Some(1.0)
    });

    // The shipped Grafana wallboard: every panel query is valid PromQL for this Prometheus, and
    // every metric it names is one Hearken exports.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 10, "dashboard panels: {exprs:?}");
    let exposition = h.get("/metrics").unwrap();
    for e in &exprs {
        let q = e.replace("$__rate_interval", "1m").replace("$__range", "5m").replace("$agent", ".*").replace("$queue", ".*");
        let v = api_query(prom_port, &q);
        assert_eq!(v["status"], "success", "dashboard query {e:?}: {v}");
        // ASR figures exist only with a model configured (docs/metrics.md); this Hearken has none.
        for name in metric_names(e).into_iter().filter(|n| !n.starts_with("hearken_asr_")) {
            let base = ["_total", "_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(exposition.contains(&format!("# TYPE {base} ")), "dashboard query {e:?} names {name}, which Hearken does not export");
        }
    }
    // And the wallboard's headline panel shows this call: the agent's interruptions.
    assert!(exprs.iter().any(|e| e.contains("hearken_interruptions_total")), "{exprs:?}");
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            m.values().for_each(|x| collect_exprs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// `hearken_...` identifiers in a PromQL expression.
fn metric_names(e: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = e;
    while let Some(i) = rest.find("hearken_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}
