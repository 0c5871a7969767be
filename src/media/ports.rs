//! Relay port pool: even/odd pairs (RTP on the even port, RTCP on the next, RFC 3550 §11) from
//! the configured range. Pure bookkeeping with time passed in; binding is the driver's job, and
//! a pair the OS refuses is skipped and retried later.
//!
//! Pairs are handed out in random order, and a freed pair cools down before it is used again:
//! after a restart the pool does not start again at the bottom of the range, where the streams
//! of calls that were up before the restart are still arriving, and late packets of a call that
//! just ended do not land in the next one. When only cooling pairs are left, the one freed
//! longest ago is used rather than refusing a call.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct PortPool {
    free: Vec<u16>,
    cooling: VecDeque<(Instant, u16)>,
    used: HashSet<u16>,
    cooldown: Duration,
    rng: u64,
}

impl PortPool {
    /// Pairs `(p, p+1)` for every even `p` with `p+1 <= max`, randomly seeded.
    pub fn new(min: u16, max: u16, cooldown: Duration) -> Self {
        let seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Self::with_seed(min, max, cooldown, seed)
    }
    pub fn with_seed(min: u16, max: u16, cooldown: Duration, seed: u64) -> Self {
        let free = (min..max).filter(|p| p % 2 == 0 && *p < max).collect();
        PortPool { free, cooling: VecDeque::new(), used: HashSet::new(), cooldown, rng: seed | 1 }
    }
    fn next_random(&mut self) -> u64 {
        // xorshift64*: not for secrets, only so that the order is not predictable from the range.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Take a random pair that is not cooling down (or, failing that, the longest-cooled one).
    pub fn take(&mut self, now: Instant) -> Option<u16> {
        while let Some(&(at, p)) = self.cooling.front() {
            if now < at + self.cooldown {
                break;
            }
            self.cooling.pop_front();
            self.free.push(p);
        }
        let p = if self.free.is_empty() {
            self.cooling.pop_front()?.1
        } else {
            let i = (self.next_random() % self.free.len() as u64) as usize;
            self.free.swap_remove(i)
        };
        self.used.insert(p);
        Some(p)
    }
    /// Return a pair that could not be bound (someone else holds it): it cools down too.
    pub fn skip(&mut self, p: u16, now: Instant) {
        self.release(p, now)
    }
    pub fn release(&mut self, p: u16, now: Instant) {
        if self.used.remove(&p) {
            self.cooling.push_back((now, p));
        }
    }
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
    pub fn capacity(&self) -> usize {
        self.used.len() + self.free.len() + self.cooling.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_exhaustion() {
        let t0 = Instant::now();
        let mut p = PortPool::new(30000, 30005, Duration::from_secs(60));
        assert_eq!(p.capacity(), 3);
        let mut got: Vec<u16> = (0..3).map(|_| p.take(t0).unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![30000, 30002, 30004]);
        assert_eq!(p.take(t0), None);
        p.release(30002, t0);
        p.release(30002, t0);
        assert_eq!(p.in_use(), 2);
        // Only a cooling pair is left: it is used rather than refusing.
        assert_eq!(p.take(t0), Some(30002));
    }

    /// Two pools (two runs of the process) do not start at the same ports, and a freed pair is
    /// not handed out again while others are free.
    #[test]
    fn random_order_and_cool_down() {
        let t0 = Instant::now();
        let first = |seed| {
            let mut p = PortPool::with_seed(30000, 31000, Duration::from_secs(60), seed);
            (0..20).map(|_| p.take(t0).unwrap()).collect::<Vec<_>>()
        };
        let (a, b) = (first(1), first(2));
        assert_ne!(a, b);
        let bottom: Vec<u16> = (0..20).map(|i| 30000 + 2 * i).collect();
        assert_ne!(a, bottom, "not the bottom of the range in order");
        let mut p = PortPool::with_seed(30000, 30100, Duration::from_secs(60), 7);
        let x = p.take(t0).unwrap();
        p.release(x, t0);
        for _ in 0..49 {
            assert_ne!(p.take(t0 + Duration::from_secs(1)), Some(x), "cooling pair reused while others are free");
        }
        assert_eq!(p.take(t0 + Duration::from_secs(1)), Some(x), "last resort");
    }
}
