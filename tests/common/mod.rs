//! Helpers shared by the integration tests: fixture paths, temporary folders, a seeded generator.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "pixtral-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tiny fixture checkpoint `tests/fixtures/tiny/LAYOUT` converted to GGUF, once per test binary and
/// (layout, types): `(text, mmproj)`. One conversion at a time, so two tests asking for the same file never
/// race on it (the converter writes the mmproj first, so an existing text file means both are complete).
pub fn tiny_gguf(
    layout: &str,
    outtype: pixtral::quant::GgmlType,
    vision_type: pixtral::quant::GgmlType,
) -> (PathBuf, PathBuf) {
    use std::sync::{Mutex, OnceLock};
    // A static is never dropped, so the folder goes at process exit (the harness returns from main or calls exit).
    static DIR: OnceLock<TempDir> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    extern "C" fn remove_dir() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d.path());
        }
    }
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = DIR.get_or_init(|| {
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_dir) };
        TempDir::new("tiny")
    });
    let out = dir.join(&format!("{layout}-{outtype}-{vision_type}.gguf"));
    if !out.exists() {
        let src = fixtures().join("tiny").join(layout);
        let opts = pixtral::convert::Options {
            src,
            out: out.clone(),
            outtype,
            vision_type,
            force: true,
            progress: false,
            vision_act: None,
            mix: None,
        };
        pixtral::convert::convert(&opts).unwrap();
    }
    let mmproj = pixtral::gguf::mmproj_path(&out);
    (out, mmproj)
}

/// Copy the GGUF `src` to `dst` with its metadata edited by `edit` (tensor data copied by name; a new tensor
/// gets zeros).
pub fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<(String, pixtral::gguf::Value)>, &mut Vec<pixtral::gguf::TensorSpec>),
) {
    use pixtral::gguf::{GgufFile, GgufWriter, TensorSpec};
    let f = GgufFile::open(src).unwrap();
    let mut meta = f.header.metadata.clone();
    let mut specs: Vec<TensorSpec> =
        f.header.tensors.iter().map(|t| TensorSpec { name: t.name.clone(), ty: t.ty, ne: t.ne.clone() }).collect();
    edit(&mut meta, &mut specs);
    let mut w = GgufWriter::new(std::fs::File::create(dst).unwrap(), &meta, &specs).unwrap();
    for s in &specs {
        let n = s.n_bytes().unwrap() as usize;
        match f.header.tensor(&s.name) {
            Some(t) if t.n_bytes as usize == n => w.write_data(f.data(t)).unwrap(),
            _ => w.write_data(&vec![0u8; n]).unwrap(),
        }
    }
    w.finish().unwrap();
}

/// Set (or add) one metadata key.
pub fn set(meta: &mut Vec<(String, pixtral::gguf::Value)>, key: &str, v: pixtral::gguf::Value) {
    match meta.iter_mut().find(|(k, _)| k == key) {
        Some(kv) => kv.1 = v,
        None => meta.push((key.to_string(), v)),
    }
}

/// Copy a fixture checkpoint folder (flat) into `dst`.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// The quant crate's seeded generator (splitmix64), with the helpers these tests use.
pub mod pty;

pub use pixtral::quant::selftest::Rng;

pub trait RngExt {
    fn below(&mut self, n: u64) -> u64;
}

impl RngExt for Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// FNV-1a 64, the digest the fixture scripts write.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h = 0xCBF29CE484222325u64;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001B3);
    }
    h
}

/// The full 131072-token Tekken vocabulary (`tests/fixtures/tekken-full`) as mistral-common's `tekken.json`
/// (v3 layout: no special-token list), written into `dir`; returns its path.
pub fn write_full_tekken(dir: &TempDir) -> PathBuf {
    let fx = fixtures().join("tekken-full");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("config.json")).unwrap()).unwrap();
    let ranks = std::fs::read_to_string(fx.join("ranks.b64")).unwrap();
    let vocab: Vec<serde_json::Value> = ranks
        .lines()
        .enumerate()
        .map(|(i, b)| serde_json::json!({"rank": i, "token_bytes": b, "token_str": null}))
        .collect();
    let path = dir.join("tekken.json");
    std::fs::write(&path, serde_json::json!({"config": cfg, "vocab": vocab}).to_string()).unwrap();
    path
}
