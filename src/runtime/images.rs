//! Images on the request path: read and checked from their headers ([`ImageHead`]), keyed by content
//! ([`ImageKey`]), encoded once ([`EncodedImage`]) and kept in a bounded LRU cache ([`ImageCache`]) so an image sent
//! again — the next turn of a chat, a saved conversation loaded back, another request to a server — is not
//! encoded again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::image::{ImageLimits, PreprocessConfig, Preprocessed, RgbF32};
use crate::runtime::request::ImageSource;

/// SHA-256 of what the vision tower sees: the source (encoded bytes, or raw pixels with their size) and the
/// preprocessing (longest side, patch size, normalisation). Equal keys, equal features; a collision would need
/// one in SHA-256, so a server can share cached features between clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageKey(pub [u8; 32]);

impl ImageKey {
    fn of(kind: &[u8], w: usize, h: usize, data: &[u8], cfg: &PreprocessConfig) -> ImageKey {
        let mut s = Sha256::new();
        s.update(kind);
        for v in [w as u64, h as u64, cfg.max_side as u64, cfg.patch as u64, data.len() as u64] {
            s.update(v.to_le_bytes());
        }
        for v in cfg.mean.iter().chain(&cfg.std) {
            s.update(v.to_le_bytes());
        }
        s.update(data);
        ImageKey(s.finalize().into())
    }

    /// The key of features made some other way (a test, a caller's own encoder): the hash of the features.
    pub fn of_features(grid_w: usize, grid_h: usize, embeds: &[f32]) -> ImageKey {
        let mut s = Sha256::new();
        s.update(b"features");
        s.update((grid_w as u64).to_le_bytes());
        s.update((grid_h as u64).to_le_bytes());
        for v in embeds {
            s.update(v.to_le_bytes());
        }
        ImageKey(s.finalize().into())
    }
}

/// The pixels of an image, still encoded (or raw RGB8).
#[derive(Debug, Clone)]
enum Pixels {
    Encoded(Arc<[u8]>),
    Rgb8(Arc<[u8]>),
}

/// An image read and checked from its header, nothing decoded: its size, its patch grid at the request's
/// preprocessing, its tokens, its key.
#[derive(Debug, Clone)]
pub struct ImageHead {
    /// How errors and messages name it (the path, `<stdin>`, `<rgb8 WxH>`).
    pub name: PathBuf,
    /// The file it was read from, when it was (kept by saved conversations).
    pub path: Option<PathBuf>,
    pub width: usize,
    pub height: usize,
    pub grid_w: usize,
    pub grid_h: usize,
    pub key: ImageKey,
    pixels: Pixels,
    cfg: PreprocessConfig,
}

impl ImageHead {
    /// Read `source` (a file within `lim.max_bytes`), check its header against `lim` and compute its grid at
    /// `cfg`. Errors name the image: missing or unreadable file, not an image, too large, no pixels, a raw buffer
    /// whose length is not `width · height · 3`.
    pub fn read(source: &ImageSource, cfg: &PreprocessConfig, lim: &ImageLimits) -> Result<ImageHead> {
        let name = source.name();
        let (path, pixels, width, height) = match source {
            ImageSource::Path(p) => {
                if p.is_dir() {
                    let e = std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory, not an image");
                    return Err(Error::Io { path: p.clone(), source: e });
                }
                let bytes = crate::image::read_bounded(p, lim)?;
                let (w, h) = crate::image::dimensions_of(p, &bytes, lim)?;
                (Some(p.clone()), Pixels::Encoded(bytes.into()), w, h)
            }
            ImageSource::Encoded { bytes, .. } => {
                if bytes.len() as u64 > lim.max_bytes {
                    return Err(crate::image::too_large(&name, lim));
                }
                let (w, h) = crate::image::dimensions_of(&name, bytes, lim)?;
                (None, Pixels::Encoded(bytes.as_slice().into()), w, h)
            }
            &ImageSource::Rgb8 { width, height, ref pixels } => {
                check_rgb8(&name, width, height, pixels.len(), lim)?;
                (None, Pixels::Rgb8(pixels.as_slice().into()), width, height)
            }
        };
        Ok(ImageHead::new(name, path, pixels, width, height, cfg))
    }

    fn new(name: PathBuf, path: Option<PathBuf>, pixels: Pixels, w: usize, h: usize, cfg: &PreprocessConfig) -> Self {
        let key = match &pixels {
            Pixels::Encoded(b) => ImageKey::of(b"encoded", 0, 0, b, cfg),
            Pixels::Rgb8(b) => ImageKey::of(b"rgb8", w, h, b, cfg),
        };
        let (grid_w, grid_h) = crate::image::grid(w, h, cfg.max_side, cfg.patch);
        ImageHead { name, path, width: w, height: h, grid_w, grid_h, key, pixels, cfg: cfg.clone() }
    }

    /// Tokens the image takes in the prompt: a row of `[IMG]` and a break per patch row.
    pub fn n_tokens(&self) -> usize {
        (self.grid_w + 1) * self.grid_h
    }

    pub fn n_patches(&self) -> usize {
        self.grid_w * self.grid_h
    }

    /// Decode and preprocess: the vision tower's input `(3, gh·P, gw·P)`.
    pub fn decode(&self, lim: &ImageLimits) -> Result<Preprocessed> {
        let rgb = match &self.pixels {
            Pixels::Encoded(b) => crate::image::decode(&self.name, b, lim)?,
            Pixels::Rgb8(b) => {
                RgbF32 { width: self.width, height: self.height, data: b.iter().map(|&v| v as f32).collect() }
            }
        };
        let pre = crate::image::preprocess(&rgb, &self.cfg);
        if (pre.grid_w, pre.grid_h) != (self.grid_w, self.grid_h) {
            // a decoder that disagrees with its own header
            return Err(Error::Invalid(format!(
                "{}: decoded as {}x{} but the header says {}x{}",
                self.name.display(),
                rgb.width,
                rgb.height,
                self.width,
                self.height
            )));
        }
        Ok(pre)
    }
}

fn check_rgb8(name: &Path, w: usize, h: usize, len: usize, lim: &ImageLimits) -> Result<()> {
    crate::image::check_size(name, w as u64, h as u64, lim)?;
    if len != w * h * 3 {
        return Err(Error::Invalid(format!(
            "{}: {len} bytes of pixels, but {w}x{h} RGB8 is {} bytes",
            name.display(),
            w * h * 3
        )));
    }
    Ok(())
}

/// An image ready for the decoder: its patch grid and adapter output `(grid_w · grid_h, text dim)`.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// Where it came from (kept by [`crate::Conversation::to_json`]).
    pub path: Option<PathBuf>,
    pub grid_w: usize,
    pub grid_h: usize,
    pub embeds: Vec<f32>,
    /// What the KV cache's prefix reuse compares the image's tokens by.
    pub key: ImageKey,
}

impl EncodedImage {
    /// Features made outside [`crate::Engine`], keyed by their own hash.
    pub fn new(path: Option<PathBuf>, grid_w: usize, grid_h: usize, embeds: Vec<f32>) -> EncodedImage {
        let key = ImageKey::of_features(grid_w, grid_h, &embeds);
        EncodedImage { path, grid_w, grid_h, embeds, key }
    }

    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        self.embeds.len() * 4
    }
}

/// Encoded images by key, at most `max_bytes` of features; the least recently used go first. An image larger
/// than the whole budget is not kept.
#[derive(Debug, Default)]
pub struct ImageCache {
    max_bytes: usize,
    used: usize,
    clock: u64,
    /// key → (image, last use)
    map: HashMap<ImageKey, (Arc<EncodedImage>, u64)>,
}

impl ImageCache {
    pub fn new(max_bytes: usize) -> ImageCache {
        ImageCache { max_bytes, ..Default::default() }
    }

    pub fn get(&mut self, key: &ImageKey) -> Option<Arc<EncodedImage>> {
        self.clock += 1;
        let e = self.map.get_mut(key)?;
        e.1 = self.clock;
        Some(e.0.clone())
    }

    pub fn insert(&mut self, image: Arc<EncodedImage>) {
        let size = image.bytes();
        if size > self.max_bytes || self.map.contains_key(&image.key) {
            return;
        }
        while self.used + size > self.max_bytes {
            let Some((&oldest, _)) = self.map.iter().min_by_key(|(_, (_, t))| *t) else { break };
            if let Some((gone, _)) = self.map.remove(&oldest) {
                self.used -= gone.bytes();
            }
        }
        self.clock += 1;
        self.used += size;
        self.map.insert(image.key, (image, self.clock));
    }

    /// Images held, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        (self.map.len(), self.used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(tag: u8, n: usize) -> Arc<EncodedImage> {
        Arc::new(EncodedImage::new(None, n, 1, vec![tag as f32; n]))
    }

    #[test]
    fn the_cache_keeps_the_most_recently_used_within_its_budget() {
        let mut c = ImageCache::new(3 * 400);
        let (a, b, d) = (image(1, 100), image(2, 100), image(3, 100));
        for i in [&a, &b, &d] {
            c.insert(i.clone());
        }
        assert_eq!(c.usage(), (3, 1200));
        assert!(c.get(&a.key).is_some()); // a is now newer than b
        c.insert(image(4, 100));
        assert!(c.get(&b.key).is_none(), "the least recently used goes first");
        assert!(c.get(&a.key).is_some() && c.get(&d.key).is_some());
        // larger than the whole budget: not kept, nothing evicted for it
        c.insert(image(5, 1000));
        assert_eq!(c.usage(), (3, 1200));
    }

    #[test]
    fn keys_follow_content_and_preprocessing() {
        let cfg = PreprocessConfig { max_side: 64, patch: 16, mean: [0.5; 3], std: [0.25; 3] };
        let lim = ImageLimits::default();
        let px = |v: u8| ImageSource::Rgb8 { width: 4, height: 2, pixels: vec![v; 24] };
        let k = |s: &ImageSource, c: &PreprocessConfig| ImageHead::read(s, c, &lim).unwrap().key;
        assert_eq!(k(&px(7), &cfg), k(&px(7), &cfg));
        assert_ne!(k(&px(7), &cfg), k(&px(8), &cfg));
        assert_ne!(k(&px(7), &cfg), k(&px(7), &PreprocessConfig { max_side: 32, ..cfg.clone() }));
        // same bytes, other shape
        let wide = ImageSource::Rgb8 { width: 8, height: 1, pixels: vec![7; 24] };
        assert_ne!(k(&px(7), &cfg), k(&wide, &cfg));
    }

    #[test]
    fn raw_buffers_are_checked_before_use() {
        let cfg = PreprocessConfig { max_side: 64, patch: 16, mean: [0.5; 3], std: [0.25; 3] };
        let lim = ImageLimits::default();
        let err = |w, h, n| {
            ImageHead::read(&ImageSource::Rgb8 { width: w, height: h, pixels: vec![0; n] }, &cfg, &lim)
                .unwrap_err()
                .to_string()
        };
        assert!(err(4, 2, 23).contains("23 bytes of pixels, but 4x2 RGB8 is 24 bytes"), "{}", err(4, 2, 23));
        assert!(err(0, 2, 0).contains("no pixels"));
        assert!(err(20000, 1, 60000).contains("limit"));
    }
}
