#![no_main]
//! See `hearken::fuzzing::siprec` for the invariants checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hearken::fuzzing::siprec(data));
