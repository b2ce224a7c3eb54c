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

use pixtral_gguf::config::{TextConfig, VisionAct, VisionConfig, IMAGE_MEAN, IMAGE_STD, VISION_NORM_EPS};
use pixtral_gguf::vocab::Vocab;
use serde_json::Value as Json;

use crate::error::{io_err, ConvertError, Result};

/// Pixtral-12B's training context (HF `max_position_embeddings`); params.json does not carry it.
pub const DEFAULT_CONTEXT_LENGTH: usize = 1_024_000;

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
    pub vocab: Vocab,
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

/// What the model code needs of a checkpoint's text config (the GGUF loader checks the same of a file).
fn check_text(t: &TextConfig, path: &Path) -> Result<()> {
    let bad = |msg: String| Err(ConvertError::Input { path: path.into(), msg });
    if !t.n_heads.is_multiple_of(t.n_heads_kv) {
        return bad(format!("{} attention heads are not a multiple of {} kv heads", t.n_heads, t.n_heads_kv));
    }
    if !t.head_dim.is_multiple_of(2) {
        return bad(format!("head_dim {} must be even for RoPE", t.head_dim));
    }
    Ok(())
}

fn check_vision(v: &VisionConfig, path: &Path) -> Result<()> {
    let bad = |msg: String| Err(ConvertError::Input { path: path.into(), msg });
    if !v.dim.is_multiple_of(v.n_heads) || !(v.dim / v.n_heads).is_multiple_of(4) {
        return bad(format!(
            "vision dim {} over {} heads must give a head_dim divisible by 4 (RoPE-2D)",
            v.dim, v.n_heads
        ));
    }
    Ok(())
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

type HfParts = (TextConfig, Option<VisionConfig>, Vocab, Option<String>);

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
    check_text(&text, &path)?;
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
    check_vision(&vision, &path)?;
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
    check_text(&text, &path)?;
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
    check_vision(&vision, &path)?;
    Ok((text, Some(vision)))
}
