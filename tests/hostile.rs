//! Hostile inputs (docs/SECURITY.md): images that lie about their size, oversized files, odd formats, and
//! what the CLI does with them. Every case must end in a clear error or a correct result, never a panic, a hang
//! or a huge allocation.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{fixtures, TempDir};
use pixtral::image::{dimensions, load, load_with_limits, ImageLimits};

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG whose header claims `w × h` RGB pixels, followed by a little (not matching) image data.
fn lying_png(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // a zlib stream of 200 zero bytes (deflate stored block)
    let mut z = vec![0x78, 0x01, 0x01, 200, 0, !200u8, 0xFF];
    z.extend(std::iter::repeat_n(0u8, 200));
    z.extend_from_slice(&[0, 0, 0, 1]);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn err_of(path: &Path) -> String {
    match load(path) {
        Ok(i) => panic!("{} decoded to {}x{}", path.display(), i.width, i.height),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_small_png_claiming_a_huge_size_is_refused_from_its_header() {
    let dir = TempDir::new("hostile-png");
    let p = dir.join("bomb.png");
    let png = lying_png(100_000, 100_000);
    assert!(png.len() < 400);
    std::fs::write(&p, &png).unwrap();
    let t0 = Instant::now();
    let e = err_of(&p);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert!(e.contains("100000x100000") && e.contains("16384 px"), "{e}");
    assert!(dimensions(&p, &ImageLimits::default()).is_err());
    // one side over the limit, the area fine; the area over the limit, each side fine
    for (w, h, what) in [(20_000, 10, "16384 px"), (8000, 8000, "40 MP")] {
        std::fs::write(&p, lying_png(w, h)).unwrap();
        let e = err_of(&p);
        assert!(e.contains(&format!("{w}x{h}")) && e.contains(what), "{e}");
    }
    // within the limits, the header is believed and the data found wanting: a decode error, no panic
    std::fs::write(&p, lying_png(640, 480)).unwrap();
    assert_eq!(dimensions(&p, &ImageLimits::default()).unwrap(), (640, 480));
    assert!(err_of(&p).contains("cannot decode"), "{}", err_of(&p));
}

#[test]
fn oversized_empty_and_garbage_files_are_errors() {
    let dir = TempDir::new("hostile-files");
    let big = dir.join("big.png");
    let mut data = lying_png(64, 64);
    data.resize(21 << 20, 0);
    std::fs::write(&big, &data).unwrap();
    let e = err_of(&big);
    assert!(e.contains("larger than the 20 MB limit"), "{e}");
    // a lower limit applies too
    let small = ImageLimits { max_bytes: 100, ..Default::default() };
    let p = dir.join("ok.png");
    std::fs::write(&p, lying_png(4, 4)).unwrap();
    assert!(load_with_limits(&p, &small).unwrap_err().to_string().contains("limit"));

    for (name, bytes) in [
        ("zero.png", lying_png(0, 5)),
        ("empty.png", Vec::new()),
        ("text.png", b"hello, I am not an image".to_vec()),
        ("truncated.png", lying_png(64, 64)[..30].to_vec()),
        ("jpeg-header-only.jpg", vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16]),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, &bytes).unwrap();
        let e = err_of(&p);
        assert!(e.contains(name), "{name}: {e}");
    }
    assert!(err_of(&dir.join("missing.png")).contains("missing.png"));
}

#[test]
fn every_truncation_and_byte_flip_of_a_real_png_is_ok_or_an_error() {
    let src = std::fs::read(fixtures().join("images/rgb_100x60.png")).unwrap();
    let dir = TempDir::new("hostile-flip");
    let p = dir.join("x.png");
    let mut rng = common::Rng(3);
    let mut n_err = 0;
    for i in 0..400 {
        let mut b = src.clone();
        if i < 100 {
            b.truncate(i * src.len() / 100);
        } else {
            for _ in 0..1 + i % 4 {
                let at = (rng.next_u64() % b.len() as u64) as usize;
                b[at] ^= 1 << (rng.next_u64() % 8);
            }
        }
        std::fs::write(&p, &b).unwrap();
        n_err += load(&p).is_err() as usize;
    }
    assert!(n_err >= 100, "{n_err}");
}

#[test]
fn cmyk_jpeg_and_animated_gif_decode_like_pil() {
    let h = fixtures().join("hostile");
    let want: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(h.join("cmyk.json")).unwrap()).unwrap();
    let img = load(&h.join("cmyk.jpg")).unwrap();
    assert_eq!((img.width, img.height), (16, 8));
    for (side, x) in [("left", 3), ("right", 12)] {
        let px = &img.data[(4 * 16 + x) * 3..][..3];
        for (c, w) in px.iter().zip(want[side].as_array().unwrap()) {
            // JPEG decoders differ by a few levels
            assert!((c - w.as_f64().unwrap() as f32).abs() <= 6.0, "{side}: {px:?} vs {}", want[side]);
        }
    }
    // animated: the first frame (red)
    let gif = load(&h.join("anim.gif")).unwrap();
    assert_eq!((gif.width, gif.height), (10, 6));
    assert!(gif.data.chunks(3).all(|p| p == [255.0, 0.0, 0.0]), "{:?}", &gif.data[..6]);
}
