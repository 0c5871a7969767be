//! A PBX and agents speaking SIP and RTP by hand over raw UDP sockets, for tests that must
//! control exactly when each packet goes (restart cross-talk, the rtpengine differential).
#![allow(dead_code)]

use super::{Hearken, AGENT_IP, PBX_IP};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

pub fn rtp(seq: u16, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, fill];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(seq as u32 * 160).to_be_bytes());
    p.extend(std::iter::repeat_n(fill, 160));
    p
}

pub fn sdp(ip: &str, port: u16) -> String {
    let f = if ip.contains(':') { "IP6" } else { "IP4" };
    format!("v=0\r\no=- 1 1 IN {f} {ip}\r\ns=-\r\nc=IN {f} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
}

pub fn audio_port(msg: &str) -> u16 {
    msg.split("m=audio ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {msg}"))
}

pub fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n").filter(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase()))).collect()
}

/// Receive on `sock` until a message for which `want` holds (other messages are skipped).
pub fn recv_until(sock: &UdpSocket, what: &str, want: impl Fn(&str) -> bool) -> String {
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            if want(&m) {
                return m;
            }
        }
    }
    panic!("no {what} within 5 s");
}

pub struct Call {
    /// The SDP the agent was sent (in the INVITE) and the PBX was sent (in the 200).
    pub agent_sdp: String,
    pub pbx_sdp: String,
    /// Relay ports: the one the PBX sends to, the one the agent sends to.
    pub relay_pbx: u16,
    pub relay_agent: u16,
    pub to_tag: String,
    pub call_id: String,
}

/// INVITE from the PBX, 200 from the agent, ACK: a call through Hearken.
pub fn place_call(h: &Hearken, pbx: &UdpSocket, agent: &UdpSocket, call_id: &str, pbx_media: u16, agent_media: u16) -> Call {
    place_call_with(h, pbx, agent, call_id, (PBX_IP, pbx_media), (AGENT_IP, agent_media))
}

/// The same, with the addresses each side announces in its SDP (an agent behind NAT announces
/// an address it does not send from).
pub fn place_call_with(
    h: &Hearken,
    pbx: &UdpSocket,
    agent: &UdpSocket,
    call_id: &str,
    pbx_sdp: (&str, u16),
    agent_sdp: (&str, u16),
) -> Call {
    let tag = format!("a{call_id}");
    place_call_forked(h, pbx, agent, call_id, pbx_sdp, &[(&tag, agent_sdp)])
}

/// A call answered by several downstream dialogs (a forking proxy's branches): one 200 per
/// `(To tag, SDP address)`, in order. The PBX keeps (ACKs) the first; the Call describes it.
pub fn place_call_forked(
    h: &Hearken,
    pbx: &UdpSocket,
    agent: &UdpSocket,
    call_id: &str,
    pbx_sdp: (&str, u16),
    answers: &[(&str, (&str, u16))],
) -> Call {
    let pbx_port = pbx.local_addr().unwrap().port();
    let body = sdp(pbx_sdp.0, pbx_sdp.1);
    let invite = format!(
        "INVITE sip:agent7@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/UDP {PBX_IP}:{pbx_port};branch=z9hG4bK{call_id}\r\nFrom: <sip:cust@pbx>;tag=p{call_id}\r\nTo: <sip:agent7@pbx>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{PBX_IP}:{pbx_port}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        h.sip_port,
        body.len()
    );
    pbx.send_to(invite.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let inv = recv_until(agent, "INVITE at the agent", |m| m.starts_with("INVITE ") && m.contains(call_id));
    let relay_agent = audio_port(&inv);
    for (tag, agent_sdp) in answers {
        let answer = sdp(agent_sdp.0, agent_sdp.1);
        let mut ok = String::from("SIP/2.0 200 OK\r\n");
        for v in header(&inv, "via") {
            ok.push_str(v);
            ok.push_str("\r\n");
        }
        for rr in header(&inv, "record-route") {
            ok.push_str(rr);
            ok.push_str("\r\n");
        }
        ok.push_str(&format!(
            "From: <sip:cust@pbx>;tag=p{call_id}\r\nTo: <sip:agent7@pbx>;tag={tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:agent7@{AGENT_IP}:{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            agent.local_addr().unwrap().port(),
            answer.len()
        ));
        agent.send_to(ok.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    }
    let to_tag = answers[0].0.to_string();
    let resp =
        recv_until(pbx, "200 at the PBX", |m| m.starts_with("SIP/2.0 200") && m.contains(call_id) && m.contains(&format!("tag={to_tag}")));
    let relay_pbx = audio_port(&resp);
    let ack = format!(
        "ACK sip:agent7@{AGENT_IP}:{} SIP/2.0\r\nVia: SIP/2.0/UDP {PBX_IP}:{pbx_port};branch=z9hG4bKack{call_id}\r\nRoute: <sip:127.0.0.1:{};lr>\r\nFrom: <sip:cust@pbx>;tag=p{call_id}\r\nTo: <sip:agent7@pbx>;tag={to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        agent.local_addr().unwrap().port(),
        h.sip_port
    );
    pbx.send_to(ack.as_bytes(), ("127.0.0.1", h.sip_port)).unwrap();
    let body = |m: &str| m.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Call { agent_sdp: body(&inv), pbx_sdp: body(&resp), relay_pbx, relay_agent, to_tag, call_id: call_id.to_string() }
}
