//! Image preprocessing, following mistral-common (`tokens/tokenizers/image.py`), the training-time
//! reference, not transformers' variant:
//! 1. decode (PNG, JPEG, WebP, GIF first frame) to the pixels PIL's `Image.open` gives, then make RGB as
//!    mistral-common's `_convert_to_rgb` does: an "RGB" image is kept as it is (a truecolour PNG's tRNS colour
//!    stays opaque), anything else goes through `convert("RGBA")` (gray/palette tRNS, a GIF's transparent index
//!    become alpha) and is composited on white with PIL's `paste` arithmetic. The modes, case by case, and our
//!    deliberate deviations (16-bit gray) are in docs/images.md; tests/image.rs checks each against
//!    mistral-common's pixels (`tests/fixtures/images/corpus`);
//! 2. grid: `ratio = max(h/M, w/M)`; if `ratio > 1`: `w = max(round(w/ratio), 1)`, `h` likewise (Python's
//!    round-half-to-even); `gw = (w−1)//P + 1`, `gh = (h−1)//P + 1`;
//! 3. resize the *original* image to exactly `(gw·P, gh·P)` with OpenCV's `INTER_CUBIC` on float32 (A = −0.75,
//!    pixel-centre mapping, replicated border, horizontal pass then vertical, all in f32);
//! 4. `x/255`, minus mean, over std, channel-first.

use std::path::Path;

use crate::error::{Error, Result};

/// An RGB image with float samples in [0, 255], row-major `(h, w, 3)`.
#[derive(Debug, Clone)]
pub struct RgbF32 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// A preprocessed image: the patch grid and the normalized pixels `(3, gh·P, gw·P)`.
#[derive(Debug, Clone)]
pub struct Preprocessed {
    pub grid_w: usize,
    pub grid_h: usize,
    pub patch: usize,
    pub pixels: Vec<f32>,
}

impl Preprocessed {
    pub fn n_patches(&self) -> usize {
        self.grid_w * self.grid_h
    }
    pub fn width(&self) -> usize {
        self.grid_w * self.patch
    }
    pub fn height(&self) -> usize {
        self.grid_h * self.patch
    }
}

/// The preprocessing constants of a vision tower (from the mmproj metadata).
#[derive(Debug, Clone)]
pub struct PreprocessConfig {
    /// Longest side `M` before patching (1024 for Pixtral-12B); `--image-max-side` lowers it.
    pub max_side: usize,
    pub patch: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// PIL's `DIV255`: `(v + 128 + ((v + 128) >> 8)) >> 8`.
fn div255(v: u32) -> u32 {
    let t = v + 128;
    ((t >> 8) + t) >> 8
}

/// RGBA over white, as mistral-common's `_convert_to_rgb` does it for every mode but "RGB": PIL's `paste` onto a
/// white RGBA image with the alpha as mask (`DIV255(255·(255−a) + v·a)`), then the alpha dropped. `a = 255` gives
/// `v` back, so opaque pixels are exact.
fn over_white(rgba: [u8; 4]) -> [f32; 3] {
    let a = rgba[3] as u32;
    [0, 1, 2].map(|c| div255(255 * (255 - a) + rgba[c] as u32 * a) as f32)
}

fn rgb_from(w: usize, h: usize, pixels: impl Iterator<Item = [u8; 4]>) -> RgbF32 {
    let mut data = Vec::with_capacity(w * h * 3);
    pixels.for_each(|p| data.extend_from_slice(&over_white(p)));
    RgbF32 { width: w, height: h, data }
}

/// A decoded JPEG or WebP → RGB as mistral-common's `_convert_to_rgb` does it: PIL opens these as "RGB", "L",
/// "CMYK" (converted by the JPEG decoder here) or "RGBA", so alpha is the only transparency there is. (PNG and
/// GIF, whose transparency PIL keeps outside the pixels, go through [`decode_png`] and [`decode_gif`].)
pub fn to_rgb(img: image::DynamicImage) -> RgbF32 {
    use image::DynamicImage as D;
    let (w, h) = (img.width() as usize, img.height() as usize);
    match img {
        D::ImageRgb8(b) => RgbF32 { width: w, height: h, data: b.into_raw().into_iter().map(|v| v as f32).collect() },
        // 16-bit samples keep their high byte (v·257 >> 8 = v for 8-bit sources)
        other => rgb_from(w, h, other.to_rgba16().pixels().map(|p| p.0.map(|v| (v >> 8) as u8))),
    }
}

/// PNG's colour types as PIL opens them (`PngImagePlugin._MODES`, `chunk_tRNS`) and mistral-common then converts:
/// - truecolour, 8 or 16 bits: "RGB" (16-bit: the high byte); a tRNS colour goes to `info["transparency"]`, which
///   `_convert_to_rgb` never reads (it returns "RGB" as it is): the tRNS colour stays opaque;
/// - gray 1/2/4/8 bits: "1" or "L" (scaled by 255/(2^d−1)) with tRNS in `info`; `convert("RGBA")` makes a pixel
///   transparent when its 8-bit value equals the tRNS value cut to 8 bits (1-bit: tRNS ≠ 0 means 255). So a 2- or
///   4-bit tRNS of 1 makes nothing transparent (the pixels are 0, 85, ... or 0, 17, ...), where PNG's own rule
///   would: we follow PIL;
/// - gray 16 bits: PIL's "I;16" clips at 255; we keep the high byte and make the sample equal to tRNS transparent
///   (PNG's rule): a deliberate deviation (docs/images.md);
/// - palette: "P" with tRNS as palette alphas; gray + alpha and RGBA, 8 or 16 bits: the high byte of each sample.
///
/// The first image (an APNG's default image) is decoded, as PIL does.
fn decode_png(bytes: &[u8], max_alloc: u64) -> std::result::Result<RgbF32, String> {
    use png::{BitDepth, ColorType, Transformations};
    let limits = png::Limits { bytes: usize::try_from(max_alloc).unwrap_or(usize::MAX) };
    let mut dec = png::Decoder::new_with_limits(std::io::Cursor::new(bytes), limits);
    // EXPAND: palette → RGB(A) with the tRNS alphas; gray under 8 bits scaled to 8; tRNS on gray / truecolour
    // also becomes alpha there, which we recompute (gray) or drop (truecolour) below
    dec.set_transformations(Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| e.to_string())?;
    let (src, src_depth) = (reader.info().color_type, reader.info().bit_depth);
    // gray tRNS as the png crate keeps it: the low byte under 16 bits (PIL cuts it to 8 bits too), else 2 bytes BE
    let trns = reader.info().trns.as_deref().map(<[u8]>::to_vec);
    let mut buf = vec![0u8; reader.output_buffer_size().ok_or("the image is too large")?];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (out, out_depth) = reader.output_color_type();
    let bytes_per_sample = if out_depth == BitDepth::Sixteen { 2 } else { 1 };
    let stride = out.samples() * bytes_per_sample;
    let hi = |px: &[u8], k: usize| px[k * bytes_per_sample];
    let gray_alpha = |px: &[u8]| -> u8 {
        let transparent = match (src_depth, trns.as_deref()) {
            (BitDepth::Sixteen, Some(&[t0, t1, ..])) => [px[0], px[1]] == [t0, t1],
            (BitDepth::One, Some(&[t, ..])) => px[0] == if t != 0 { 255 } else { 0 },
            (_, Some(&[t, ..])) => px[0] == t,
            _ => false,
        };
        if transparent {
            0
        } else {
            255
        }
    };
    let rows = buf[..h * frame.line_size].chunks_exact(frame.line_size);
    let pixels = rows.flat_map(|row| row[..w * stride].chunks_exact(stride)).map(|px| match src {
        ColorType::Grayscale => [hi(px, 0), hi(px, 0), hi(px, 0), gray_alpha(px)],
        ColorType::GrayscaleAlpha => [hi(px, 0), hi(px, 0), hi(px, 0), hi(px, 1)],
        ColorType::Rgb => [hi(px, 0), hi(px, 1), hi(px, 2), 255],
        ColorType::Indexed | ColorType::Rgba => {
            [hi(px, 0), hi(px, 1), hi(px, 2), if out.samples() == 4 { hi(px, 3) } else { 255 }]
        }
    });
    Ok(rgb_from(w, h, pixels))
}

/// A GIF's first frame as PIL opens it (`GifImagePlugin`): "P" (or "L" without any colour table: the index is
/// the gray level) on a canvas the size of the screen, grown to hold the frame if it reaches past it. Outside the
/// frame the canvas holds the transparent index if the frame has one, else index 0 (its colour, opaque: not the
/// background colour). The transparent index then becomes alpha 0 in `convert("RGBA")`: white.
fn decode_gif(bytes: &[u8], max_alloc: u64, lim: &ImageLimits) -> std::result::Result<RgbF32, String> {
    // Without any colour table PIL opens "L", the index being the gray level; the gif crate refuses such a file,
    // so it gets that gray ramp as its global table (flag in byte 10 of the 13-byte header, the table after it).
    let with_ramp: Vec<u8>;
    let bytes = if bytes.len() >= 13 && bytes[10] & 0x80 == 0 {
        let ramp: Vec<u8> = (0..=255u8).flat_map(|i| [i; 3]).collect();
        with_ramp = [&bytes[..10], &[bytes[10] | 0x87], &bytes[11..13], &ramp, &bytes[13..]].concat();
        &with_ramp[..]
    } else {
        bytes
    };
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    opts.set_memory_limit(gif::MemoryLimit::Bytes(std::num::NonZeroU64::new(max_alloc.max(1)).unwrap()));
    let mut dec = opts.read_info(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let (sw, sh) = (dec.width() as usize, dec.height() as usize);
    let global = dec.global_palette().map(<[u8]>::to_vec);
    let f = dec.read_next_frame().map_err(|e| e.to_string())?.ok_or("the GIF has no frame")?;
    let (fx, fy, fw, fh) = (f.left as usize, f.top as usize, f.width as usize, f.height as usize);
    let (w, h) = (sw.max(fx + fw), sh.max(fy + fh));
    if w > lim.max_side as usize || h > lim.max_side as usize || w as u64 * h as u64 > lim.max_pixels {
        return Err(format!("the first frame makes the image {w}x{h}, over the limit"));
    }
    let palette = f.palette.as_deref().or(global.as_deref());
    let mut canvas = vec![f.transparent.unwrap_or(0); w * h];
    for (y, row) in f.buffer.chunks_exact(fw.max(1)).take(fh).enumerate() {
        canvas[(fy + y) * w + fx..][..fw].copy_from_slice(row);
    }
    let color = |i: u8| -> [u8; 4] {
        let a = if Some(i) == f.transparent { 0 } else { 255 };
        match palette {
            // an index past a short palette reads black
            Some(p) => p.get(i as usize * 3..i as usize * 3 + 3).map_or([0, 0, 0, a], |c| [c[0], c[1], c[2], a]),
            None => [i, i, i, a],
        }
    };
    Ok(rgb_from(w, h, canvas.into_iter().map(color)))
}

/// What an image file may ask of us; checked before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// encoded file size
    pub max_bytes: u64,
    /// width × height, from the header
    pub max_pixels: u64,
    /// either side, from the header
    pub max_side: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_bytes: 20 << 20, max_pixels: 40_000_000, max_side: 16384 }
    }
}

pub(crate) fn too_large(path: &Path, lim: &ImageLimits) -> Error {
    Error::Invalid(format!("{}: the image file is larger than the {} MB limit", path.display(), lim.max_bytes >> 20))
}

/// The format and dimensions from an image's header, checked against `lim` (nothing decoded).
fn header_checked<R: std::io::BufRead + std::io::Seek>(path: &Path, r: R, lim: &ImageLimits) -> Result<(u32, u32)> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let reader = image::ImageReader::new(r).with_guessed_format().map_err(io)?;
    if reader.format().is_none() {
        return Err(Error::Invalid(format!("{}: not a PNG, JPEG, WebP or GIF image", path.display())));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::Invalid(format!("{}: cannot read the image header: {e}", path.display())))?;
    check_size(path, w as u64, h as u64, lim)?;
    Ok((w, h))
}

/// An image of `w × h` (from a header, or a caller's raw buffer) within `lim`, and with pixels.
pub(crate) fn check_size(path: &Path, w: u64, h: u64, lim: &ImageLimits) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::Invalid(format!("{}: the image is {w}x{h}: it has no pixels", path.display())));
    }
    if w > lim.max_side as u64 || h > lim.max_side as u64 || w.saturating_mul(h) > lim.max_pixels {
        return Err(Error::Invalid(format!(
            "{}: the image is {w}x{h} ({:.1} MP); the limit is {} px a side and {:.0} MP",
            path.display(),
            w as f64 * h as f64 / 1e6,
            lim.max_side,
            lim.max_pixels as f64 / 1e6
        )));
    }
    Ok(())
}

/// Read a whole image file, at most `lim.max_bytes`: regular files, and also pipes, FIFOs and `/dev/stdin`
/// (read sequentially: nothing here seeks).
pub fn read_bounded(path: &Path, lim: &ImageLimits) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    read_bounded_from(path, file, lim)
}

/// [`read_bounded`] from any reader (`path` names it in errors): standard input for `--image -`.
pub fn read_bounded_from(path: &Path, r: impl std::io::Read, lim: &ImageLimits) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    // one byte past the limit tells "at the limit" from "over it" without trusting metadata
    r.take(lim.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > lim.max_bytes {
        return Err(too_large(path, lim));
    }
    Ok(bytes)
}

/// The dimensions `(width, height)` of an encoded image held in memory, from its header, within `limits`.
pub fn dimensions_of(path: &Path, bytes: &[u8], limits: &ImageLimits) -> Result<(usize, usize)> {
    let (w, h) = header_checked(path, std::io::Cursor::new(bytes), limits)?;
    Ok((w as usize, h as usize))
}

/// The dimensions `(width, height)` of an image file from its header, within `limits`, without decoding
/// pixels (to count an image's tokens before paying for it). A regular file is read only as far as the header
/// (its size from the file system); a pipe or FIFO is read whole, within the byte limit.
pub fn dimensions(path: &Path, limits: &ImageLimits) -> Result<(usize, usize)> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(Error::Invalid(format!("{}: is a directory, not an image", path.display())));
    }
    if !meta.is_file() {
        return dimensions_of(path, &read_bounded_from(path, file, limits)?, limits);
    }
    if meta.len() > limits.max_bytes {
        return Err(too_large(path, limits));
    }
    let (w, h) = header_checked(path, std::io::BufReader::new(file), limits)?;
    Ok((w as usize, h as usize))
}

/// Read and decode an image file with the default [`ImageLimits`].
pub fn load(path: &Path) -> Result<RgbF32> {
    load_with_limits(path, &ImageLimits::default())
}

/// Read and decode an image file: size and dimensions checked first, the decoder's allocations capped, and a
/// decoder panic turned into an error. Animated images give their first frame.
pub fn load_with_limits(path: &Path, limits: &ImageLimits) -> Result<RgbF32> {
    decode(path, &read_bounded(path, limits)?, limits)
}

/// Decode an encoded image held in memory (`path` names it in errors), as [`load_with_limits`].
pub fn decode(path: &Path, bytes: &[u8], limits: &ImageLimits) -> Result<RgbF32> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(too_large(path, limits));
    }
    let (w, h) = header_checked(path, std::io::Cursor::new(bytes), limits)?;
    // the decoded buffer (up to 16-bit RGBA) and the decoder's working memory
    let max_alloc = w as u64 * h as u64 * 8 + (64 << 20);
    let decode = || -> std::result::Result<RgbF32, String> {
        match image::guess_format(bytes).map_err(|e| e.to_string())? {
            image::ImageFormat::Png => decode_png(bytes, max_alloc),
            image::ImageFormat::Gif => decode_gif(bytes, max_alloc, limits),
            _ => {
                let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
                    .with_guessed_format()
                    .map_err(|e| e.to_string())?;
                let mut l = image::Limits::default();
                l.max_image_width = Some(w);
                l.max_image_height = Some(h);
                l.max_alloc = Some(max_alloc);
                reader.limits(l);
                reader.decode().map(to_rgb).map_err(|e| e.to_string())
            }
        }
    };
    let img = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(r) => r.map_err(|e| Error::Invalid(format!("{}: cannot decode image: {e}", path.display())))?,
        Err(_) => return Err(Error::Invalid(format!("{}: the image decoder failed on this file", path.display()))),
    };
    if img.width == 0 || img.height == 0 {
        return Err(Error::Invalid(format!("{}: image has no pixels", path.display())));
    }
    Ok(img)
}

/// mistral-common's patch grid `(gw, gh)` for an image of `w × h`.
pub fn grid(w: usize, h: usize, max_side: usize, patch: usize) -> (usize, usize) {
    let (mut wf, mut hf) = (w as f64, h as f64);
    let ratio = f64::max(hf / max_side as f64, wf / max_side as f64);
    if ratio > 1.0 {
        // Python's round(): half to even
        wf = (wf / ratio).round_ties_even().max(1.0);
        hf = (hf / ratio).round_ties_even().max(1.0);
    }
    let (w, h) = (wf as usize, hf as usize);
    ((w - 1) / patch + 1, (h - 1) / patch + 1)
}

/// OpenCV `interpolateCubic`, A = −0.75.
fn cubic_coeffs(x: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let c0 = ((A * (x + 1.0) - 5.0 * A) * (x + 1.0) + 8.0 * A) * (x + 1.0) - 4.0 * A;
    let c1 = ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let c2 = ((A + 2.0) * (1.0 - x) - (A + 3.0)) * (1.0 - x) * (1.0 - x) + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// For each destination coordinate: 4 clamped source indices and their weights (OpenCV's pixel-centre mapping,
/// `f = (d + 0.5)·scale − 0.5` in f64 rounded to f32, replicated border).
fn taps(src: usize, dst: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let s = f.floor();
            let c = cubic_coeffs(f - s);
            let s = s as i64;
            let idx = [0, 1, 2, 3].map(|k| (s + k - 1).clamp(0, src as i64 - 1) as usize);
            (idx, c)
        })
        .collect()
}

/// OpenCV `cv2.resize(img, (dw, dh), interpolation=INTER_CUBIC)` on an `(h, w, 3)` float32 image.
pub fn resize_cubic(img: &RgbF32, dw: usize, dh: usize) -> RgbF32 {
    if (dw, dh) == (img.width, img.height) {
        return RgbF32 { width: dw, height: dh, data: img.data.clone() };
    }
    let (w, h) = (img.width, img.height);
    let xt = taps(w, dw);
    let yt = taps(h, dh);
    // horizontal pass on every source row: (h, dw, 3)
    let mut tmp = vec![0f32; h * dw * 3];
    for y in 0..h {
        let row = &img.data[y * w * 3..(y + 1) * w * 3];
        for (dx, (idx, c)) in xt.iter().enumerate() {
            for ch in 0..3 {
                tmp[(y * dw + dx) * 3 + ch] = row[idx[0] * 3 + ch] * c[0]
                    + row[idx[1] * 3 + ch] * c[1]
                    + row[idx[2] * 3 + ch] * c[2]
                    + row[idx[3] * 3 + ch] * c[3];
            }
        }
    }
    // vertical pass
    let mut out = vec![0f32; dh * dw * 3];
    for (dy, (idx, c)) in yt.iter().enumerate() {
        let r = |k: usize| &tmp[idx[k] * dw * 3..(idx[k] + 1) * dw * 3];
        let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
        let o = &mut out[dy * dw * 3..(dy + 1) * dw * 3];
        for i in 0..dw * 3 {
            o[i] = r0[i] * c[0] + r1[i] * c[1] + r2[i] * c[2] + r3[i] * c[3];
        }
    }
    RgbF32 { width: dw, height: dh, data: out }
}

/// Grid, resize, normalize: the model's input for one image.
pub fn preprocess(img: &RgbF32, cfg: &PreprocessConfig) -> Preprocessed {
    let (gw, gh) = grid(img.width, img.height, cfg.max_side, cfg.patch);
    let (w, h) = (gw * cfg.patch, gh * cfg.patch);
    let r = resize_cubic(img, w, h);
    let mut pixels = vec![0f32; 3 * w * h];
    for (i, px) in r.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            // numpy: (x / 255 − mean) / std in f32
            pixels[c * w * h + i] = (px[c] / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    Preprocessed { grid_w: gw, grid_h: gh, patch: cfg.patch, pixels }
}
