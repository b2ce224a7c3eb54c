//! Preprocessing against mistral-common (`scripts/gen_vision_reference.py`): the patch grid for 651 (size, max
//! side) cases, and the normalized pixels of committed test images.

mod common;

use common::fixtures;
use pixtral::image::{grid, load, preprocess, PreprocessConfig};

fn cfg(max_side: usize) -> PreprocessConfig {
    PreprocessConfig {
        max_side,
        patch: 16,
        mean: pixtral::convert::config::IMAGE_MEAN,
        std: pixtral::convert::config::IMAGE_STD,
    }
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
