//! Checkpoint detection and hyper-parameters, from HF `config.json` (LlavaConfig: `text_config` mistral,
//! `vision_config` pixtral) or Mistral-native `params.json` (with a `vision_encoder` section).
//!
//! Hub `config.json` files omit every value equal to the transformers class default, so each field falls
//! back to that default (`MistralConfig`, `PixtralVisionConfig`, `LlavaConfig` in transformers). One
//! deliberate exception: an absent vision `hidden_act` defaults to `gelu` in `PixtralVisionConfig`, but
//! Pixtral's vision FFN was trained with SiLU (mistral-inference `FeedForward` uses `F.silu`, and the
//! Mistral-native format has no such field), so we take SiLU. An explicit `"gelu"` is refused: copies of
//! the HF config made before October 2024 say so by mistake, and converting as written gives a silently wrong
//! model; [`VisionAct`] (`--vision-act`) overrides whatever the config says.
//!
//! `general.name`: from the checkpoint, not from a folder that may be an HF cache snapshot hash (see
//! [`checkpoint_name`]).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{io_err, ConvertError, Result};
use crate::gguf::{keys, Value};
use crate::gguf_reader::{GgufError, Header};

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

/// ref: mistral_common `image.py` DATASET_MEAN / DATASET_STD (the CLIP constants), also what the HF
/// `preprocessor_config.json` of Pixtral carries.
#[allow(clippy::excessive_precision)] // the reference's literals, as written there
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

pub const IMAGE_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const IMAGE_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];
/// Pixtral's vision RMSNorm eps is not in either config format (transformers hard-codes 1e-5).
pub const VISION_NORM_EPS: f32 = 1e-5;
/// Pixtral-12B's training context (HF `max_position_embeddings`); params.json does not carry it.
pub const DEFAULT_CONTEXT_LENGTH: usize = 1_024_000;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// transformers `LlavaForConditionalGeneration` (`config.json`, `model*.safetensors`, `tokenizer.json`)
    Hf,
    /// mistral-inference (`params.json`, `consolidated.safetensors`, `tekken.json`)
    Mistral,
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub layout: Layout,
    pub name: String,
    pub text: TextConfig,
    pub vision: Option<VisionConfig>,
    pub vocab: crate::tokenizer::Vocab,
    /// What the reader changed or chose that the user should hear about (one line each, no trailing period).
    pub notes: Vec<String>,
}

/// A JSON object with its file, for error messages that name the field.
struct Obj<'a> {
    path: &'a Path,
    prefix: &'a str,
    v: &'a serde_json::Map<String, Json>,
}

impl<'a> Obj<'a> {
    fn field_err(&self, key: &str, msg: impl Into<String>) -> ConvertError {
        ConvertError::Field { path: self.path.to_path_buf(), field: format!("{}{key}", self.prefix), msg: msg.into() }
    }

    fn get(&self, key: &str) -> Option<&'a Json> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => default.ok_or_else(|| self.field_err(key, "missing")),
            Some(v) => {
                let n = v.as_u64().ok_or_else(|| self.field_err(key, format!("{v} is not a non-negative integer")))?;
                // one bound for every size: no Pixtral dimension comes near 2^24 (vocab 131072, ctx 1024000 aside)
                if n == 0 || n > 1 << 24 {
                    return Err(self.field_err(key, format!("{n} is out of range 1..=16777216")));
                }
                Ok(n as usize)
            }
        }
    }

    fn f32_or(&self, key: &str, default: Option<f32>) -> Result<f32> {
        match self.get(key) {
            None => default.ok_or_else(|| self.field_err(key, "missing")),
            Some(v) => {
                let x = v.as_f64().ok_or_else(|| self.field_err(key, format!("{v} is not a number")))? as f32;
                if !x.is_finite() || x <= 0.0 {
                    return Err(self.field_err(key, format!("{x} must be a positive finite number")));
                }
                Ok(x)
            }
        }
    }

    fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.to_owned()),
            Some(v) => Ok(v.as_str().ok_or_else(|| self.field_err(key, format!("{v} is not a string")))?.to_owned()),
        }
    }

    fn sub(&self, key: &'a str, prefix: &'a str) -> Result<Option<Obj<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let v = v.as_object().ok_or_else(|| self.field_err(key, "not an object"))?;
                Ok(Some(Obj { path: self.path, prefix, v }))
            }
        }
    }
}

fn read_json(path: &Path) -> Result<serde_json::Map<String, Json>> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.len() > 16 << 20 {
        return Err(ConvertError::Input {
            path: path.into(),
            msg: format!("{} bytes is too large for a config", meta.len()),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    match serde_json::from_str(&text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(ConvertError::Input { path: path.into(), msg: "not a JSON object".into() }),
        Err(e) => Err(ConvertError::Input { path: path.into(), msg: format!("invalid JSON: {e}") }),
    }
}

impl TextConfig {
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(ConvertError::Input { path: path.into(), msg });
        if !self.n_heads.is_multiple_of(self.n_heads_kv) {
            return bad(format!("{} attention heads are not a multiple of {} kv heads", self.n_heads, self.n_heads_kv));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        Ok(())
    }
}

impl VisionConfig {
    fn check(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Err(ConvertError::Input { path: path.into(), msg });
        if !self.dim.is_multiple_of(self.n_heads) || !(self.dim / self.n_heads).is_multiple_of(4) {
            return bad(format!(
                "vision dim {} over {} heads must give a head_dim divisible by 4 (RoPE-2D)",
                self.dim, self.n_heads
            ));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }
}

impl Checkpoint {
    /// Look at `dir` and read the config of whichever layout it holds.
    /// The tokenizer is read here too: the HF layout finds `[IMG_BREAK]`/`[IMG_END]` ids in it.
    pub fn detect(dir: &Path) -> Result<Checkpoint> {
        Checkpoint::detect_with(dir, None)
    }

    /// [`Checkpoint::detect`], with the vision activation overridden when `vision_act` is given.
    pub fn detect_with(dir: &Path, vision_act: Option<VisionAct>) -> Result<Checkpoint> {
        if !dir.is_dir() {
            return Err(ConvertError::Input { path: dir.into(), msg: "not a directory".into() });
        }
        let mut notes = Vec::new();
        if dir.join("config.json").is_file() {
            let (text, vision, vocab, name) = parse_hf(dir, vision_act, &mut notes)?;
            let name = checkpoint_name(dir, name.as_deref());
            Ok(Checkpoint { dir: dir.into(), layout: Layout::Hf, name, text, vision, vocab, notes })
        } else if dir.join("params.json").is_file() {
            let (text, vision) = parse_mistral(dir, vision_act)?;
            let name = checkpoint_name(dir, None);
            let tekken = dir.join("tekken.json");
            if !tekken.is_file() {
                return Err(ConvertError::Input {
                    path: tekken,
                    msg: "missing: the Mistral layout needs tekken.json".into(),
                });
            }
            let vocab = crate::tokenizer::from_tekken(&tekken, text.vocab_size)?;
            Ok(Checkpoint { dir: dir.into(), layout: Layout::Mistral, name, text, vision, vocab, notes })
        } else {
            Err(ConvertError::Input {
                path: dir.into(),
                msg: "no config.json (HF layout) or params.json (Mistral layout) found".into(),
            })
        }
    }
}

/// An HF cache snapshot folder (`snapshots/<commit>`) or a bare commit: 16 or more hex digits.
fn is_hash(s: &str) -> bool {
    s.len() >= 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `general.name`, first found of: the config's `_name_or_path` (transformers < 5 writes the hub id or the path
/// it loaded from; its last component), the repository of an HF hub cache (`models--ORG--NAME/snapshots/…`),
/// the folder's own name (`--local-dir Pixtral-12B-2409`), then "Pixtral". A component that looks like a commit
/// hash is never taken. Mistral's `params.json` carries no name.
pub fn checkpoint_name(dir: &Path, name_or_path: Option<&str>) -> String {
    let usable = |s: &str| !s.is_empty() && !is_hash(s) && s != "." && s != "..";
    if let Some(n) = name_or_path.and_then(|p| p.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next()) {
        if usable(n) {
            return n.to_owned();
        }
    }
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let parts: Vec<String> = abs.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if let Some(repo) = parts.iter().rev().find_map(|p| p.strip_prefix("models--")) {
        if let Some((_, name)) = repo.split_once("--") {
            if usable(name) {
                return name.to_owned();
            }
        }
    }
    match parts.last() {
        Some(n) if usable(n) => n.clone(),
        _ => "Pixtral".to_owned(),
    }
}

type HfParts = (TextConfig, Option<VisionConfig>, crate::tokenizer::Vocab, Option<String>);

fn parse_hf(dir: &Path, vision_act: Option<VisionAct>, notes: &mut Vec<String>) -> Result<HfParts> {
    let path = dir.join("config.json");
    let root_map = read_json(&path)?;
    let root = Obj { path: &path, prefix: "", v: &root_map };
    let name_or_path = root.get("_name_or_path").and_then(|n| n.as_str()).map(str::to_owned);
    let arch = root.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("");
    let text_obj = root.sub("text_config", "text_config.")?;
    // a plain MistralForCausalLM config.json is the text config itself
    let t = match &text_obj {
        Some(o) => Obj { path: &path, prefix: "text_config.", v: o.v },
        None if arch == "MistralForCausalLM" || arch == "LlamaForCausalLM" => {
            Obj { path: &path, prefix: "", v: &root_map }
        }
        None => {
            return Err(root.field_err(
                "text_config",
                format!("missing (architecture {arch:?} is not a Llava/Pixtral checkpoint)"),
            ))
        }
    };
    // MistralConfig defaults (transformers): hidden 4096, layers 32, heads 32, kv 8, ffn 14336, vocab 32000,
    // eps 1e-6, theta 10000, max positions 131072.
    let dim = t.usize_or("hidden_size", Some(4096))?;
    let n_heads = t.usize_or("num_attention_heads", Some(32))?;
    let rope_theta = match t.sub("rope_parameters", "text_config.rope_parameters.")? {
        Some(rp) if rp.get("rope_theta").is_some() => rp.f32_or("rope_theta", None)?,
        _ => t.f32_or("rope_theta", Some(10000.0))?,
    };
    let text = TextConfig {
        dim,
        n_layers: t.usize_or("num_hidden_layers", Some(32))?,
        n_heads,
        n_heads_kv: t.usize_or("num_key_value_heads", Some(8))?,
        head_dim: t.usize_or("head_dim", Some(dim / n_heads))?,
        ffn_dim: t.usize_or("intermediate_size", Some(14336))?,
        vocab_size: t.usize_or("vocab_size", Some(32000))?,
        rope_theta,
        norm_eps: t.f32_or("rms_norm_eps", Some(1e-6))?,
        context_length: t.usize_or("max_position_embeddings", Some(131072))?,
    };
    text.check(&path)?;
    let (vocab, note) = crate::tokenizer::from_hf_noted(dir, text.vocab_size)?;
    notes.extend(note);

    let Some(v) = root.sub("vision_config", "vision_config.")? else {
        return Ok((text, None, vocab, name_or_path));
    };
    let model_type = v.str_or("model_type", "pixtral")?;
    if model_type != "pixtral" {
        return Err(v.field_err("model_type", format!("{model_type:?}: only pixtral vision towers are supported")));
    }
    // PixtralVisionConfig defaults: hidden 1024, ffn 4096, layers 24, heads 16, channels 3, image 1024, patch 16,
    // theta 10000 (hidden_act: see the module doc).
    let img_token_id = root.usize_or("image_token_index", Some(10))? as u32;
    let lookup = |tok: &str| {
        vocab.special_id(tok).ok_or_else(|| ConvertError::Input {
            path: dir.join("tokenizer.json"),
            msg: format!("special token {tok} not found in the tokenizer"),
        })
    };
    let (mean, std) = read_preprocessor(dir)?;
    let vision = VisionConfig {
        dim: v.usize_or("hidden_size", Some(1024))?,
        n_layers: v.usize_or("num_hidden_layers", Some(24))?,
        n_heads: v.usize_or("num_attention_heads", Some(16))?,
        ffn_dim: v.usize_or("intermediate_size", Some(4096))?,
        n_channels: v.usize_or("num_channels", Some(3))?,
        image_size: v.usize_or("image_size", Some(1024))?,
        patch_size: v.usize_or("patch_size", Some(16))?,
        rope_theta: match v.sub("rope_parameters", "vision_config.rope_parameters.")? {
            Some(rp) if rp.get("rope_theta").is_some() => rp.f32_or("rope_theta", None)?,
            _ => v.f32_or("rope_theta", Some(10000.0))?,
        },
        norm_eps: VISION_NORM_EPS,
        act: hf_vision_act(&v, vision_act, notes)?,
        img_token_id,
        img_break_token_id: lookup("[IMG_BREAK]")?,
        img_end_token_id: lookup("[IMG_END]")?,
        image_mean: mean,
        image_std: std,
    };
    let projector_act = root.str_or("projector_hidden_act", "gelu")?;
    if projector_act != "gelu" {
        return Err(root.field_err("projector_hidden_act", format!("{projector_act:?}: the Pixtral adapter is gelu")));
    }
    vision.check(&path)?;
    Ok((text, Some(vision), vocab, name_or_path))
}

/// `vision_config.hidden_act`: absent is SiLU (module doc), an explicit "gelu" is refused unless overridden.
fn hf_vision_act(v: &Obj, over: Option<VisionAct>, notes: &mut Vec<String>) -> Result<VisionAct> {
    let written = match v.get("hidden_act") {
        None => None,
        Some(_) => Some(v.str_or("hidden_act", "")?),
    };
    match (over, written) {
        (Some(a), Some(w)) if w != a.as_str() => {
            notes.push(format!(
                "{}: field \"{}hidden_act\" says {w:?}; using {} as --vision-act asks",
                v.path.display(),
                v.prefix,
                a.as_str()
            ));
            Ok(a)
        }
        (Some(a), _) => Ok(a),
        (None, Some(w)) if w == "gelu" => Err(v.field_err(
            "hidden_act",
            "\"gelu\", but Pixtral's vision layers use SiLU (HF configs made before October 2024 say gelu by \
             mistake; converting as written would give a silently wrong model). Pass --vision-act silu (right for \
             Pixtral-12B; Options::vision_act in the library), or --vision-act gelu if this checkpoint really was \
             trained with GELU",
        )),
        (None, None) => Ok(VisionAct::Silu),
        (None, Some(w)) => w.parse().map_err(|_| ConvertError::Input {
            path: v.path.into(),
            msg: format!("vision hidden_act {w:?} is not silu or gelu"),
        }),
    }
}

fn read_preprocessor(dir: &Path) -> Result<([f32; 3], [f32; 3])> {
    let path = dir.join("preprocessor_config.json");
    if !path.is_file() {
        return Ok((IMAGE_MEAN, IMAGE_STD));
    }
    let m = read_json(&path)?;
    let o = Obj { path: &path, prefix: "", v: &m };
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        match o.get(key) {
            None => Ok(default),
            Some(Json::Array(a)) if a.len() == 3 && a.iter().all(|x| x.is_number()) => {
                Ok([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32))
            }
            Some(v) => Err(o.field_err(key, format!("{v} is not a list of 3 numbers"))),
        }
    };
    Ok((triple("image_mean", IMAGE_MEAN)?, triple("image_std", IMAGE_STD)?))
}

fn parse_mistral(dir: &Path, vision_act: Option<VisionAct>) -> Result<(TextConfig, Option<VisionConfig>)> {
    let path = dir.join("params.json");
    let m = read_json(&path)?;
    let p = Obj { path: &path, prefix: "", v: &m };
    let dim = p.usize_or("dim", None)?;
    let n_heads = p.usize_or("n_heads", None)?;
    let text = TextConfig {
        dim,
        n_layers: p.usize_or("n_layers", None)?,
        n_heads,
        n_heads_kv: p.usize_or("n_kv_heads", Some(n_heads))?,
        head_dim: p.usize_or("head_dim", Some(dim / n_heads))?,
        ffn_dim: p.usize_or("hidden_dim", None)?,
        vocab_size: p.usize_or("vocab_size", None)?,
        rope_theta: p.f32_or("rope_theta", Some(10000.0))?,
        norm_eps: p.f32_or("norm_eps", None)?,
        context_length: p.usize_or("max_seq_len", Some(DEFAULT_CONTEXT_LENGTH))?,
    };
    text.check(&path)?;
    let Some(v) = p.sub("vision_encoder", "vision_encoder.")? else {
        return Ok((text, None));
    };
    if let Some(false) = v.get("adapter_bias").and_then(|b| b.as_bool()) {
        return Err(v.field_err("adapter_bias", "false: the Pixtral adapter has biases"));
    }
    let vision = VisionConfig {
        dim: v.usize_or("hidden_size", None)?,
        n_layers: v.usize_or("num_hidden_layers", None)?,
        n_heads: v.usize_or("num_attention_heads", None)?,
        ffn_dim: v.usize_or("intermediate_size", None)?,
        n_channels: v.usize_or("num_channels", Some(3))?,
        image_size: v.usize_or("image_size", None)?,
        patch_size: v.usize_or("patch_size", None)?,
        rope_theta: v.f32_or("rope_theta", Some(10000.0))?,
        norm_eps: VISION_NORM_EPS,
        act: vision_act.unwrap_or(VisionAct::Silu),
        img_token_id: v.usize_or("image_token_id", Some(10))? as u32,
        img_break_token_id: v.usize_or("image_break_token_id", Some(12))? as u32,
        img_end_token_id: v.usize_or("image_end_token_id", Some(13))? as u32,
        image_mean: IMAGE_MEAN,
        image_std: IMAGE_STD,
    };
    vision.check(&path)?;
    Ok((text, Some(vision)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

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
