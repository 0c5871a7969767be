//! Differential test against rtpengine (issue 12), the reference relay: the same call set-up
//! and the same packet sequences go to rtpengine (userspace, its default endpoint learning,
//! driven over ng exactly as Kamailio would) and to Hearken (driven over SIP), from sockets of
//! their own. For every scenario Hearken must never deliver a packet to a party that rtpengine
//! protects, and never end media that rtpengine keeps.
//!
//! Scenarios: a stranger's packet before the PBX's first RTP (and more after), a NAT rebinding
//! of the agent mid-call, a call answered by two forked branches of which the PBX keeps one,
//! one-way silence (the agent muted, sending only RTCP) past both relays' media timeouts.

mod common;
use common::raw_sip::*;
use common::rtpengine::Rtpengine;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

const CUSTOMER: u8 = 0x11;
const AGENT: u8 = 0x22;
const STRANGER: u8 = 0x55;
const AGENT_Y: u8 = 0x33;
/// Media timeout of both relays in these scenarios (seconds).
const TIMEOUT_S: u64 = 3;

/// The parties of one call: PBX media, agent media, a stranger; all on loopback.
struct Parties {
    pbx: UdpSocket,
    agent: UdpSocket,
    /// The agent's NAT after a rebinding: same IP, another port.
    agent_rebound: UdpSocket,
    stranger: UdpSocket,
}

impl Parties {
    fn new() -> Parties {
        let s = |ip: &str| {
            let u = UdpSocket::bind((ip, 0)).unwrap();
            u.set_nonblocking(true).unwrap();
            u
        };
        Parties { pbx: s(PBX_IP), agent: s(AGENT_IP), agent_rebound: s(AGENT_IP), stranger: s("127.0.0.7") }
    }
}

/// Drain a socket: packets received, by fill byte (the first payload byte).
fn drain(sock: &UdpSocket) -> std::collections::HashMap<u8, usize> {
    let mut out = std::collections::HashMap::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        if n > 12 {
            *out.entry(buf[12]).or_default() += 1;
        } else if n >= 8 && buf[1] == 201 {
            *out.entry(201).or_default() += 1;
        }
    }
    out
}

fn send(sock: &UdpSocket, port: u16, seq: u16, fill: u8) {
    let _ = sock.send_to(&rtp(seq, fill), ("127.0.0.1", port));
}

fn rtcp(sock: &UdpSocket, port: u16) {
    // An empty receiver report (RFC 3550 §6.4.2), on the RTP port: rtcp-mux style demux by
    // payload type 201. Both relays accept it as activity.
    let _ = sock.send_to(&[0x80, 201, 0, 1, 0, 0, 0, 0x22], ("127.0.0.1", port));
}

/// What each party received in one scenario, for one relay.
#[derive(Debug, Default)]
struct Seen {
    pbx: std::collections::HashMap<u8, usize>,
    agent: std::collections::HashMap<u8, usize>,
    agent_rebound: std::collections::HashMap<u8, usize>,
    stranger: std::collections::HashMap<u8, usize>,
    /// After the script, one more packet each way still went through (the media was kept).
    alive: bool,
}

fn add(into: &mut std::collections::HashMap<u8, usize>, from: std::collections::HashMap<u8, usize>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// A scenario: set up by `setup` (returns the relay's two ports), then `script` sends packets
/// at 20 ms steps; what each party receives is collected.
fn run(p: &Parties, ports: (u16, u16), steps: usize, mut script: impl FnMut(usize, &Parties, (u16, u16))) -> Seen {
    let mut seen = Seen::default();
    let collect = |seen: &mut Seen| {
        add(&mut seen.pbx, drain(&p.pbx));
        add(&mut seen.agent, drain(&p.agent));
        add(&mut seen.agent_rebound, drain(&p.agent_rebound));
        add(&mut seen.stranger, drain(&p.stranger));
    };
    for step in 0..steps {
        script(step, p, ports);
        std::thread::sleep(Duration::from_millis(20));
        collect(&mut seen);
    }
    std::thread::sleep(Duration::from_millis(100));
    collect(&mut seen);
    // Probe: the customer's packet must reach the agent (wherever it now is), and the PBX must
    // get one back from the agent's side that last spoke.
    const PROBE: u8 = 0x77;
    let rebound = n(&seen.agent_rebound, CUSTOMER) > 0;
    let agent = if rebound { &p.agent_rebound } else { &p.agent };
    send(&p.pbx, ports.0, 60_000, PROBE);
    send(agent, ports.1, 60_000, PROBE);
    std::thread::sleep(Duration::from_millis(200));
    let (to_pbx, to_agent) = (drain(&p.pbx), drain(agent));
    seen.alive = n(&to_pbx, PROBE) == 1 && n(&to_agent, PROBE) == 1;
    seen
}

fn n(m: &std::collections::HashMap<u8, usize>, k: u8) -> usize {
    m.get(&k).copied().unwrap_or(0)
}

struct Both {
    rtpe: Rtpengine,
    hk: Hearken,
    sig_pbx: UdpSocket,
    sig_agent: UdpSocket,
    calls: usize,
}

impl Both {
    fn new() -> Both {
        let (pbx_port, agent_port) = (free_port(), free_port());
        let (lo, hi) = media_range(20);
        let hk = Hearken::start_with(
            pbx_port,
            agent_port,
            (lo, hi),
            "",
            "",
            &format!("rtp_timeout_s = {TIMEOUT_S}\ndead_leg_timeout_s = {TIMEOUT_S}"),
        );
        let sig_pbx = UdpSocket::bind((PBX_IP, pbx_port)).unwrap();
        let sig_agent = UdpSocket::bind((AGENT_IP, agent_port)).unwrap();
        sig_pbx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        sig_agent.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Both { rtpe: Rtpengine::start(TIMEOUT_S), hk, sig_pbx, sig_agent, calls: 0 }
    }

    /// Run the same scenario against rtpengine and Hearken. `agent_sdp_ip`: what the agent
    /// announces (its own address, or a private one behind NAT).
    fn scenario(&mut self, agent_sdp_ip: &str, steps: usize, script: impl Fn(usize, &Parties, (u16, u16)) + Copy) -> (Seen, Seen) {
        self.calls += 1;
        let id = format!("diff{}", self.calls);
        let p = Parties::new();
        let (pm, am) = (p.pbx.local_addr().unwrap().port(), p.agent.local_addr().unwrap().port());
        let ports = self.rtpe.setup(&id, (PBX_IP, pm), (agent_sdp_ip, am));
        let r = run(&p, ports, steps, script);
        let _ = self.rtpe.alive(&id);
        let p = Parties::new();
        let (pm, am) = (p.pbx.local_addr().unwrap().port(), p.agent.local_addr().unwrap().port());
        let c = place_call_with(&self.hk, &self.sig_pbx, &self.sig_agent, &id, (PBX_IP, pm), (agent_sdp_ip, am));
        let h = run(&p, (c.relay_pbx, c.relay_agent), steps, script);
        eprintln!("{id}\n  rtpengine {r:?}\n  hearken   {h:?}");
        (r, h)
    }
}

impl Both {
    /// Forking: one offer, answered by two downstream dialogs (agent X, then agent Y, as a
    /// forking proxy's branches do); the PBX keeps X and sends to the port X's answer gave it;
    /// both agents send to the port the offer gave them. `agent` is X, `agent_rebound` is Y.
    fn forked(&mut self, steps: usize) -> (Seen, Seen) {
        self.calls += 1;
        let id = format!("diff{}", self.calls);
        let script = |step: usize, p: &Parties, (to_pbx_side, to_agent_side): (u16, u16)| {
            send(&p.pbx, to_pbx_side, step as u16, CUSTOMER);
            send(&p.agent, to_agent_side, step as u16, AGENT);
            send(&p.agent_rebound, to_agent_side, step as u16, AGENT_Y);
        };
        let p = Parties::new();
        let (pm, xm, ym) =
            (p.pbx.local_addr().unwrap().port(), p.agent.local_addr().unwrap().port(), p.agent_rebound.local_addr().unwrap().port());
        let (x_port, agent_port) = self.rtpe.setup(&id, (PBX_IP, pm), (AGENT_IP, xm));
        let _y_port = self.rtpe.answer(&id, "agent-y", (AGENT_IP, ym));
        let r = run(&p, (x_port, agent_port), steps, script);
        let p = Parties::new();
        let (pm, xm, ym) =
            (p.pbx.local_addr().unwrap().port(), p.agent.local_addr().unwrap().port(), p.agent_rebound.local_addr().unwrap().port());
        let c = place_call_forked(
            &self.hk,
            &self.sig_pbx,
            &self.sig_agent,
            &id,
            (PBX_IP, pm),
            &[("agent-x", (AGENT_IP, xm)), ("agent-y", (AGENT_IP, ym))],
        );
        let h = run(&p, (c.relay_pbx, c.relay_agent), steps, script);
        eprintln!("{id} (forked)\n  rtpengine {r:?}\n  hearken   {h:?}");
        (r, h)
    }
}

/// Every check of the module in one process pair (rtpengine and Hearken start once).
#[test]
fn hearken_protects_at_least_what_rtpengine_protects() {
    let mut both = Both::new();

    // 1. A stranger's packet before the PBX's first RTP, then both parties talk, then the
    //    stranger again.
    let (r, h) = both.scenario(AGENT_IP, 80, |step, p, (to_pbx_side, to_agent_side)| {
        if step == 0 {
            send(&p.stranger, to_pbx_side, 1, STRANGER);
        }
        if step >= 2 {
            send(&p.pbx, to_pbx_side, step as u16, CUSTOMER);
            send(&p.agent, to_agent_side, step as u16, AGENT);
        }
        if (50..60).contains(&step) {
            send(&p.stranger, to_pbx_side, step as u16, STRANGER);
        }
    });
    // What the stranger gets (the agent's audio), and what of the stranger's reaches the agent.
    assert!(n(&h.stranger, AGENT) <= n(&r.stranger, AGENT), "stranger got agent audio: hearken {h:?} rtpengine {r:?}");
    assert!(n(&h.agent, STRANGER) <= n(&r.agent, STRANGER), "agent got stranger audio: hearken {h:?} rtpengine {r:?}");
    // The stranger's first packet arrived before the PBX's, like a NAT'd PBX's would: it is the
    // provisional endpoint until the PBX's own address is heard (at its first packet). An agent
    // packet handled in that instant can go to it; nothing after.
    assert!(n(&h.stranger, AGENT) <= 1, "Hearken gives a stranger at most the one racing packet: {h:?}");
    assert!(n(&h.agent, STRANGER) <= 1, "and takes from it only its first packet: {h:?}");
    assert!(n(&h.agent, CUSTOMER) >= 70 && n(&h.pbx, AGENT) >= 70, "the call itself flows: {h:?}");
    assert!(!r.alive || h.alive, "Hearken ended media rtpengine kept: hearken {h:?} rtpengine {r:?}");

    // 2. The agent behind NAT (announces 127.0.0.9, sends from its own socket), rebinding to a
    //    new port mid-call: both relays keep the call; Hearken follows the rebinding.
    let (r, h) = both.scenario("127.0.0.9", 100, |step, p, (to_pbx_side, to_agent_side)| {
        send(&p.pbx, to_pbx_side, step as u16, CUSTOMER);
        if step < 50 {
            send(&p.agent, to_agent_side, step as u16, AGENT);
        } else {
            // The NAT's new mapping: same IP, new port.
            send(&p.agent_rebound, to_agent_side, step as u16, AGENT);
        }
    });
    assert!(n(&h.pbx, AGENT) >= 85, "the agent's audio after the rebinding reaches the PBX: {h:?} (rtpengine {r:?})");
    assert!(n(&h.agent_rebound, CUSTOMER) >= 40, "and the customer's audio follows the agent: {h:?}");
    assert!(!r.alive || h.alive, "Hearken ended media rtpengine kept: hearken {h:?} rtpengine {r:?}");
    assert!(n(&h.stranger, CUSTOMER) + n(&h.stranger, AGENT) == 0);

    // 3. Forking: the PBX keeps agent X; agent Y (the other branch) must not take X's call.
    let (r, h) = both.forked(100);
    assert!(n(&h.agent_rebound, CUSTOMER) <= n(&r.agent_rebound, CUSTOMER), "the losing branch got the customer: {h:?} rtpengine {r:?}");
    assert!(n(&h.pbx, AGENT_Y) <= n(&r.pbx, AGENT_Y), "the customer got the losing branch: {h:?} rtpengine {r:?}");
    assert_eq!(n(&h.agent_rebound, CUSTOMER) + n(&h.pbx, AGENT_Y), 0, "Hearken keeps the branches apart: {h:?}");
    assert!(n(&h.agent, CUSTOMER) >= 95 && n(&h.pbx, AGENT) >= 95, "the kept dialog's media flows: {h:?}");
    assert!(!r.alive || h.alive, "Hearken ended media rtpengine kept: hearken {h:?} rtpengine {r:?}");

    // 4. One-way silence past both relays' media timeout: the agent is muted and sends RTCP only.
    let steps = (TIMEOUT_S as usize + 3) * 50;
    let (r, h) = both.scenario(AGENT_IP, steps, |step, p, (to_pbx_side, to_agent_side)| {
        send(&p.pbx, to_pbx_side, step as u16, CUSTOMER);
        if step % 50 == 0 {
            rtcp(&p.agent, to_agent_side);
        }
    });
    assert!(!r.alive || h.alive, "Hearken ended media rtpengine kept: hearken {h:?} rtpengine {r:?}");
    assert!(h.alive, "one-way silence never ends a call: {h:?}");
    assert!(n(&h.agent, CUSTOMER) as f64 >= 0.95 * steps as f64, "{h:?}");
}
