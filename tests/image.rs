//! Preprocessing against mistral-common (`scripts/gen_vision_reference.py`, `scripts/gen_image_corpus.py`): the
//! patch grid for 651 (size, max side) cases, the normalized pixels of committed test images, and one small image
//! per decode path (colour type, bit depth, transparency form, GIF frame layout, WebP / JPEG variant).

mod common;

use common::fixtures;
use pixtral::image::{grid, load, preprocess, PreprocessConfig};

fn cfg(max_side: usize) -> PreprocessConfig {
    PreprocessConfig {
        max_side,
        patch: 16,
        mean: pixtral::gguf::config::IMAGE_MEAN,
        std: pixtral::gguf::config::IMAGE_STD,
    }
}

/// The largest |got − want| and its index.
fn worst(got: &[f32], want: &[f32]) -> (f32, usize) {
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0.0, 0), |w, (i, d)| if d > w.0 { (d, i) } else { w })
}

#[test]
fn grids_equal_mistral_common() {
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("images/grids.json")).unwrap()).unwrap();
    let cases = g.as_array().unwrap();
    assert!(cases.len() >= 200);
    for c in cases {
        let u = |k: &str| c[k].as_u64().unwrap() as usize;
        assert_eq!(grid(u("w"), u("h"), u("max_side"), 16), (u("gw"), u("gh")), "{c}");
    }
}

/// Pixels of PNGs (lossless: the same bytes reach both pipelines) against mistral-common: the remaining
/// difference is float rounding order in the resize (OpenCV sums with SIMD), bounded by 1e-4 in normalized units
/// (under 1% of one 8-bit step: 1/255/std ≈ 0.015 is
/// one 8-bit step). JPEG decoders differ (libjpeg-turbo in PIL, zune-jpeg here): within a few 8-bit steps.
#[test]
fn pixels_equal_mistral_common() {
    let dir = fixtures().join("images");
    let cases: &[(&str, &[usize], f32)] = &[
        ("rgb_100x60.png", &[1024, 128], 1e-4),
        ("rgba_37x150.png", &[1024, 128], 1e-4),
        ("gray_64x64.png", &[1024, 128], 1e-4),
        ("palette_45x31.png", &[1024, 128], 1e-4),
        ("photo_1100x700.png", &[256], 1e-4),
        ("photo_80x50.jpg", &[1024, 128], 0.06),
    ];
    for (name, sides, bound) in cases {
        let img = load(&dir.join(name)).unwrap();
        for &m in *sides {
            let (shape, want) = pixtral::npy::read_f32(&dir.join(format!("{name}.{m}.npy"))).unwrap();
            let p = preprocess(&img, &cfg(m));
            assert_eq!(shape, vec![3, p.height(), p.width()], "{name} at {m}");
            let (mut worst, mut sum, mut at) = (0f32, 0f64, 0);
            for (i, (a, b)) in p.pixels.iter().zip(&want).enumerate() {
                let d = (a - b).abs();
                sum += d as f64;
                if d > worst {
                    worst = d;
                    at = i;
                }
            }
            let mean = sum / want.len() as f64;
            eprintln!("{name} M={m}: max |Δ| {worst:.2e} (index {at}), mean {mean:.2e}");
            assert!(
                worst <= *bound,
                "{name} M={m}: max |Δ| {worst} at {at} (got {}, want {}) > {bound}",
                p.pixels[at],
                want[at]
            );
        }
    }
}

/// Non-RGB inputs, written here with the `image` crate's encoders, against hand-computed RGB values.
#[test]
fn sixteen_bit_gray_alpha_and_gif_first_frame() {
    use image::{DynamicImage, ImageBuffer, Luma, LumaA, Rgb, Rgba};
    let dir = common::TempDir::new("img-kinds");
    // 16-bit RGB: the high byte survives (0x12ff → 0x12), as PIL does
    let p = dir.join("rgb16.png");
    DynamicImage::ImageRgb16(ImageBuffer::from_pixel(2, 2, Rgb([0x12ff, 0x8000, 0xffff]))).save(&p).unwrap();
    assert_eq!(&load(&p).unwrap().data[..3], &[18.0, 128.0, 255.0]);
    // gray + alpha: composited on white with PIL's rounding: 255·(255−a) + v·a, /255 rounded
    let p = dir.join("la.png");
    DynamicImage::ImageLumaA8(ImageBuffer::from_pixel(1, 1, LumaA([100u8, 128]))).save(&p).unwrap();
    let want = ((255 * 127 + 100 * 128) as f32 / 255.0).round();
    assert_eq!(load(&p).unwrap().data, vec![want; 3]);
    // fully transparent RGBA is white, opaque is itself
    let p = dir.join("rgba.png");
    let mut im = ImageBuffer::from_pixel(2, 1, Rgba([10u8, 20, 30, 0]));
    im.put_pixel(1, 0, Rgba([10, 20, 30, 255]));
    DynamicImage::ImageRgba8(im).save(&p).unwrap();
    assert_eq!(load(&p).unwrap().data, vec![255.0, 255.0, 255.0, 10.0, 20.0, 30.0]);
    // 16-bit gray
    let p = dir.join("gray16.png");
    DynamicImage::ImageLuma16(ImageBuffer::from_pixel(1, 1, Luma([0x4000u16]))).save(&p).unwrap();
    assert_eq!(load(&p).unwrap().data, vec![64.0; 3]);
    // animated GIF: the first frame
    let p = dir.join("anim.gif");
    {
        let f = std::fs::File::create(&p).unwrap();
        let mut enc = image::codecs::gif::GifEncoder::new(f);
        for c in [[250u8, 0, 0, 255], [0, 0, 250, 255]] {
            enc.encode_frame(image::Frame::new(ImageBuffer::from_pixel(4, 4, Rgba(c)))).unwrap();
        }
    }
    let first = load(&p).unwrap();
    assert!(first.data[0] > 200.0 && first.data[2] < 50.0, "{:?}", &first.data[..3]);
    // not an image, and an empty file: errors naming the file
    let p = dir.join("x.png");
    std::fs::write(&p, b"not a png").unwrap();
    assert!(load(&p).err().unwrap().to_string().contains("x.png"));
}

/// Every decode path against mistral-common (tests/fixtures/images/corpus, docs/images.md): PNG in each colour type
/// and bit depth with and without tRNS, Adam7, eXIf, APNG; GIF frame layouts, palettes, transparency; WebP lossless
/// and lossy, with alpha and animated; JPEG YCbCr, gray, CMYK, YCCK, EXIF. The images are one 16×16 patch (a few
/// 32 wide), so the resize is the identity and each pixel is compared straight after `_convert_to_rgb`. Bounds: 1e-4
/// for lossless files (float rounding only: one 8-bit step is ≈ 0.015), measured ones for lossy files (other
/// decoders). A documented deviation is compared with mistral-common's pipeline run on the image we decode to
/// (`<file>.ours.npy`), and its distance from mistral-common is printed.
#[test]
fn decode_paths_equal_mistral_common() {
    let dir = fixtures().join("images/corpus");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in cases {
        let file = c["file"].as_str().unwrap();
        let bound = c["bound"].as_f64().unwrap() as f32;
        let deviation = c.get("deviation").and_then(|d| d.as_str());
        let img = match load(&dir.join(file)) {
            Ok(img) => img,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let p = preprocess(&img, &cfg(1024));
        let (shape, theirs) = pixtral::npy::read_f32(&dir.join(format!("{file}.npy"))).unwrap();
        let (h, w) = (p.height(), p.width());
        if shape != vec![3, h, w] {
            failures.push(format!("{file}: shape {:?}, mistral-common {shape:?}", [3, h, w]));
            continue;
        }
        let want = match deviation {
            Some(_) => pixtral::npy::read_f32(&dir.join(format!("{file}.ours.npy"))).unwrap().1,
            None => theirs.clone(),
        };
        let (d, at) = worst(&p.pixels, &want);
        let (ch, y, x) = (at / (h * w), at / w % h, at % w);
        let line = format!(
            "{file}: max |Δ| {d:.2e} at (c {ch}, y {y}, x {x}): got {}, want {}; bound {bound:.0e}",
            p.pixels[at], want[at]
        );
        match deviation {
            Some(why) => eprintln!("{line}; deviation from mistral-common {:.3} ({why})", worst(&p.pixels, &theirs).0),
            None => eprintln!("{line}"),
        }
        if d > bound {
            failures.push(line);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases over their bound:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The PNG and GIF decoders written here (PIL's view of tRNS, GIF canvases) on each file cut inside its first 64
/// bytes (headers), at 40 more points, and with each of its first 64 bytes flipped: a decoded image or a decode error,
/// never a decoder panic (which `load` turns into "the image decoder failed").
#[test]
fn corpus_png_and_gif_truncated_or_flipped_decode_or_fail_cleanly() {
    let dir = fixtures().join("images/corpus");
    let tmp = common::TempDir::new("img-corpus-cut");
    let p = tmp.join("x");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".png") || name.ends_with(".gif")) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        let cuts = (0..len.min(64)).chain((64..len).step_by(len / 40 + 1)).map(|k| bytes[..k].to_vec());
        let flips = (0..len.min(64)).map(|k| {
            let mut b = bytes.clone();
            b[k] ^= 0xff;
            b
        });
        for b in cuts.chain(flips) {
            std::fs::write(&p, &b).unwrap();
            if let Err(e) = load(&p) {
                assert!(!e.to_string().contains("decoder failed"), "{name} ({} bytes): {e}", b.len());
            }
            n += 1;
        }
    }
    assert!(n > 1000, "{n}");
}
