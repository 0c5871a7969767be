//! Test-only code, compiled only for the library's own tests: the whole-call simulation
//! harness ([`sim`]).
pub mod sim;
