//! The fuzz binaries link `hearken`, which links libvosk; hearken's own build script gives only
//! its own binaries an rpath to it, so give these the same one (`VOSK_LIB_DIR` overrides, as
//! there).

fn main() {
    println!("cargo:rerun-if-env-changed=VOSK_LIB_DIR");
    let dir = match std::env::var_os("VOSK_LIB_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/vosk"),
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
}
