//! Hyper-parameters of the two model parts and their GGUF metadata: [`TextConfig`] (the Mistral-Nemo decoder)
//! and [`VisionConfig`] (Pixtral-ViT and the adapter), each with `to_gguf` (what the converter writes) and
//! `from_gguf` (what the loader reads, checked before anything is sized from it) side by side: the one
//! definition of each config's keys, round-trip tested below. Reading a checkpoint's own config files is the
//! converter's (`pixtral_convert::checkpoint`).

use crate::format::{keys, Value};
use crate::reader::{GgufError, Header};

/// Mistral-Nemo decoder hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_heads_kv: usize,
    pub head_dim: usize,
    pub ffn_dim: usize,
    pub vocab_size: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
    pub context_length: usize,
}

/// Pixtral-ViT + adapter hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub ffn_dim: usize,
    pub n_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// the feed-forward's activation
    pub act: VisionAct,
    pub img_token_id: u32,
    pub img_break_token_id: u32,
    pub img_end_token_id: u32,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl TextConfig {
    /// Pixtral-12B's text model (Mistral NeMo 12B), as its published config gives it: for sizing and tests.
    pub fn pixtral_12b() -> TextConfig {
        TextConfig {
            dim: 5120,
            n_layers: 40,
            n_heads: 32,
            n_heads_kv: 8,
            head_dim: 128,
            ffn_dim: 14336,
            vocab_size: 131072,
            rope_theta: 1e9,
            norm_eps: 1e-5,
            context_length: 131072,
        }
    }
}

impl VisionConfig {
    /// Pixtral-12B's vision tower (Pixtral-ViT, 1024 px images in 16 px patches), as published.
    pub fn pixtral_12b() -> VisionConfig {
        VisionConfig {
            dim: 1024,
            n_layers: 24,
            n_heads: 16,
            ffn_dim: 4096,
            n_channels: 3,
            image_size: 1024,
            patch_size: 16,
            rope_theta: 10000.0,
            norm_eps: VISION_NORM_EPS,
            act: VisionAct::Silu,
            img_token_id: 10,
            img_break_token_id: 12,
            img_end_token_id: 13,
            image_mean: IMAGE_MEAN,
            image_std: IMAGE_STD,
        }
    }
}

/// ref: mistral_common `image.py` DATASET_MEAN / DATASET_STD (the CLIP constants), also what the HF
/// `preprocessor_config.json` of Pixtral carries.
#[allow(clippy::excessive_precision)] // the reference's literals, as written there
pub const IMAGE_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const IMAGE_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];
/// Pixtral's vision RMSNorm eps is not in either config format (transformers hard-codes 1e-5).
pub const VISION_NORM_EPS: f32 = 1e-5;

/// The vision FFN activation, when the caller overrides the config's (`--vision-act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionAct {
    Silu,
    Gelu,
}

impl VisionAct {
    pub fn as_str(self) -> &'static str {
        match self {
            VisionAct::Silu => "silu",
            VisionAct::Gelu => "gelu",
        }
    }
}

impl std::str::FromStr for VisionAct {
    type Err = String;
    fn from_str(s: &str) -> Result<VisionAct, String> {
        match s.to_ascii_lowercase().as_str() {
            "silu" => Ok(VisionAct::Silu),
            "gelu" => Ok(VisionAct::Gelu),
            _ => Err(format!("{s:?} is not silu or gelu")),
        }
    }
}

// ---- GGUF metadata: one definition per config, written by the converter and read by the loader ----

/// A U32 key that must be > 0.
fn u32_key(h: &Header, key: &str) -> Result<usize, GgufError> {
    let v = h.get_u32(key)? as usize;
    if v == 0 {
        return Err(GgufError::BadValue { key: key.into(), msg: "must be > 0".into() });
    }
    Ok(v)
}

/// A positive finite F32 key, or `default` when absent.
fn positive_f32_or(h: &Header, key: &str, default: f32) -> Result<f32, GgufError> {
    match h.get(key) {
        None => Ok(default),
        Some(Value::F32(x)) if x.is_finite() && *x > 0.0 => Ok(*x),
        Some(other) => Err(GgufError::BadValue { key: key.into(), msg: format!("{other:?} is not a positive F32") }),
    }
}

fn bad<T>(key: &str, msg: String) -> Result<T, GgufError> {
    Err(GgufError::BadValue { key: key.into(), msg })
}

fn u32_value(x: usize) -> Value {
    Value::U32(x as u32)
}

impl TextConfig {
    /// `general.architecture` of a text GGUF.
    pub const ARCHITECTURE: &str = "llama";

    /// The `llama.*` keys, in the order the converter writes them.
    pub fn to_gguf(&self) -> Vec<(String, Value)> {
        let u = u32_value;
        vec![
            (keys::LLAMA_VOCAB_SIZE.into(), u(self.vocab_size)),
            (keys::LLAMA_CONTEXT_LENGTH.into(), u(self.context_length)),
            (keys::LLAMA_EMBEDDING_LENGTH.into(), u(self.dim)),
            (keys::LLAMA_BLOCK_COUNT.into(), u(self.n_layers)),
            (keys::LLAMA_FEED_FORWARD_LENGTH.into(), u(self.ffn_dim)),
            (keys::LLAMA_HEAD_COUNT.into(), u(self.n_heads)),
            (keys::LLAMA_HEAD_COUNT_KV.into(), u(self.n_heads_kv)),
            (keys::LLAMA_KEY_LENGTH.into(), u(self.head_dim)),
            (keys::LLAMA_VALUE_LENGTH.into(), u(self.head_dim)),
            (keys::LLAMA_ROPE_DIMENSION_COUNT.into(), u(self.head_dim)),
            (keys::LLAMA_ROPE_FREQ_BASE.into(), Value::F32(self.rope_theta)),
            (keys::LLAMA_RMS_EPS.into(), Value::F32(self.norm_eps)),
        ]
    }

    /// Text hyper-parameters from metadata only (ours or llama.cpp's), checked before anything is sized from
    /// them; an error names the key.
    pub fn from_gguf(h: &Header) -> Result<TextConfig, GgufError> {
        let arch = h.get_str(keys::GENERAL_ARCHITECTURE)?;
        if arch != Self::ARCHITECTURE {
            return bad(
                keys::GENERAL_ARCHITECTURE,
                format!("{arch:?}: a Pixtral text GGUF has architecture \"llama\" (is this an mmproj file?)"),
            );
        }
        let dim = u32_key(h, keys::LLAMA_EMBEDDING_LENGTH)?;
        let n_heads = u32_key(h, keys::LLAMA_HEAD_COUNT)?;
        let n_heads_kv = u32_key(h, keys::LLAMA_HEAD_COUNT_KV)?;
        // head_dim is NOT dim / n_heads for Mistral-Nemo (128 vs 160): key_length is authoritative
        let head_dim = match h.get(keys::LLAMA_KEY_LENGTH) {
            Some(_) => u32_key(h, keys::LLAMA_KEY_LENGTH)?,
            None => dim / n_heads,
        };
        let n_vocab_tokens = h.get_str_array(keys::TOKENIZER_TOKENS).map(|t| t.len()).unwrap_or(0);
        let vocab_size = match h.get(keys::LLAMA_VOCAB_SIZE) {
            Some(_) => u32_key(h, keys::LLAMA_VOCAB_SIZE)?,
            None => n_vocab_tokens,
        };
        let f32_or = |key: &str, default: f32| positive_f32_or(h, key, default);
        let cfg = TextConfig {
            dim,
            n_layers: u32_key(h, keys::LLAMA_BLOCK_COUNT)?,
            n_heads,
            n_heads_kv,
            head_dim,
            ffn_dim: u32_key(h, keys::LLAMA_FEED_FORWARD_LENGTH)?,
            vocab_size,
            rope_theta: f32_or(keys::LLAMA_ROPE_FREQ_BASE, 10000.0)?,
            norm_eps: f32_or(keys::LLAMA_RMS_EPS, 1e-5)?,
            context_length: h.get_u32(keys::LLAMA_CONTEXT_LENGTH).map(|c| c as usize).unwrap_or(4096),
        };
        if n_heads % n_heads_kv != 0 {
            return bad(
                keys::LLAMA_HEAD_COUNT_KV,
                format!("{n_heads} heads are not a multiple of {n_heads_kv} kv heads"),
            );
        }
        if head_dim % 2 != 0 || head_dim > 1024 {
            return bad(keys::LLAMA_KEY_LENGTH, format!("head_dim {head_dim} must be even and at most 1024"));
        }
        // ceilings far above any real model, so a corrupted count cannot size a huge buffer
        for (key, v, max) in [
            (keys::LLAMA_EMBEDDING_LENGTH, dim, 1 << 16),
            (keys::LLAMA_FEED_FORWARD_LENGTH, cfg.ffn_dim, 1 << 18),
            (keys::LLAMA_BLOCK_COUNT, cfg.n_layers, 1024),
            (keys::LLAMA_HEAD_COUNT, n_heads, 1024),
            (keys::LLAMA_VOCAB_SIZE, vocab_size, 1 << 22),
        ] {
            if v > max {
                return bad(key, format!("{v} is implausible (at most {max})"));
            }
        }
        if n_vocab_tokens != 0 && n_vocab_tokens != vocab_size {
            return bad(keys::TOKENIZER_TOKENS, format!("{n_vocab_tokens} tokens for vocab_size {vocab_size}"));
        }
        Ok(cfg)
    }
}

impl VisionConfig {
    /// `general.architecture` and `clip.projector_type` of an mmproj.
    pub const ARCHITECTURE: &str = "clip";
    pub const PROJECTOR: &str = "pixtral";

    /// The `clip.*` and `pixtral.image_*` keys, in the order the converter writes them; `projection_dim` is the
    /// text model's width (the adapter's output).
    pub fn to_gguf(&self, projection_dim: usize) -> Vec<(String, Value)> {
        let u = u32_value;
        vec![
            (keys::CLIP_HAS_VISION_ENCODER.into(), Value::Bool(true)),
            (keys::CLIP_PROJECTOR_TYPE.into(), Value::String(Self::PROJECTOR.into())),
            (keys::CLIP_USE_SILU.into(), Value::Bool(self.act == VisionAct::Silu)),
            (keys::CLIP_USE_GELU.into(), Value::Bool(self.act == VisionAct::Gelu)),
            (keys::CLIP_VISION_IMAGE_SIZE.into(), u(self.image_size)),
            (keys::CLIP_VISION_PATCH_SIZE.into(), u(self.patch_size)),
            (keys::CLIP_VISION_EMBEDDING_LENGTH.into(), u(self.dim)),
            (keys::CLIP_VISION_FEED_FORWARD_LENGTH.into(), u(self.ffn_dim)),
            (keys::CLIP_VISION_PROJECTION_DIM.into(), u(projection_dim)),
            (keys::CLIP_VISION_BLOCK_COUNT.into(), u(self.n_layers)),
            (keys::CLIP_VISION_HEAD_COUNT.into(), u(self.n_heads)),
            (keys::CLIP_VISION_LAYER_NORM_EPS.into(), Value::F32(self.norm_eps)),
            (keys::CLIP_VISION_IMAGE_MEAN.into(), Value::f32_array(&self.image_mean)),
            (keys::CLIP_VISION_IMAGE_STD.into(), Value::f32_array(&self.image_std)),
            (keys::CLIP_ROPE_FREQ_BASE.into(), Value::F32(self.rope_theta)),
            (keys::PIXTRAL_IMG_TOKEN_ID.into(), Value::U32(self.img_token_id)),
            (keys::PIXTRAL_IMG_BREAK_TOKEN_ID.into(), Value::U32(self.img_break_token_id)),
            (keys::PIXTRAL_IMG_END_TOKEN_ID.into(), Value::U32(self.img_end_token_id)),
        ]
    }

    /// Vision hyper-parameters and the projection width from mmproj metadata only (ours or llama.cpp's), checked
    /// before anything is allocated; an error names the key. Token ids default to Pixtral's (10, 12, 13), mean and
    /// std to [`IMAGE_MEAN`] / [`IMAGE_STD`], when the file (llama.cpp's) does not carry them.
    pub fn from_gguf(h: &Header) -> Result<(VisionConfig, usize), GgufError> {
        let arch = h.get_str(keys::GENERAL_ARCHITECTURE)?;
        let proj = h.get_str(keys::CLIP_PROJECTOR_TYPE).unwrap_or("");
        if arch != Self::ARCHITECTURE || proj != Self::PROJECTOR {
            return bad(
                keys::CLIP_PROJECTOR_TYPE,
                format!("architecture {arch:?}, projector {proj:?}: not a Pixtral mmproj file"),
            );
        }
        let f32_or = |key: &str, default: f32| positive_f32_or(h, key, default);
        let id = |key: &str, default: u32| match h.get(key) {
            Some(Value::U32(v)) => *v,
            _ => default,
        };
        let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3], GgufError> {
            match h.get(key) {
                None => Ok(default),
                Some(_) => {
                    let v = h.get_f32_array(key)?;
                    v.as_slice().try_into().or_else(|_| bad(key, format!("{} values, want 3", v.len())))
                }
            }
        };
        let silu = matches!(h.get(keys::CLIP_USE_SILU), Some(Value::Bool(true)));
        let gelu = matches!(h.get(keys::CLIP_USE_GELU), Some(Value::Bool(true)));
        let cfg = VisionConfig {
            dim: u32_key(h, keys::CLIP_VISION_EMBEDDING_LENGTH)?,
            n_layers: u32_key(h, keys::CLIP_VISION_BLOCK_COUNT)?,
            n_heads: u32_key(h, keys::CLIP_VISION_HEAD_COUNT)?,
            ffn_dim: u32_key(h, keys::CLIP_VISION_FEED_FORWARD_LENGTH)?,
            n_channels: 3,
            image_size: u32_key(h, keys::CLIP_VISION_IMAGE_SIZE)?,
            patch_size: u32_key(h, keys::CLIP_VISION_PATCH_SIZE)?,
            rope_theta: f32_or(keys::CLIP_ROPE_FREQ_BASE, 10000.0)?,
            norm_eps: f32_or(keys::CLIP_VISION_LAYER_NORM_EPS, 1e-5)?,
            // Pixtral's FFN is SiLU; a file that says gelu (and not silu) gets gelu
            act: if gelu && !silu { VisionAct::Gelu } else { VisionAct::Silu },
            img_token_id: id(keys::PIXTRAL_IMG_TOKEN_ID, 10),
            img_break_token_id: id(keys::PIXTRAL_IMG_BREAK_TOKEN_ID, 12),
            img_end_token_id: id(keys::PIXTRAL_IMG_END_TOKEN_ID, 13),
            image_mean: triple(keys::CLIP_VISION_IMAGE_MEAN, IMAGE_MEAN)?,
            image_std: triple(keys::CLIP_VISION_IMAGE_STD, IMAGE_STD)?,
        };
        let text_dim = u32_key(h, keys::CLIP_VISION_PROJECTION_DIM)?;
        if !cfg.dim.is_multiple_of(cfg.n_heads) || !(cfg.dim / cfg.n_heads).is_multiple_of(4) {
            return bad(
                keys::CLIP_VISION_HEAD_COUNT,
                format!("dim {} over {} heads must give a head_dim divisible by 4", cfg.dim, cfg.n_heads),
            );
        }
        if cfg.patch_size > 64 || cfg.image_size > 16384 || cfg.image_size < cfg.patch_size {
            return bad(
                keys::CLIP_VISION_IMAGE_SIZE,
                format!("image_size {} / patch_size {} are implausible", cfg.image_size, cfg.patch_size),
            );
        }
        for (key, v, max) in [
            (keys::CLIP_VISION_EMBEDDING_LENGTH, cfg.dim, 1 << 14),
            (keys::CLIP_VISION_FEED_FORWARD_LENGTH, cfg.ffn_dim, 1 << 16),
            (keys::CLIP_VISION_BLOCK_COUNT, cfg.n_layers, 256),
            (keys::CLIP_VISION_PROJECTION_DIM, text_dim, 1 << 16),
        ] {
            if v > max {
                return bad(key, format!("{v} is implausible (at most {max})"));
            }
        }
        if cfg.image_std.iter().any(|s| *s <= 0.0) {
            return bad(keys::CLIP_VISION_IMAGE_STD, "must be positive".into());
        }
        Ok((cfg, text_dim))
    }
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::GgufWriter;

    fn header(arch: &str, entries: Vec<(String, Value)>) -> Header {
        let mut meta = vec![(keys::GENERAL_ARCHITECTURE.to_string(), Value::String(arch.into()))];
        meta.extend(entries);
        let bytes = GgufWriter::new(Vec::new(), &meta, &[]).unwrap().finish().unwrap();
        Header::parse(&bytes).unwrap()
    }

    /// What the converter writes, the loader reads back as it was; every key written is one the loader reads.
    #[test]
    fn configs_round_trip_through_gguf_metadata() {
        let mut t = TextConfig::pixtral_12b();
        assert_eq!(TextConfig::from_gguf(&header(TextConfig::ARCHITECTURE, t.to_gguf())).unwrap(), t);
        t.rope_theta = 2.5e5;
        t.context_length = 4096;
        assert_eq!(TextConfig::from_gguf(&header(TextConfig::ARCHITECTURE, t.to_gguf())).unwrap(), t);
        for act in [VisionAct::Silu, VisionAct::Gelu] {
            let v =
                VisionConfig { act, image_mean: [0.5, 0.25, 0.125], img_token_id: 7, ..VisionConfig::pixtral_12b() };
            let h = header(VisionConfig::ARCHITECTURE, v.to_gguf(5120));
            assert_eq!(VisionConfig::from_gguf(&h).unwrap(), (v, 5120));
        }
    }

    /// A bad value is an error naming its key.
    #[test]
    fn bad_config_values_name_their_key() {
        let t = TextConfig::pixtral_12b();
        let mut m = t.to_gguf();
        m.retain(|(k, _)| k != keys::LLAMA_BLOCK_COUNT);
        let e = TextConfig::from_gguf(&header(TextConfig::ARCHITECTURE, m)).unwrap_err().to_string();
        assert!(e.contains(keys::LLAMA_BLOCK_COUNT), "{e}");
        let mut m = VisionConfig::pixtral_12b().to_gguf(5120);
        m.iter_mut().filter(|(k, _)| k == keys::CLIP_VISION_PATCH_SIZE).for_each(|(_, v)| *v = Value::U32(0));
        let e = VisionConfig::from_gguf(&header(VisionConfig::ARCHITECTURE, m)).unwrap_err().to_string();
        assert!(e.contains(keys::CLIP_VISION_PATCH_SIZE) && e.contains("must be > 0"), "{e}");
    }
}
