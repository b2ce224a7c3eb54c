//! `include/pixtral.h` is what cbindgen makes of `src/lib.rs` today: a stale header fails here (and so CI).
//! `PIXTRAL_BLESS=1 cargo test -p pixtral-capi` rewrites it.

use std::path::PathBuf;

#[test]
fn the_committed_header_is_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not read src/lib.rs")
        .write(&mut fresh);
    let path = dir.join("include/pixtral.h");
    if std::env::var_os("PIXTRAL_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: run `PIXTRAL_BLESS=1 cargo test -p pixtral-capi` and commit it",
        path.display()
    );
}
