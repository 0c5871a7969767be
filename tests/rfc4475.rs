//! RFC 4475 (SIP torture test messages) and RFC 5118 (IPv6) against the proxy core: every
//! message of the RFCs (exact bytes from their archives, tests/fixtures/rfc4475 and rfc5118),
//! arriving from the PBX over UDP, and the outcome the README tables give for a proxy —
//! forwarded, answered with a given status and not forwarded, or dropped. The proxy core runs
//! through `hearken::fuzzing::run_proxy`, which also checks its invariants (nothing panics, what
//! it sends parses, transactions expire).

use hearken::fuzzing::run_proxy;
use hearken::sip::message::Message;
use hearken::sip::proxy::{Action, Dest};
use std::path::Path;

/// (file, outcome) rows of a fixtures README table.
fn table(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("README.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains(".sip`"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let file = cols.get(1)?.trim_matches('`').to_string();
            // The outcome column: the first backquoted word of the fourth column.
            let outcome = cols.get(4)?.split('`').nth(1)?.to_string();
            Some((file, outcome))
        })
        .collect()
}

/// What the proxy did with one message: forwarded it, the statuses it answered, or nothing.
fn outcome_of(bytes: &[u8]) -> (bool, Vec<u16>) {
    let mut scenario = b"P".to_vec();
    scenario.extend_from_slice(bytes);
    let run = run_proxy(&scenario);
    let mut forwarded = false;
    let mut statuses = Vec::new();
    for Action::Send { to, data } in &run.sent {
        // The status from the status line: a response to a message without its mandatory
        // headers lacks them too, and need not parse as a whole.
        let status = data.strip_prefix(b"SIP/2.0 ").and_then(|r| std::str::from_utf8(r.get(..3)?).ok()?.parse::<u16>().ok());
        match (to, status) {
            (Dest::Target(_), None) if Message::parse(data).is_ok_and(|m| m.is_request()) => forwarded = true,
            (_, Some(code)) if code != 100 => statuses.push(code),
            _ => {}
        }
    }
    (forwarded, statuses)
}

fn meets(outcome: &str, forwarded: bool, statuses: &[u16]) -> bool {
    let answered = |codes: &[u16]| !forwarded && statuses.first().is_some_and(|c| codes.contains(c));
    match outcome {
        "forward" => forwarded && statuses.iter().all(|c| *c < 300),
        "forward-or-400" => (forwarded && statuses.iter().all(|c| *c < 300)) || answered(&[400]),
        "501-or-400" => answered(&[501, 400]),
        "416-or-404" => answered(&[416, 404]),
        "drop" | "relay-or-drop" => statuses.is_empty(),
        code => code.parse::<u16>().is_ok_and(|c| answered(&[c])),
    }
}

fn check(dir: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir);
    let rows = table(&dir);
    assert!(rows.len() >= 12, "the README table was read: {rows:?}");
    let mut failures = Vec::new();
    for (file, outcome) in &rows {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (forwarded, statuses) = outcome_of(&bytes);
        let ok = meets(outcome, forwarded, &statuses);
        eprintln!(
            "{:<40} want {:<16} got forwarded={forwarded} answered={statuses:?} {}",
            file,
            outcome,
            if ok { "ok" } else { "MISMATCH" }
        );
        if !ok {
            failures.push(format!("{file}: want {outcome}, got forwarded={forwarded} answered={statuses:?}"));
        }
    }
    failures
}

#[test]
fn rfc4475_torture_messages() {
    let failures = check("rfc4475");
    assert!(failures.is_empty(), "{} of the RFC 4475 messages:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn rfc5118_ipv6_messages() {
    let failures = check("rfc5118");
    assert!(failures.is_empty(), "{} of the RFC 5118 messages:\n{}", failures.len(), failures.join("\n"));
}
