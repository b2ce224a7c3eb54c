//! Hostile model files (docs/SECURITY.md): every byte of a real GGUF header corrupted or cut, and files that
//! parse but describe nonsense. Each must give `Ok` or a typed error quickly, naming what is wrong, and
//! without allocating more than a few MB. A thread-local peak counter in the global allocator measures that
//! (other test threads do not disturb it).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::TempDir;
use common::{rewrite, set};
use pixtral::gguf::{Header, TensorSpec, Value};
use pixtral::quant::GgmlType;

struct PeakCounting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // try_with: allocations during thread teardown find the slots gone; they are not ours to count
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + delta);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
        }
    });
}

unsafe impl GlobalAlloc for PeakCounting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note(n as isize - l.size() as isize);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: PeakCounting = PeakCounting;

/// Run `f`, returning its result and the peak of bytes it held on this thread.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    (r, PEAK.with(|p| p.get()).max(0) as usize)
}

/// The tiny model converted once: (text GGUF, mmproj).
fn tiny() -> (PathBuf, PathBuf) {
    common::tiny_gguf("hf", GgmlType::Q8_0, GgmlType::F16)
}

#[test]
fn every_corrupted_or_truncated_header_byte_gives_ok_or_an_error_quickly_and_cheaply() {
    let (text, _) = tiny();
    let good = std::fs::read(&text).unwrap();
    let region = Header::parse(&good).unwrap().data_offset as usize;
    eprintln!("header + metadata + tensor infos: {region} bytes of {}", good.len());
    let mut b = good.clone();
    let (mut n_ok, mut n_err, mut slowest, mut heaviest) = (0usize, 0usize, Duration::ZERO, 0usize);
    let mut check = |bytes: &[u8], what: &dyn Fn() -> String| {
        let t0 = Instant::now();
        let (r, peak) = peak_of(|| Header::parse(bytes).map(|h| h.tensors.len()));
        let dt = t0.elapsed();
        assert!(dt < Duration::from_millis(100), "{}: {dt:?}", what());
        // the tiny file's parsed header holds ~0.5 MB; a corrupted count must not buy more than a few MB
        assert!(peak < 4 << 20, "{}: {peak} bytes", what());
        slowest = slowest.max(dt);
        heaviest = heaviest.max(peak);
        match r {
            Ok(_) => n_ok += 1,
            Err(_) => n_err += 1,
        }
    };
    for i in 0..region {
        let orig = b[i];
        for v in [0x00, 0xFF, 0x7F, orig ^ (1 << (i % 8))] {
            b[i] = v;
            check(&b, &|| format!("byte {i} = {v:#04x}"));
        }
        b[i] = orig;
        check(&good[..i], &|| format!("truncated at {i}"));
    }
    eprintln!("{n_ok} ok, {n_err} errors; slowest {slowest:?}, peak {heaviest} bytes");
    assert!(n_err > region, "most corruptions of structure must be caught ({n_err} of {})", 5 * region);
}

fn remove(meta: &mut Vec<(String, Value)>, key: &str) {
    meta.retain(|(k, _)| k != key);
}

type Edit = Box<dyn FnOnce(&mut Vec<(String, Value)>, &mut Vec<TensorSpec>)>;

#[test]
fn nonsense_hyper_parameters_fail_at_load_naming_the_key_before_allocating() {
    let (text, mmproj) = tiny();
    let dir = TempDir::new("schema");
    let text_cases: Vec<(&str, &str, Edit)> = vec![
        (
            "kv heads not dividing heads",
            "llama.attention.head_count_kv",
            Box::new(|m, _| set(m, "llama.attention.head_count_kv", Value::U32(3))),
        ),
        (
            "zero heads",
            "llama.attention.head_count",
            Box::new(|m, _| set(m, "llama.attention.head_count", Value::U32(0))),
        ),
        ("zero dim", "llama.embedding_length", Box::new(|m, _| set(m, "llama.embedding_length", Value::U32(0)))),
        ("a billion layers", "llama.block_count", Box::new(|m, _| set(m, "llama.block_count", Value::U32(1 << 30)))),
        ("missing layer count", "llama.block_count", Box::new(|m, _| remove(m, "llama.block_count"))),
        (
            "huge head_dim",
            "llama.attention.key_length",
            Box::new(|m, _| set(m, "llama.attention.key_length", Value::U32(1 << 30))),
        ),
        (
            "NaN rope base",
            "llama.rope.freq_base",
            Box::new(|m, _| set(m, "llama.rope.freq_base", Value::F32(f32::NAN))),
        ),
        (
            "wrong type",
            "llama.embedding_length",
            Box::new(|m, _| set(m, "llama.embedding_length", Value::String("64".into()))),
        ),
        (
            "vocab != embedding rows",
            "tokenizer.ggml.tokens",
            Box::new(|m, _| {
                let Some((_, Value::Array(t, items))) = m.iter().find(|(k, _)| k == "tokenizer.ggml.tokens").cloned()
                else {
                    panic!()
                };
                set(m, "tokenizer.ggml.tokens", Value::Array(t, items[..items.len() - 1].to_vec()));
                let Some((_, Value::Array(t, items))) =
                    m.iter().find(|(k, _)| k == "tokenizer.ggml.token_type").cloned()
                else {
                    panic!()
                };
                set(m, "tokenizer.ggml.token_type", Value::Array(t, items[..items.len() - 1].to_vec()));
            }),
        ),
        ("missing tensor", "blk.1.ffn_down.weight", Box::new(|_, t| t.retain(|s| s.name != "blk.1.ffn_down.weight"))),
        (
            "wrong tensor shape",
            "blk.0.attn_q.weight",
            Box::new(|_, t| {
                let s = t.iter_mut().find(|s| s.name == "blk.0.attn_q.weight").unwrap();
                s.ne[1] += 32;
            }),
        ),
    ];
    for (what, key, edit) in text_cases {
        let p = dir.join("t.gguf");
        rewrite(&text, &p, edit);
        let (r, peak) = peak_of(|| pixtral::Model::load(&p).map(|_| ()));
        let e = r.expect_err(what).to_string();
        assert!(e.contains(key), "{what}: {e:?} does not name {key}");
        assert!(peak < 8 << 20, "{what}: {peak} bytes before the error");
    }
    let vision_cases: Vec<(&str, &str, Edit)> = vec![
        ("patch size 0", "clip.vision.patch_size", Box::new(|m, _| set(m, "clip.vision.patch_size", Value::U32(0)))),
        (
            "image size 100000",
            "clip.vision.image_size",
            Box::new(|m, _| set(m, "clip.vision.image_size", Value::U32(100_000))),
        ),
        (
            "heads not dividing dim",
            "clip.vision.attention.head_count",
            Box::new(|m, _| set(m, "clip.vision.attention.head_count", Value::U32(3))),
        ),
        ("missing block count", "clip.vision.block_count", Box::new(|m, _| remove(m, "clip.vision.block_count"))),
        // (a missing mean/std defaults to Pixtral's constants; a malformed one is an error)
        (
            "image mean of 2 values",
            "clip.vision.image_mean",
            Box::new(|m, _| set(m, "clip.vision.image_mean", Value::f32_array(&[0.5, 0.5]))),
        ),
        (
            "negative image std",
            "clip.vision.image_std",
            Box::new(|m, _| set(m, "clip.vision.image_std", Value::f32_array(&[0.5, -0.5, 0.5]))),
        ),
        (
            "huge dim",
            "clip.vision.embedding_length",
            Box::new(|m, _| set(m, "clip.vision.embedding_length", Value::U32(1 << 24))),
        ),
        (
            "missing patch embedding",
            "v.patch_embd.weight",
            Box::new(|_, t| t.retain(|s| s.name != "v.patch_embd.weight")),
        ),
    ];
    for (what, key, edit) in vision_cases {
        let p = dir.join("v.gguf");
        rewrite(&mmproj, &p, edit);
        let (r, peak) = peak_of(|| pixtral::model::vision::VisionModel::load(&p).map(|_| ()));
        let e = r.expect_err(what).to_string();
        assert!(e.contains(key), "{what}: {e:?} does not name {key}");
        assert!(peak < 8 << 20, "{what}: {peak} bytes before the error");
    }
}

/// A text GGUF and an mmproj that do not belong together: a projection width that cannot enter the decoder is an
/// error naming the key; another checkpoint's fingerprint and an image_std equal to image_mean are warnings;
/// files without our fingerprint key (llama.cpp's) get the width check only.
#[test]
fn mismatched_pairs_are_refused_or_warned_from_the_headers() {
    use pixtral::gguf::GgufFile;
    use pixtral::model::check_pair;
    let (text, mmproj) = tiny();
    let dir = TempDir::new("pair");
    let head = |p: &PathBuf| GgufFile::open(p).unwrap().header.clone();
    let (t, v) = (head(&text), head(&mmproj));
    assert!(t.get_str("pixtral.checkpoint.fingerprint").is_ok());
    assert_eq!(check_pair(&t, &v).unwrap(), Vec::<String>::new(), "a converted pair");

    let edited = |src: &PathBuf, name: &str, edit: Edit| {
        let p = dir.join(name);
        rewrite(src, &p, edit);
        head(&p)
    };
    let other = edited(
        &mmproj,
        "other.mmproj.gguf",
        Box::new(|m, _| set(m, "pixtral.checkpoint.fingerprint", Value::String("0123456789abcdef".into()))),
    );
    let w = check_pair(&t, &other).unwrap();
    assert!(w.len() == 1 && w[0].contains("different checkpoints") && w[0].contains("0123456789abcdef"), "{w:?}");

    // without our key on either side: no fingerprint verdict, only the width check
    let bare_v = edited(&mmproj, "bare.mmproj.gguf", Box::new(|m, _| remove(m, "pixtral.checkpoint.fingerprint")));
    assert_eq!(check_pair(&t, &bare_v).unwrap(), Vec::<String>::new());
    let fx = common::fixtures().join("tiny/llama-cpp");
    let (lt, lv) = (head(&fx.join("text-f32.gguf")), head(&fx.join("mmproj-f32.gguf")));
    assert_eq!(check_pair(&lt, &lv).unwrap(), Vec::<String>::new(), "llama.cpp's files of the same model");
    let narrow = edited(
        &mmproj,
        "narrow.mmproj.gguf",
        Box::new(|m, _| {
            remove(m, "pixtral.checkpoint.fingerprint");
            set(m, "clip.vision.projection_dim", Value::U32(32));
        }),
    );
    let e = check_pair(&lt, &narrow).expect_err("width 32 into a 64-wide decoder").to_string();
    assert!(e.contains("clip.vision.projection_dim") && e.contains("32") && e.contains("64"), "{e}");
    // the width check holds with fingerprints too (an error, not a warning)
    let narrow_fp =
        edited(&mmproj, "narrow-fp.mmproj.gguf", Box::new(|m, _| set(m, "clip.vision.projection_dim", Value::U32(32))));
    assert!(check_pair(&t, &narrow_fp).is_err());

    // old llama.cpp converters wrote the mean as the std
    let mean_std = edited(
        &mmproj,
        "meanstd.mmproj.gguf",
        Box::new(|m, _| {
            let mean = m.iter().find(|(k, _)| k == "clip.vision.image_mean").unwrap().1.clone();
            set(m, "clip.vision.image_std", mean);
        }),
    );
    let w = check_pair(&t, &mean_std).unwrap();
    assert!(w.len() == 1 && w[0].contains("image_std") && w[0].contains("image_mean"), "{w:?}");
}
