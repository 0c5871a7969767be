//! The recording INVITE's body: `multipart/mixed` with an SDP part and an
//! `application/rs-metadata+xml` part (RFC 7866 §8). Senders differ in the details, and all of
//! these are taken: a preamble before the first delimiter, blanks after delimiter and header
//! lines (Cisco CUBE), the metadata before the SDP (BroadWorks), parts without
//! Content-Disposition, `application/rs-metadata` without `+xml`, extra parts (CUBE's
//! `application/gtd`, ignored), a body of SDP alone (a re-INVITE that only pauses).

/// The parts a recording session needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordingBody {
    pub sdp: Option<Vec<u8>>,
    pub metadata: Option<String>,
}

/// The `boundary` parameter of a multipart Content-Type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn is_metadata(ty: &str) -> bool {
    ty == "application/rs-metadata+xml" || ty == "application/rs-metadata"
}

/// Split a request's body by its Content-Type. Err says why it cannot be read (answered 400).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<RecordingBody, &'static str> {
    let Some(ct) = content_type else {
        return if body.is_empty() { Ok(RecordingBody::default()) } else { Err("a body without Content-Type") };
    };
    let ty = media_type(ct);
    if ty == "application/sdp" {
        return Ok(RecordingBody { sdp: Some(body.to_vec()), metadata: None });
    }
    if is_metadata(&ty) {
        let xml = std::str::from_utf8(body).map_err(|_| "metadata is not UTF-8")?;
        return Ok(RecordingBody { sdp: None, metadata: Some(xml.to_string()) });
    }
    if ty != "multipart/mixed" {
        return Err("the body is neither SDP nor multipart/mixed");
    }
    let b = boundary(ct).ok_or("multipart/mixed without a boundary")?;
    if b.is_empty() || b.len() > 200 {
        return Err("multipart boundary is empty or too long");
    }
    let text = std::str::from_utf8(body).map_err(|_| "multipart body is not UTF-8")?;
    let delim = format!("--{b}");
    let mut out = RecordingBody::default();
    let mut found_end = false;
    // Lines, each without its line ending; a part's body keeps its own CRLFs.
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split('\n') {
        let bare = line.trim_end_matches('\r').trim_end();
        if bare == delim || bare == format!("{delim}--") {
            if let Some(p) = current.take() {
                parts.push(p);
            }
            if bare.ends_with("--") && bare.len() == delim.len() + 2 {
                found_end = true;
                break;
            }
            current = Some(String::new());
            continue;
        }
        if let Some(p) = current.as_mut() {
            p.push_str(line);
            p.push('\n');
        }
    }
    if let Some(p) = current.take() {
        // No closing delimiter: take what came, as lenient parsers do.
        parts.push(p);
    }
    if parts.is_empty() {
        return Err("no part with the multipart boundary");
    }
    let _ = found_end;
    for part in parts {
        // Headers up to the first empty line.
        let (head, content) = match part.find("\r\n\r\n").map(|i| (i, 4)).or_else(|| part.find("\n\n").map(|i| (i, 2))) {
            Some((i, n)) => (&part[..i], &part[i + n..]),
            None => continue,
        };
        // The CRLF before the next delimiter belongs to the delimiter.
        let content = content.strip_suffix("\r\n").or_else(|| content.strip_suffix('\n')).unwrap_or(content);
        let ty = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case("content-type").then(|| media_type(v))
            })
            .unwrap_or_default();
        if ty == "application/sdp" && out.sdp.is_none() {
            out.sdp = Some(content.as_bytes().to_vec());
        } else if is_metadata(&ty) && out.metadata.is_none() {
            out.metadata = Some(content.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/siprec/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn every_vendor_body_splits() {
        for (name, boundary) in [
            ("rfc7866.body", "hearken-siprec-boundary"),
            ("cisco_cube.body", "uniqueBoundary"),
            ("oracle_acme.body", "unique-boundary-1"),
            ("update_transfer.body", "hearken-siprec-boundary"),
        ] {
            let body = fixture(name);
            let r = parse(Some(&format!("multipart/mixed;boundary={boundary}")), body.as_bytes()).unwrap();
            let sdp = String::from_utf8(r.sdp.expect(name)).unwrap();
            assert!(sdp.starts_with("v=0\r\n") && sdp.contains("a=label:"), "{name}: {sdp}");
            assert!(crate::sdp::parse(sdp.replace("[media_port1]", "4000").replace("[media_port2]", "4002").as_bytes()).is_ok(), "{name}");
            let xml = r.metadata.expect(name);
            assert!(xml.contains("<recording") && xml.trim_end().ends_with("</recording>"), "{name}: {xml}");
        }
        // Quoted boundary, metadata first, a preamble, no closing delimiter.
        let body = "preamble\r\n--b1\r\nContent-Type: application/rs-metadata\r\n\r\n<recording/>\r\n--b1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n";
        let r = parse(Some("multipart/mixed; boundary=\"b1\""), body.as_bytes()).unwrap();
        assert_eq!((r.sdp.as_deref(), r.metadata.as_deref()), (Some(&b"v=0\r\n"[..]), Some("<recording/>")));
        // SDP alone (a pause re-INVITE).
        assert_eq!(parse(Some("application/sdp"), b"v=0\r\n").unwrap().sdp.as_deref(), Some(&b"v=0\r\n"[..]));
        // What cannot be read.
        assert!(parse(Some("multipart/mixed"), b"x").is_err());
        assert!(parse(Some("text/plain"), b"x").is_err());
        assert!(parse(Some("multipart/mixed;boundary=zz"), b"no parts here").is_err());
        assert!(parse(None, b"x").is_err());
        assert!(parse(Some("multipart/mixed;boundary=zz"), &[0xff, 0xfe]).is_err());
    }
}
