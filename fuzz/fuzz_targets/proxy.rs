#![no_main]
//! See `hearken::fuzzing::proxy` for the invariants checked.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hearken::fuzzing::proxy(data));
