//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz) and of the corpus replay test (`tests/fuzz_corpus.rs`):
//! one function per target, taking the raw input. Each must return normally for *every* input (errors are fine,
//! panics, hangs and huge allocations are the bugs). Not part of the stable API.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::gguf::Header;

/// A per-process scratch file for targets that need a path (the loaders map files).
fn scratch(name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pixtral-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write the fuzz scratch file");
    p
}

/// The strict GGUF parser on arbitrary bytes.
pub fn gguf_parse(data: &[u8]) {
    if let Ok(h) = Header::parse(data) {
        // what the loaders then ask of a parsed header
        for t in &h.tensors {
            let _ = h.tensor(&t.name);
        }
        let _ = h.get_str_array(crate::gguf::keys::TOKENIZER_TOKENS);
    }
}

/// A GGUF that parses, loaded as a text model and as an mmproj: the schema checks (config, tensor
/// table, tokenizer) on whatever the header says.
pub fn model_load(data: &[u8]) {
    if Header::parse(data).is_err() {
        return;
    }
    let p = scratch("model.gguf", data);
    if let Ok(m) = crate::Model::load(&p) {
        // a model that loads must also run a token
        let opts = crate::SessionOptions { ctx_size: 8, batch: 4, ..Default::default() };
        if crate::Session::bytes_needed(&m, &opts) < 64 << 20 {
            let mut s = crate::Session::new(&m, opts);
            let _ = s.eval(&[m.tokenizer.bos], None, None);
        }
    }
    let _ = crate::model::vision::VisionModel::load(&p);
}

/// The converter's safetensors reader: header, dtypes, offsets, and reading the first row of each tensor.
pub fn safetensors_source(data: &[u8]) {
    let p = scratch("model.safetensors", data);
    let dir = p.parent().unwrap_or(Path::new("."));
    let Ok(set) = pixtral_convert::source::SourceSet::single(dir, p.clone()) else { return };
    let mut buf = pixtral_convert::source::RowBuf::default();
    for (name, t) in &set.tensors {
        let row_len = t.shape.last().copied().unwrap_or(1).max(1);
        if t.shape.iter().product::<usize>() >= row_len && row_len <= 1 << 16 {
            let _ = set.read_rows(name, t, row_len, 0, 1, &mut buf);
        }
    }
}

/// Image decoding and preprocessing on an arbitrary file (limits lowered so each run stays fast).
pub fn image_preprocess(data: &[u8]) {
    let p = scratch("image", data);
    let limits = crate::image::ImageLimits { max_bytes: 1 << 20, max_pixels: 1 << 20, max_side: 4096 };
    if let Ok(img) = crate::image::load_with_limits(&p, &limits) {
        let cfg = crate::image::PreprocessConfig {
            max_side: 64,
            patch: 16,
            mean: crate::gguf::config::IMAGE_MEAN,
            std: crate::gguf::config::IMAGE_STD,
        };
        let pre = crate::image::preprocess(&img, &cfg);
        assert_eq!(pre.pixels.len(), 3 * pre.width() * pre.height());
        assert!(pre.pixels.iter().all(|v| v.is_finite()));
    }
}

/// Encode then decode any text with the tiny model's Tekken tokenizer: the text comes back, and no control
/// token is ever produced from text.
pub fn tokenizer_roundtrip(data: &[u8]) {
    static TOK: OnceLock<crate::model::tokenizer::Tokenizer> = OnceLock::new();
    let tok = TOK.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/hf");
        crate::model::tokenizer::Tokenizer::from_tokenizer_json(&dir).expect("the tiny tokenizer loads")
    });
    let text = String::from_utf8_lossy(data);
    let ids = tok.encode(&text);
    assert!(ids.iter().all(|&id| !tok.is_control(id)), "control id from text {text:?}");
    assert_eq!(tok.decode(&ids), text, "round trip");
}
