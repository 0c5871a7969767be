//! Recording metadata (RFC 7865, `application/rs-metadata+xml`): who the participants are and
//! which stream each one sends, kept up to date through metadata updates (`complete` documents
//! replace what was known, `partial` ones change only what they name).
//!
//! Both forms senders use are read, matched on local names whatever the namespace: the RFC's
//! (`participant_id` / `stream_id` attributes, `participantstreamassoc` with `send`) and the
//! earlier draft Oracle/Acme SBCs send (`id` attributes, `<send>` inside `<participant>`,
//! `disassociate-time` inside it when the participant leaves; `apkt:callingParty`).
//!
//! [`Roles`] decides which participant is the customer and which the agent.

use std::collections::BTreeMap;

/// One participant of the recorded call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Participant {
    /// Address of record (`sip:...`), may be empty.
    pub aor: String,
    pub name: String,
    /// Stream ids this participant sends.
    pub sends: Vec<String>,
    /// It has left the call (`disassociate-time`).
    pub left: bool,
    /// Oracle's `apkt:callingParty`, when given.
    pub calling: Option<bool>,
    /// When it was first seen (later participants win a stream both claim).
    pub seen: u64,
}

/// What the metadata says now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub participants: BTreeMap<String, Participant>,
    /// stream id → label (the SDP `a=label` of its m-line)
    pub streams: BTreeMap<String, String>,
    /// An id of the recorded call that every recording client of it shares (RFC 7989
    /// Session-ID of `sipSessionID`, or an Oracle UCID), to join redundant recordings.
    pub call_key: Option<String>,
    counter: u64,
}

fn local<'a>(n: &roxmltree::Node<'a, 'a>) -> &'a str {
    n.tag_name().name()
}

fn attr<'a>(n: &roxmltree::Node<'a, 'a>, names: &[&str]) -> Option<&'a str> {
    n.attributes().find(|a| names.contains(&a.name())).map(|a| a.value())
}

fn child_text(n: &roxmltree::Node, name: &str) -> Option<String> {
    n.children().find(|c| c.is_element() && local(c) == name).and_then(|c| c.text()).map(|t| t.trim().to_string())
}

fn has_child(n: &roxmltree::Node, name: &str) -> bool {
    n.children().any(|c| c.is_element() && local(&c) == name)
}

/// The recorded call's key from a `sipSessionID` (`local;remote=other`): both UUIDs, sorted,
/// so the two directions of one call give the same key; all-zero halves are ignored.
fn session_key(v: &str) -> Option<String> {
    let mut ids: Vec<String> = v
        .split(';')
        .map(|p| p.trim().trim_start_matches("remote=").to_ascii_lowercase())
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') && p.bytes().any(|b| b != b'0' && b != b'-'))
        .collect();
    ids.sort();
    (!ids.is_empty()).then(|| format!("sid:{}", ids.join("/")))
}

impl Metadata {
    /// Apply one metadata document. Err: it is not XML or not a `recording` (what was known
    /// stays).
    pub fn apply(&mut self, xml: &str) -> Result<(), String> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| format!("metadata is not XML: {e}"))?;
        let root = doc.root_element();
        if local(&root) != "recording" {
            return Err("metadata root is not <recording>".into());
        }
        let partial = root
            .children()
            .find(|c| c.is_element() && local(c).eq_ignore_ascii_case("datamode"))
            .and_then(|c| c.text())
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("partial"));
        if !partial {
            self.participants.clear();
            self.streams.clear();
        }
        for n in root.children().filter(|c| c.is_element()) {
            match local(&n) {
                "session" => {
                    if let Some(k) = child_text(&n, "sipSessionID").and_then(|v| session_key(&v)) {
                        self.call_key = Some(k);
                    }
                    // Oracle: the UCID in the session's extension data.
                    if self.call_key.is_none() {
                        let ucid = n.descendants().find(|d| d.is_element() && local(d) == "ucid").and_then(|d| d.text());
                        if let Some(u) = ucid {
                            self.call_key = Some(format!("ucid:{}", u.split(';').next().unwrap_or(u).trim().to_ascii_lowercase()));
                        }
                    }
                }
                "participant" => {
                    let Some(id) = attr(&n, &["participant_id", "id"]) else { continue };
                    self.counter += 1;
                    let seen = self.counter;
                    let p = self.participants.entry(id.to_string()).or_insert_with(|| Participant { seen, ..Default::default() });
                    if let Some(name_id) = n.children().find(|c| c.is_element() && local(c) == "nameID") {
                        if let Some(aor) = attr(&name_id, &["aor"]) {
                            p.aor = aor.trim().to_string();
                        }
                        if let Some(name) = child_text(&name_id, "name") {
                            p.name = name;
                        }
                    }
                    // Draft form: <aor> directly, <send> inside the participant.
                    if let Some(aor) = child_text(&n, "aor") {
                        p.aor = aor;
                    }
                    let sends: Vec<String> = n
                        .children()
                        .filter(|c| c.is_element() && local(c) == "send")
                        .filter_map(|c| c.text().map(|t| t.trim().to_string()))
                        .collect();
                    if !sends.is_empty() {
                        p.sends = sends;
                    }
                    if has_child(&n, "disassociate-time") {
                        p.left = true;
                    }
                    let calling = n.descendants().find(|d| d.is_element() && local(d) == "callingParty").and_then(|d| d.text());
                    if let Some(c) = calling {
                        p.calling = Some(c.trim().eq_ignore_ascii_case("true"));
                    }
                }
                "stream" => {
                    let (Some(id), Some(label)) = (attr(&n, &["stream_id", "id"]), child_text(&n, "label")) else { continue };
                    self.streams.insert(id.to_string(), label);
                }
                "participantstreamassoc" => {
                    let Some(id) = attr(&n, &["participant_id", "id"]) else { continue };
                    let sends = n
                        .children()
                        .filter(|c| c.is_element() && local(c) == "send")
                        .filter_map(|c| c.text().map(|t| t.trim().to_string()))
                        .collect();
                    self.counter += 1;
                    let seen = self.counter;
                    let p = self.participants.entry(id.to_string()).or_insert_with(|| Participant { seen, ..Default::default() });
                    p.sends = sends;
                }
                "participantsessionassoc" => {
                    let Some(id) = attr(&n, &["participant_id"]) else { continue };
                    if let Some(p) = self.participants.get_mut(id) {
                        p.left = has_child(&n, "disassociate-time");
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The participant sending the stream of m-line label `label` now (the latest to claim it,
    /// among those still in the call).
    pub fn sender_of(&self, label: &str) -> Option<&Participant> {
        let ids: Vec<&String> = self.streams.iter().filter(|(_, l)| l.as_str() == label).map(|(id, _)| id).collect();
        self.participants.values().filter(|p| !p.left && p.sends.iter().any(|s| ids.contains(&s))).max_by_key(|p| p.seen)
    }
}

/// `*` and `?` glob, case-insensitive.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.to_lowercase().chars().collect(), text.to_lowercase().chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Which participant is the agent: AoR patterns first (`siprec.agent_aor`, then
/// `siprec.customer_aor`), then a sender's own flag (Oracle's `callingParty`: the caller is the
/// customer), then the m-line order (`siprec.customer_stream`: the first m-line is the
/// caller's by default).
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub agent_aor: Vec<String>,
    pub customer_aor: Vec<String>,
    /// 0: the first m-line is the customer's; 1: the second.
    pub customer_stream: usize,
}

impl Roles {
    /// For two m-lines sent by `senders` (None: unknown sender), the index of the customer's.
    pub fn customer_index(&self, senders: [Option<&Participant>; 2]) -> usize {
        let is = |p: Option<&Participant>, pats: &[String]| p.is_some_and(|p| !p.aor.is_empty() && pats.iter().any(|g| glob(g, &p.aor)));
        for i in 0..2 {
            if is(senders[i], &self.agent_aor) && !is(senders[1 - i], &self.agent_aor) {
                return 1 - i;
            }
        }
        for i in 0..2 {
            if is(senders[i], &self.customer_aor) && !is(senders[1 - i], &self.customer_aor) {
                return i;
            }
        }
        for i in 0..2 {
            if senders[i].and_then(|p| p.calling) == Some(true) && senders[1 - i].and_then(|p| p.calling) != Some(true) {
                return i;
            }
        }
        self.customer_stream.min(1)
    }
}

/// An agent id from an AoR: its user part (`sip:agent7@host` → `agent7`).
pub fn aor_user(aor: &str) -> Option<String> {
    let rest = aor.split_once(':').map_or(aor, |(_, r)| r);
    let user = rest.split('@').next()?.split(';').next()?.trim();
    (!user.is_empty() && rest.contains('@')).then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let body = std::fs::read_to_string(format!("{}/tests/fixtures/siprec/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let b = ["hearken-siprec-boundary", "uniqueBoundary", "unique-boundary-1"].iter().find(|b| body.contains(*b)).unwrap();
        super::super::body::parse(Some(&format!("multipart/mixed;boundary={b}")), body.as_bytes()).unwrap().metadata.unwrap()
    }

    #[test]
    fn vendors_map_streams_to_participants() {
        for (name, labels) in
            [("rfc7866.body", ["1", "2"]), ("cisco_cube.body", ["1", "2"]), ("oracle_acme.body", ["33554441", "33554442"])]
        {
            let mut m = Metadata::default();
            m.apply(&fixture(name)).unwrap();
            let c = m.sender_of(labels[0]).unwrap_or_else(|| panic!("{name}: {m:?}"));
            let a = m.sender_of(labels[1]).unwrap();
            assert_eq!(
                (c.aor.as_str(), a.aor.as_str()),
                ("sip:+15551230001@carrier.example.com", "sip:agent7@agents.example.com"),
                "{name}"
            );
            assert!(m.call_key.is_some(), "{name}");
        }
        let mut o = Metadata::default();
        o.apply(&fixture("oracle_acme.body")).unwrap();
        assert_eq!(o.sender_of("33554441").unwrap().calling, Some(true));
        assert_eq!(o.call_key.as_deref(), Some("ucid:00fa08000d2f4e67d0b51e"));
    }

    #[test]
    fn a_partial_update_moves_the_agent_stream_to_the_new_agent() {
        let mut m = Metadata::default();
        m.apply(&fixture("rfc7866.body")).unwrap();
        let key = m.call_key.clone();
        m.apply(&fixture("update_transfer.body")).unwrap();
        assert_eq!(m.sender_of("2").unwrap().aor, "sip:agent9@agents.example.com");
        assert_eq!(m.sender_of("1").unwrap().aor, "sip:+15551230001@carrier.example.com", "the customer is kept");
        assert_eq!(m.call_key, key);
        // A complete document replaces everything.
        m.apply(&fixture("rfc7866.body")).unwrap();
        assert_eq!(m.sender_of("2").unwrap().aor, "sip:agent7@agents.example.com");
        // Junk keeps what was known.
        assert!(m.apply("<recording").is_err());
        assert!(m.apply("<other/>").is_err());
        assert_eq!(m.sender_of("2").unwrap().aor, "sip:agent7@agents.example.com");
    }

    #[test]
    fn roles_and_agent_ids() {
        let p = |aor: &str, calling: Option<bool>| Participant { aor: aor.into(), calling, ..Default::default() };
        let (cust, agent) = (p("sip:+15551230001@carrier.example.com", None), p("sip:agent7@agents.example.com", None));
        let r = Roles { agent_aor: vec!["sip:*@agents.example.com".into()], ..Default::default() };
        assert_eq!(r.customer_index([Some(&cust), Some(&agent)]), 0);
        assert_eq!(r.customer_index([Some(&agent), Some(&cust)]), 1, "an outbound call: the agent sends the first m-line");
        let r = Roles { customer_aor: vec!["sip:+1*".into()], ..Default::default() };
        assert_eq!(r.customer_index([Some(&agent), Some(&cust)]), 1);
        let r = Roles::default();
        assert_eq!(r.customer_index([Some(&p("sip:a@x", Some(false))), Some(&p("sip:b@y", Some(true)))]), 1, "Oracle's callingParty");
        assert_eq!(r.customer_index([None, None]), 0, "by default the first m-line is the caller's");
        assert_eq!(Roles { customer_stream: 1, ..Default::default() }.customer_index([None, None]), 1);
        assert!(glob("sip:7???@*", "sip:7001@pbx") && !glob("sip:7???@*", "sip:70011@pbx") && glob("*", ""));
        assert_eq!(aor_user("sip:agent7@agents.example.com;transport=tcp"), Some("agent7".into()));
        assert_eq!(aor_user("+15551230001@carrier"), Some("+15551230001".into()));
        assert_eq!(aor_user("sip:host.only"), None);
        assert_eq!(session_key("6f1c2a9e0b7d4e35;remote=d24b8e6f"), session_key("d24b8e6f;remote=6f1c2a9e0b7d4e35"));
        assert_eq!(session_key("8e3f01b2;remote=00000000000000000000000000000000"), Some("sid:8e3f01b2".into()));
    }
}
