//! Property tests for the turn-taking analyzer over random two-party timelines (deterministic
//! xorshift PRNG, 300 cases): shares and overlap are consistent, summary event lists are in time
//! order, and 10 ms and 20 ms framings agree within one frame.

use hearken::analysis::turns::{CallSummary, TurnParams, TurnTaking};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [a, b), in whole 20 ms steps so both framings see the same edges.
    fn range(&mut self, a: f64, b: f64) -> f64 {
        let steps = ((b - a) / 0.02) as u64;
        a + (self.next() % steps.max(1)) as f64 * 0.02
    }
}

/// Random speech intervals: durations 0.2–6 s, gaps 0.1–8 s, steering clear of the 0.3 s bridging
/// boundary (where one frame decides the outcome by definition).
fn timeline(r: &mut Rng, dur: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut t = r.range(0.0, 3.0);
    while t < dur - 1.0 {
        let len = r.range(0.2, 6.0);
        let end = (t + len).min(dur - 0.5);
        out.push((t, end));
        let mut gap = r.range(0.1, 8.0);
        if (0.24..0.36).contains(&gap) {
            gap += 0.2;
        }
        t = end + gap;
    }
    out
}

fn run(c: &[(f64, f64)], a: &[(f64, f64)], dur: f64, frame_ms: u32) -> CallSummary {
    let mut t = TurnTaking::new(TurnParams::default(), frame_ms);
    let f = frame_ms as f64 / 1000.0;
    let on = |iv: &[(f64, f64)], x: f64| iv.iter().any(|&(s, e)| x + 1e-9 >= s && x + 1e-9 < e);
    for i in 0..(dur / f).round() as usize {
        let x = i as f64 * f;
        t.handle_frame(on(c, x), on(a, x));
    }
    t.finish()
}

fn sorted(v: &[f64]) -> bool {
    v.windows(2).all(|w| w[0] <= w[1] + 1e-9)
}

#[test]
fn properties_hold_on_random_calls() {
    let mut r = Rng(0x9e3779b97f4a7c15);
    for case in 0..300 {
        let dur = r.range(10.0, 90.0);
        let (c, a) = (timeline(&mut r, dur), timeline(&mut r, dur));
        let s = run(&c, &a, dur, 10);
        let (tc, ta) = (s.talk_time_s.customer, s.talk_time_s.agent);
        // Shares: nobody talks longer than the call, the union never exceeds it, ratio in [0, 1].
        assert!(s.talk_share_of_call.customer <= 1.0 + 1e-9 && s.talk_share_of_call.agent <= 1.0 + 1e-9, "case {case}");
        assert!(tc + ta - s.overlap_s <= s.call_duration_s + 1e-6, "case {case}: union longer than the call");
        if let Some(ratio) = s.talk_ratio_agent {
            assert!((0.0..=1.0).contains(&ratio), "case {case}");
        }
        // Overlap is bounded by each party's talk.
        assert!(s.overlap_s <= tc.min(ta) + 1e-6, "case {case}: overlap {} > min talk", s.overlap_s);
        // Event lists are in time order.
        assert!(sorted(&s.interruptions.events.iter().map(|e| e.at).collect::<Vec<_>>()), "case {case}");
        assert!(sorted(&s.backchannels.events.iter().map(|e| e.at).collect::<Vec<_>>()), "case {case}");
        assert!(sorted(&s.responses.iter().map(|e| e.at).collect::<Vec<_>>()), "case {case}");
        assert!(sorted(&s.silent_gaps.iter().map(|g| g.start).collect::<Vec<_>>()), "case {case}");
        assert_eq!(s.interruptions.count, s.interruptions.by_agent + s.interruptions.by_customer);
        for l in [&s.agent_response_latency, &s.customer_response_latency] {
            if let (Some(min), Some(mean), Some(max)) = (l.min_s, l.mean_s, l.max_s) {
                assert!(min <= mean + 1e-6 && mean <= max + 1e-6, "case {case}");
            }
        }
        // 10 ms and 20 ms framings agree within one (20 ms) frame.
        let s20 = run(&c, &a, dur, 20);
        for (x, y) in [(&s.segments.customer, &s20.segments.customer), (&s.segments.agent, &s20.segments.agent)] {
            assert_eq!(x.len(), y.len(), "case {case}: segment counts differ");
            for (p, q) in x.iter().zip(y.iter()) {
                assert!((p[0] - q[0]).abs() <= 0.02 + 1e-9 && (p[1] - q[1]).abs() <= 0.02 + 1e-9, "case {case}: {p:?} vs {q:?}");
            }
        }
        assert_eq!(s.interruptions.count, s20.interruptions.count, "case {case}");
        assert_eq!(s.responses.len(), s20.responses.len(), "case {case}");
    }
}
