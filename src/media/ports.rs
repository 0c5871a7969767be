//! Relay port pool: even/odd pairs (RTP on the even port, RTCP on the next, RFC 3550 §11) from
//! the configured range. Pure bookkeeping; binding is the driver's job, and a pair the OS refuses
//! is skipped and retried later.

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub struct PortPool {
    free: VecDeque<u16>,
    used: HashSet<u16>,
}

impl PortPool {
    /// Pairs `(p, p+1)` for every even `p` with `p+1 <= max`.
    pub fn new(min: u16, max: u16) -> Self {
        let free = (min..max).step_by(2).filter(|p| p % 2 == 0 && *p < max).collect();
        PortPool { free, used: HashSet::new() }
    }
    /// Take the least recently freed pair (spreads reuse so late packets of an old call do not
    /// land in a new one).
    pub fn take(&mut self) -> Option<u16> {
        let p = self.free.pop_front()?;
        self.used.insert(p);
        Some(p)
    }
    /// Return a pair that could not be bound; it goes to the back of the queue.
    pub fn skip(&mut self, p: u16) {
        self.release(p)
    }
    pub fn release(&mut self, p: u16) {
        if self.used.remove(&p) {
            self.free.push_back(p);
        }
    }
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
    pub fn capacity(&self) -> usize {
        self.used.len() + self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn pairs_and_exhaustion() {
        let mut p = PortPool::new(30000, 30005);
        assert_eq!(p.capacity(), 3);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        let c = p.take().unwrap();
        assert_eq!((a, b, c), (30000, 30002, 30004));
        assert_eq!(p.take(), None);
        p.release(b);
        p.release(b);
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.take(), Some(30002));
    }
}
