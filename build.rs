//! Links libvosk (speech recognition). Vosk ships no system package: `scripts/setup.sh` (run by
//! `make run` / `make test`) extracts `libvosk.so` from the PyPI wheel into `.deps/vosk/`. The
//! binary gets an rpath to that folder and to its own folder (`$ORIGIN`), so it runs with no
//! environment set; to deploy elsewhere, copy libvosk.so next to the binary or into the linker
//! path. `VOSK_LIB_DIR` overrides the folder.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=VOSK_LIB_DIR");
    let dir = match std::env::var_os("VOSK_LIB_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join(".deps/vosk"),
    };
    let lib = dir.join("libvosk.so");
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.exists() {
        panic!(
            "\n\nlibvosk.so not found in {}.\nRun `make setup` (scripts/setup.sh fetches it from the PyPI wheel vosk==0.3.45), \
             or set VOSK_LIB_DIR to a folder containing libvosk.so.\n",
            dir.display()
        );
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
}
