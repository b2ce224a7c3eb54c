//! Replays the committed fuzz corpus (fuzz/corpus/TARGET/*: minimised inputs and every crasher found, see
//! scripts/fuzz.sh) through the same entry points the cargo-fuzz targets call, on stable, in seconds: a
//! regression of any fixed crash fails `cargo test`.

use std::path::PathBuf;

fn replay(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        // a panic names the input that caused it
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "{target}: {} panicked", p.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
    eprintln!("{target}: {n} inputs replayed");
}

#[test]
fn gguf_parse() {
    replay("gguf_parse", pixtral::fuzz::gguf_parse);
}

#[test]
fn model_load() {
    replay("model_load", pixtral::fuzz::model_load);
}

#[test]
fn safetensors_source() {
    replay("safetensors_source", pixtral::fuzz::safetensors_source);
}

#[test]
fn image_preprocess() {
    replay("image_preprocess", pixtral::fuzz::image_preprocess);
}

#[test]
fn tokenizer_roundtrip() {
    replay("tokenizer_roundtrip", pixtral::fuzz::tokenizer_roundtrip);
}
