//! SIP message parsing and printing (RFC 3261 §7, §18.3, §20).
//!
//! A proxy must pass every header it does not change through unchanged, so a parsed message keeps
//! each header's original wire text (`raw`, folding included) and prints it back verbatim unless
//! the header was edited. Compact header forms (§7.3.3) are understood through [`canonical`],
//! folded lines (§7.3.1) are unfolded into `value`, and header values that hold several
//! comma-separated entries (Via, Route, Record-Route) are split by [`split_values`].
//!
//! Not here: transactions, routing, URI semantics beyond host/port/user extraction.

use std::fmt::Write as _;

/// Largest message accepted, datagram or stream (RFC 3261 §18.1.1 suggests 1300 for UDP paths,
/// but real INVITEs with large SDP reach several KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("message is not UTF-8 in its header part")]
    NotText,
    #[error("no blank line ends the header part")]
    NoHeaderEnd,
    #[error("bad start line")]
    BadStartLine,
    #[error("bad header line")]
    BadHeader,
    #[error("bad Content-Length")]
    BadContentLength,
    #[error("body shorter than Content-Length")]
    Truncated,
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("message too large")]
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String, version: String },
    Response { version: String, code: u16, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name as written on the wire (may be compact, any case).
    pub name: String,
    /// Value with folding undone and surrounding whitespace trimmed.
    pub value: String,
    /// Original wire text of the whole header (without the final CRLF); `None` once edited.
    raw: Option<String>,
}

impl Header {
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Header { name: name.to_string(), value: value.into(), raw: None }
    }
    /// Canonical lowercase long name.
    pub fn key(&self) -> String {
        canonical(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// Canonical lowercase long form of a header name, expanding compact forms (RFC 3261 §7.3.3,
/// RFC 3515, RFC 3265, RFC 4028, RFC 3892).
pub fn canonical(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let long = match lower.as_str() {
        "i" => "call-id",
        "m" => "contact",
        "e" => "content-encoding",
        "l" => "content-length",
        "c" => "content-type",
        "f" => "from",
        "s" => "subject",
        "k" => "supported",
        "t" => "to",
        "v" => "via",
        "r" => "refer-to",
        "o" => "event",
        "u" => "allow-events",
        "x" => "session-expires",
        "b" => "referred-by",
        _ => return lower,
    };
    long.to_string()
}

/// Where the header part ends: index just past the blank line, or None if not yet seen.
pub fn header_end(buf: &[u8]) -> Option<usize> {
    // The first blank line wins, CRLF or bare LF (RFC 3261 §7 lets receivers accept bare LF):
    // a later CRLFCRLF may belong to the next message on a stream.
    let crlf = find(buf, b"\r\n\r\n").map(|p| p + 4);
    let lf = find(buf, b"\n\n").map(|p| p + 2);
    let mixed = find(buf, b"\n\r\n").map(|p| p + 3);
    [crlf, lf, mixed].into_iter().flatten().min()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length of a header block, for stream framing (RFC 3261 §18.3). Missing = 0.
pub fn content_length(head: &[u8]) -> Result<usize, ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::NotText)?;
    for line in text.split('\n').skip(1) {
        let line = line.trim_end_matches('\r');
        // A folded continuation belongs to the header before it (RFC 3261 §7.3.1).
        if line.starts_with(' ') || line.starts_with('\t') {
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            if canonical(n.trim()) == "content-length" {
                return v.trim().parse().map_err(|_| ParseError::BadContentLength);
            }
        }
    }
    Ok(0)
}

impl Message {
    /// Parse one complete message. For datagrams, bytes past Content-Length are ignored and a
    /// body shorter than Content-Length is an error (RFC 3261 §18.3).
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge);
        }
        let end = header_end(buf).ok_or(ParseError::NoHeaderEnd)?;
        let head = std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::NotText)?;
        let mut lines: Vec<&str> = head.split('\n').map(|l| l.trim_end_matches('\r')).collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let mut iter = lines.into_iter();
        let first = iter.next().ok_or(ParseError::BadStartLine)?;
        let start = parse_start(first)?;
        let mut headers: Vec<Header> = Vec::new();
        for line in iter {
            if line.starts_with(' ') || line.starts_with('\t') {
                // Folded continuation (RFC 3261 §7.3.1): equivalent to a single SP.
                let h = headers.last_mut().ok_or(ParseError::BadHeader)?;
                h.value.push(' ');
                h.value.push_str(line.trim());
                if let Some(raw) = h.raw.as_mut() {
                    raw.push_str("\r\n");
                    raw.push_str(line);
                }
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
            let name = name.trim_end();
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ParseError::BadHeader);
            }
            headers.push(Header { name: name.to_string(), value: value.trim().to_string(), raw: Some(line.to_string()) });
        }
        let rest = &buf[end..];
        let body = match headers.iter().find(|h| h.key() == "content-length") {
            Some(h) => {
                let n: usize = h.value.parse().map_err(|_| ParseError::BadContentLength)?;
                if n > rest.len() {
                    return Err(ParseError::Truncated);
                }
                rest[..n].to_vec()
            }
            None => rest.to_vec(),
        };
        let msg = Message { start, headers, body };
        for (key, label) in [("via", "Via"), ("call-id", "Call-ID"), ("cseq", "CSeq"), ("from", "From"), ("to", "To")] {
            if msg.header(key).is_none() {
                return Err(ParseError::Missing(label));
            }
        }
        if msg.cseq().is_none() {
            return Err(ParseError::BadHeader);
        }
        Ok(msg)
    }

    /// Serialise. Unedited headers are printed exactly as received; Content-Length is corrected
    /// to the body (added if absent, as stream transports require it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri, version } => {
                let _ = write!(out, "{method} {uri} {version}\r\n");
            }
            StartLine::Response { version, code, reason } => {
                let _ = write!(out, "{version} {code} {reason}\r\n");
            }
        }
        let mut saw_len = false;
        for h in &self.headers {
            if h.key() == "content-length" {
                saw_len = true;
                if h.value.parse::<usize>().ok() != Some(self.body.len()) {
                    let _ = write!(out, "{}: {}\r\n", h.name, self.body.len());
                    continue;
                }
            }
            match &h.raw {
                Some(raw) => out.push_str(raw),
                None => {
                    let _ = write!(out, "{}: {}", h.name, h.value);
                }
            }
            out.push_str("\r\n");
        }
        if !saw_len {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            _ => None,
        }
    }
    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            _ => None,
        }
    }

    /// First header with this canonical name.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.key() == key).map(|h| h.value.as_str())
    }
    /// All comma-separated values of every header with this canonical name, in order.
    pub fn values(&self, key: &str) -> Vec<String> {
        self.headers.iter().filter(|h| h.key() == key).flat_map(|h| split_values(&h.value)).collect()
    }
    pub fn call_id(&self) -> &str {
        self.header("call-id").unwrap_or("")
    }
    /// (sequence number, method) from CSeq.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.header("cseq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        let m = it.next()?.to_string();
        Some((n, m))
    }
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }
    pub fn has_sdp(&self) -> bool {
        !self.body.is_empty() && self.content_type().is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"))
    }

    /// Insert a header before every other header (used for Via, Record-Route).
    pub fn push_front(&mut self, name: &str, value: impl Into<String>) {
        self.headers.insert(0, Header::new(name, value));
    }
    /// Insert a header after the last one.
    pub fn push_back(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push(Header::new(name, value));
    }
    /// Replace the value of the first header with this canonical name (or append it).
    pub fn set(&mut self, key: &str, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.headers.iter_mut().find(|h| h.key() == key) {
            Some(h) => {
                h.value = value;
                h.raw = None;
            }
            None => self.push_back(name, value),
        }
    }
    /// Remove the first value of a multi-valued header (e.g. the top Via), keeping the rest of
    /// that header line. Returns the removed value.
    pub fn pop_first_value(&mut self, key: &str) -> Option<String> {
        let idx = self.headers.iter().position(|h| h.key() == key)?;
        self.take_value(idx, false)
    }

    /// Remove the last value of a multi-valued header (the last Route). Returns it.
    pub fn pop_last_value(&mut self, key: &str) -> Option<String> {
        let idx = self.headers.iter().rposition(|h| h.key() == key)?;
        self.take_value(idx, true)
    }

    /// Take the first or last value out of header line `idx`; a line left empty goes.
    fn take_value(&mut self, idx: usize, last: bool) -> Option<String> {
        let mut vals = split_values(&self.headers[idx].value);
        let taken = if last {
            vals.pop()
        } else if vals.is_empty() {
            None
        } else {
            Some(vals.remove(0))
        };
        if vals.is_empty() {
            self.headers.remove(idx);
        } else {
            let h = &mut self.headers[idx];
            h.value = vals.join(", ");
            h.raw = None;
        }
        taken
    }

    /// Replace the Request-URI of a request.
    pub fn set_uri(&mut self, new: String) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new;
        }
    }

    /// Replace the first value of a multi-valued header.
    pub fn replace_first_value(&mut self, key: &str, new: String) {
        if let Some(h) = self.headers.iter_mut().find(|h| h.key() == key) {
            let mut vals = split_values(&h.value);
            if vals.is_empty() {
                return;
            }
            vals[0] = new;
            h.value = vals.join(", ");
            h.raw = None;
        }
    }

    /// A response to this request, copying Via, From, To, Call-ID, CSeq (RFC 3261 §8.2.6).
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let mut headers = Vec::new();
        for h in &self.headers {
            match h.key().as_str() {
                "via" | "from" | "call-id" | "cseq" => headers.push(h.clone()),
                "to" => {
                    let mut h = h.clone();
                    if let Some(tag) = to_tag {
                        if param(&h.value, "tag").is_none() {
                            h.value = format!("{};tag={tag}", h.value);
                            h.raw = None;
                        }
                    }
                    headers.push(h);
                }
                _ => {}
            }
        }
        headers.push(Header::new("Server", "Hearken"));
        headers.push(Header::new("Content-Length", "0"));
        Message { start: StartLine::Response { version: "SIP/2.0".into(), code, reason: reason.into() }, headers, body: Vec::new() }
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn parse_start(line: &str) -> Result<StartLine, ParseError> {
    if let Some(rest) = line.strip_prefix("SIP/") {
        let mut it = rest.splitn(3, ' ');
        let ver = it.next().ok_or(ParseError::BadStartLine)?;
        let code: u16 = it.next().and_then(|c| c.parse().ok()).ok_or(ParseError::BadStartLine)?;
        if !(100..700).contains(&code) || ver != "2.0" {
            return Err(ParseError::BadStartLine);
        }
        let reason = it.next().unwrap_or("").to_string();
        return Ok(StartLine::Response { version: format!("SIP/{ver}"), code, reason });
    }
    let mut it = line.split(' ');
    let (m, u, v) = (it.next(), it.next(), it.next());
    match (m, u, v, it.next()) {
        (Some(m), Some(u), Some(v), None) if !m.is_empty() && m.bytes().all(is_token_char) && v == "SIP/2.0" && u.contains(':') => {
            Ok(StartLine::Request { method: m.to_string(), uri: u.to_string(), version: v.to_string() })
        }
        _ => Err(ParseError::BadStartLine),
    }
}

/// Split a header value on commas that are outside quotes and angle brackets.
pub fn split_values(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut cur) = (false, false, String::new());
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                continue;
            }
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                let t = cur.trim();
                if !t.is_empty() {
                    out.push(t.to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    let t = cur.trim();
    if !t.is_empty() {
        out.push(t.to_string());
    }
    out
}

/// A `;name=value` parameter of a header value (outside any `<...>`), case-insensitive name.
pub fn param(value: &str, name: &str) -> Option<String> {
    let tail = match value.rfind('>') {
        Some(p) => &value[p + 1..],
        None => value,
    };
    for part in tail.split(';').skip(1) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        if k.trim().eq_ignore_ascii_case(name) {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// Parsed Via value: `SIP/2.0/UDP host[:port];params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub branch: Option<String>,
    pub received: Option<String>,
    pub rport: Option<Option<u16>>,
}

impl Via {
    pub fn parse(v: &str) -> Option<Via> {
        // LWS may surround the slashes of the sent-protocol (`SIP / 2.0 / UDP`, RFC 3261 §25.1).
        let mut norm = String::with_capacity(v.len());
        for part in v.trim().split('/') {
            if !norm.is_empty() {
                norm.push('/');
            }
            norm.push_str(if norm.is_empty() { part.trim_end() } else { part.trim() });
        }
        let (proto, rest) = norm.split_once(char::is_whitespace)?;
        let transport = proto.rsplit('/').next()?.to_ascii_uppercase();
        let rest = rest.trim();
        let (hostport, _) = rest.split_once(';').unwrap_or((rest, ""));
        let (host, port) = split_hostport(hostport.trim())?;
        let rport = param(rest, "rport").map(|p| p.parse().ok());
        let rport = if rest.to_ascii_lowercase().contains(";rport") { rport.or(Some(None)) } else { None };
        Some(Via { transport, host, port, branch: param(rest, "branch"), received: param(rest, "received"), rport })
    }
}

/// Split `host[:port]`, handling `[v6]:port`.
pub fn split_hostport(hp: &str) -> Option<(String, Option<u16>)> {
    if hp.is_empty() {
        return None;
    }
    if let Some(rest) = hp.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        return Some((h.to_string(), port));
    }
    match hp.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), Some(p.parse().ok()?))),
        None => Some((hp.to_string(), None)),
    }
}

/// Parts of a SIP URI: user, host, port, and whether it has `;lr` (RFC 3261 §19.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub lr: bool,
    pub transport: Option<String>,
    /// A `sips:` URI (TLS on every hop).
    pub secure: bool,
}

impl SipUri {
    /// Parse a URI, or a name-addr (`"Name" <sip:...>;tag=x`).
    pub fn parse(s: &str) -> Option<SipUri> {
        let s = s.trim();
        let inner = match (s.find('<'), s.find('>')) {
            (Some(a), Some(b)) if a < b => &s[a + 1..b],
            // A bare URI keeps its parameters (`;lr`, `;transport=`); in a header value without
            // brackets they would be header parameters, which only matters for `tag`.
            _ => s,
        };
        let secure = inner.len() > 5 && inner[..5].eq_ignore_ascii_case("sips:");
        let rest = inner.strip_prefix("sips:").or_else(|| inner.strip_prefix("sip:"))?;
        let (userhost, params) = rest.split_once(';').unwrap_or((rest, ""));
        let userhost = userhost.split('?').next().unwrap_or(userhost);
        let (user, hostport) = match userhost.rsplit_once('@') {
            Some((u, h)) => (Some(u.split(':').next().unwrap_or(u).to_string()), h),
            None => (None, userhost),
        };
        let (host, port) = split_hostport(hostport)?;
        let mut lr = false;
        let mut transport = None;
        for p in params.split(';') {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            if k.eq_ignore_ascii_case("lr") {
                lr = true;
            } else if k.eq_ignore_ascii_case("transport") {
                transport = Some(v.to_ascii_uppercase());
            }
        }
        Some(SipUri { user, host, port, lr, transport, secure })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:agent7@10.0.0.2 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0\r\n\
Via: SIP/2.0/TCP 10.0.0.8;branch=z9hG4bKx\r\n\
f: \"Cust\" <sip:555@pbx>;tag=a\r\n\
t: <sip:agent7@pbx>\r\n\
i: abc@pbx\r\n\
CSeq: 1 INVITE\r\n\
X-Folded: one\r\n two\r\n\tthree\r\n\
x-lower-case: KeepMe As Is\r\n\
c: application/sdp\r\n\
l: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn compact_folded_multi_via_and_length() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.call_id(), "abc@pbx");
        assert_eq!(m.values("via").len(), 3);
        assert_eq!(m.header("x-folded"), Some("one two three"));
        assert_eq!(m.body, b"v=0\r");
        assert!(m.has_sdp());
        assert_eq!(m.cseq(), Some((1, "INVITE".into())));
    }

    #[test]
    fn unchanged_headers_print_verbatim() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let out = String::from_utf8(m.to_bytes()).unwrap();
        assert!(out.contains("x-lower-case: KeepMe As Is\r\n"));
        assert!(out.contains("X-Folded: one\r\n two\r\n\tthree\r\n"));
        assert!(out.contains("f: \"Cust\" <sip:555@pbx>;tag=a\r\n"));
        let again = Message::parse(out.as_bytes()).unwrap();
        assert_eq!(again, Message::parse(out.as_bytes()).unwrap());
        assert_eq!(again.body, m.body);
    }

    #[test]
    fn pop_top_via_keeps_rest() {
        let mut m = Message::parse(INVITE.as_bytes()).unwrap();
        let top = m.pop_first_value("via").unwrap();
        assert!(top.contains("branch=z9hG4bK1"));
        let vias = m.values("via");
        assert_eq!(vias.len(), 2);
        assert!(vias[0].contains("10.0.0.9"));
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let short = INVITE.replace("l: 4", "l: 400");
        assert_eq!(Message::parse(short.as_bytes()), Err(ParseError::Truncated));
        assert!(Message::parse(b"hello\r\n\r\n").is_err());
        assert!(Message::parse(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n\r\n").is_err());
        assert!(Message::parse(b"").is_err());
        assert!(Message::parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']).is_err());
    }

    #[test]
    fn via_and_uri_parsing() {
        let v = Via::parse("SIP/2.0/UDP 10.0.0.1:5062;rport;branch=z9hG4bKab;received=1.2.3.4").unwrap();
        assert_eq!(v.host, "10.0.0.1");
        assert_eq!(v.port, Some(5062));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.branch.as_deref(), Some("z9hG4bKab"));
        let u = SipUri::parse("\"A\" <sip:1001@[::1]:5070;lr;transport=tcp>;tag=1").unwrap();
        assert_eq!((u.user.as_deref(), u.host.as_str(), u.port, u.lr), (Some("1001"), "::1", Some(5070), true));
        assert_eq!(u.transport.as_deref(), Some("TCP"));
        let bare = SipUri::parse("sip:10.0.0.1:5080;transport=tcp;lr").unwrap();
        assert_eq!((bare.port, bare.transport.as_deref(), bare.lr), (Some(5080), Some("TCP"), true));
        assert_eq!(split_values("<sip:a;lr>, <sip:b,c>"), vec!["<sip:a;lr>", "<sip:b,c>"]);
    }

    #[test]
    fn framing_length() {
        let end = header_end(INVITE.as_bytes()).unwrap();
        assert_eq!(content_length(&INVITE.as_bytes()[..end]).unwrap(), 4);
    }
}
