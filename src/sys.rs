//! Small Linux process facts for the daemon and the bench binaries: CPU time and page faults
//! from `getrusage`, and handing freed heap memory back to the system.

use std::os::raw::{c_int, c_long};

#[repr(C)]
struct Timeval {
    tv_sec: c_long,
    tv_usec: c_long,
}

/// `struct rusage` (Linux): two timevals, then 14 longs (maxrss, ixrss, idrss, isrss, minflt,
/// majflt, nswap, inblock, oublock, msgsnd, msgrcv, nsignals, nvcsw, nivcsw).
#[repr(C)]
struct Rusage {
    ru_utime: Timeval,
    ru_stime: Timeval,
    rest: [c_long; 14],
}

extern "C" {
    fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
}

/// Whose usage: the whole process (all threads) or the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Process,
    Thread,
}

/// Resource usage so far; NaN everywhere if `getrusage` failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub user_s: f64,
    pub sys_s: f64,
    pub minor_faults: f64,
    pub involuntary_switches: f64,
}

impl Usage {
    /// User + system CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

pub fn usage(who: Who) -> Usage {
    let mut r = Rusage { ru_utime: Timeval { tv_sec: 0, tv_usec: 0 }, ru_stime: Timeval { tv_sec: 0, tv_usec: 0 }, rest: [0; 14] };
    let who = match who {
        Who::Process => 0, // RUSAGE_SELF
        Who::Thread => 1,  // RUSAGE_THREAD
    };
    // SAFETY: `r` is a properly sized and aligned `struct rusage` that getrusage fills in.
    if unsafe { getrusage(who, &mut r) } != 0 {
        return Usage { user_s: f64::NAN, sys_s: f64::NAN, minor_faults: f64::NAN, involuntary_switches: f64::NAN };
    }
    let tv = |t: &Timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Usage { user_s: tv(&r.ru_utime), sys_s: tv(&r.ru_stime), minor_faults: r.rest[4] as f64, involuntary_switches: r.rest[13] as f64 }
}

/// User + system CPU seconds of the process or the calling thread.
pub fn cpu_s(who: Who) -> f64 {
    usage(who).cpu_s()
}

/// Busy seconds of the whole machine (all cores) from /proc/stat: user, nice, system, irq,
/// softirq, steal (USER_HZ = 100). Minus a process's own CPU time, it shows what others ran
/// meanwhile — benchmarks use it to say when their numbers are disturbed.
pub fn machine_busy_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return f64::NAN;
    };
    let Some(line) = stat.lines().next().filter(|l| l.starts_with("cpu ")) else {
        return f64::NAN;
    };
    let f: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) as f64 / 100.0
}

/// Hand freed heap memory back to the system (glibc keeps it otherwise: after dropping Vosk
/// recognizers RSS stays hundreds of MiB high until `malloc_trim`; docs/benchmarks.md).
pub fn release_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> c_int;
        }
        // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps and arenas.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = usage(Who::Process);
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = usage(Who::Process);
        assert!(after.cpu_s() > before.cpu_s(), "{before:?} -> {after:?}");
        assert!(cpu_s(Who::Thread) > 0.0);
        assert!(after.minor_faults >= before.minor_faults);
        assert!(machine_busy_s() > 0.0);
        release_heap();
    }
}

/// The open-file limit (soft, hard) of this process.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (rc == 0).then_some((r.rlim_cur, r.rlim_max))
}

/// Raise the soft open-file limit towards `want` (never above the hard limit); returns the
/// soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> Option<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft >= want {
        return Some(soft);
    }
    let r = libc::rlimit { rlim_cur: want.min(hard), rlim_max: hard };
    // SAFETY: setrlimit reads the struct we pass; it changes only this process's limit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    if rc == 0 {
        nofile_limit().map(|l| l.0)
    } else {
        Some(soft)
    }
}

/// Wall-clock time as Unix seconds (0 before 1970): for records and messages, never for timers.
pub fn unix_now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The processor's model name from /proc/cpuinfo ("unknown" elsewhere), for benchmark reports.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The command name and utime + stime (clock ticks) from the text of a /proc `stat` file.
/// The name (field 2) may contain spaces and parentheses; the fields after its closing
/// parenthesis start at field 3 (state), so utime (14) and stime (15) are the 12th and 13th.
pub fn stat_ticks(text: &str) -> Option<(&str, u64)> {
    let (a, b) = (text.find('(')?, text.rfind(')')?);
    let f: Vec<&str> = text.get(b + 1..)?.split_whitespace().collect();
    let at = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((text.get(a + 1..b)?, at(11)? + at(12)?))
}

/// utime + stime of a /proc `stat` file in seconds (USER_HZ = 100, the value on every
/// mainstream Linux build); NaN when it cannot be read.
pub fn stat_cpu_s(path: &std::path::Path) -> f64 {
    std::fs::read_to_string(path).ok().and_then(|s| stat_ticks(&s).map(|(_, t)| t as f64 / 100.0)).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod stat_tests {
    #[test]
    fn stat_ticks_reads_odd_command_names() {
        let s = "4242 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0";
        assert_eq!(super::stat_ticks(s), Some(("a (b) c", 150)));
        assert_eq!(super::stat_ticks("garbage"), None);
    }
}
