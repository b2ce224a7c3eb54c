//! The model: a memory-mapped text GGUF (Mistral-Nemo decoder, `general.architecture = llama`), its config,
//! its weights (views into the map) and its tokenizer. `Model` is immutable after `load` and `Sync`: any
//! number of [`crate::Session`]s on any threads can share one.

pub mod attention;
pub mod decoder;
pub mod ops;
pub mod vision;

use std::path::Path;

use pixtral_convert::config::TextConfig;
use pixtral_convert::manifest;
use pixtral_quant::{GgmlType, Layout};

use crate::error::{Error, Result};
use crate::gguf::{keys, GgufFile, Header, TensorInfo, Value};
use crate::runtime::tokenizer::Tokenizer;

/// A weight matrix `(rows, cols)` in the file: `rows` outputs of `cols` inputs, row-major, `cols` = `ne[0]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub(crate) start: usize,
    pub(crate) len: usize,
    /// ggml's layout, in the file; or R16, in the model's arena (see [`repack`]).
    pub layout: Layout,
}

impl Mat {
    /// Its bytes: in the file, or (R16) in the arena.
    pub(crate) fn bytes<'a>(&self, file: &'a GgufFile, arena: &'a Arena) -> &'a [u8] {
        let all = if self.layout == Layout::R16 { arena.bytes() } else { file.map_bytes() };
        &all[self.start..self.start + self.len]
    }

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols).expect("checked at load")
    }
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Mat,
    pub wk: Mat,
    pub wv: Mat,
    pub wo: Mat,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Mat,
    pub w_up: Mat,
    pub w_down: Mat,
}

pub struct TextWeights {
    pub token_embd: Mat,
    pub layers: Vec<Layer>,
    pub output_norm: Vec<f32>,
    pub output: Mat,
}

pub struct Model {
    /// The mapped file (as on disk: R16 matrices live in `arena`).
    pub file: GgufFile,
    arena: Arena,
    pub cfg: TextConfig,
    pub weights: TextWeights,
    pub tokenizer: Tokenizer,
    /// the ggml type of most 2-D weights (`general.file_type` aside), for display
    pub weight_type: GgmlType,
    /// the weights re-laid out at load
    pub repacked: Repacked,
}

/// A manifest tensor of the file: present, of the expected shape, of a type with kernels.
pub(crate) fn checked_tensor<'h>(h: &'h Header, name: &str, want: &[u64]) -> Result<&'h TensorInfo> {
    let t = h.tensor(name).ok_or_else(|| Error::Model { what: name.into(), msg: "tensor missing".into() })?;
    if t.ne != want {
        return Err(Error::ShapeMismatch { name: name.into(), want: want.to_vec(), got: t.ne.clone() });
    }
    if !t.ty.supported() {
        return Err(Error::Model { what: name.into(), msg: format!("type {} is not supported", t.ty) });
    }
    Ok(t)
}

/// A small tensor (norm, bias) dequantized to f32.
pub(crate) fn dequantized(file: &GgufFile, t: &TensorInfo) -> Result<Vec<f32>> {
    let mut out = vec![0f32; t.n_elements() as usize];
    pixtral_quant::dequantize_row_ref(t.ty, file.data(t), &mut out)
        .map_err(|err| Error::Model { what: t.name.clone(), msg: err.to_string() })?;
    Ok(out)
}

impl Mat {
    /// A view of tensor `t` as `(rows, cols)`.
    pub(crate) fn of(h: &Header, t: &TensorInfo, rows: usize, cols: usize) -> Mat {
        Mat {
            ty: t.ty,
            rows,
            cols,
            start: h.data_offset + t.offset as usize,
            len: t.n_bytes as usize,
            layout: Layout::Plain,
        }
    }
}

/// How [`Model::load_with`] / [`vision::VisionModel::load_with`] prepare the weights.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Re-lay Q4_0/Q8_0 matrices out as R16 where the ISA tier has a kernel for it ([`repack`]); `false` keeps
    /// every weight in the file's map. `PIXTRAL_REPACK=0` in the environment also turns it off.
    pub repack: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { repack: true }
    }
}

/// What [`repack`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Repacked {
    pub bytes: usize,
    pub seconds: f64,
}

/// Anonymous memory holding the matrices [`repack`] re-laid out (`Mat::start` of an R16 matrix is an offset
/// here, not in the file).
#[derive(Default)]
pub(crate) struct Arena(Option<memmap2::MmapMut>);

impl Arena {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

/// Re-lay out the matrices the selected ISA tier has an R16 kernel for ([`pixtral_quant::repack`]: Q4_0/Q8_0
/// on the AVX2 and AVX-512 tiers, and NEON with `sdot`) into an anonymous arena, matrix by matrix, dropping each matrix's file pages
/// once copied: resident memory stays about one copy of the weights (plus one matrix while loading). The arena
/// asks for transparent huge pages: 2 MB pages fault 512× less often than 4 KB ones (copy-on-write of the file
/// map took 24 s of page faults for the 12B file in this VM) and spare the TLB. Costs one pass over the weights
/// at load, threaded. `PIXTRAL_REPACK=0` keeps the file's layout (and every weight file-backed).
pub(crate) fn repack(file: &GgufFile, mats: &mut [&mut Mat], opts: &LoadOptions) -> Result<(Arena, Repacked)> {
    use pixtral_quant::repack::{fits, repack_group, R16};
    let kernels = pixtral_quant::kernels::selected();
    let off = !opts.repack || std::env::var("PIXTRAL_REPACK").is_ok_and(|v| v == "0");
    let wanted =
        |m: &Mat| !off && m.layout == Layout::Plain && fits(m.ty, m.rows, m.cols) && kernels.gemm_r16(m.ty).is_some();
    let total: usize = mats.iter().filter(|m| wanted(m)).map(|m| m.len).sum();
    if total == 0 {
        return Ok((Arena::default(), Repacked::default()));
    }
    let t0 = std::time::Instant::now();
    let mut arena = memmap2::MmapMut::map_anon(total).map_err(|e| Error::Model {
        what: file.path.display().to_string(),
        msg: format!("cannot allocate {:.0} MB for the re-laid-out weights: {e}", total as f64 / 1e6),
    })?;
    let _ = arena.advise(memmap2::Advice::HugePage); // a hint; without it the pages are 4 KB
    let src = file.map_bytes();
    let mut at = 0;
    for m in mats.iter_mut().filter(|m| wanted(m)) {
        let group = R16 * m.row_bytes();
        let (ty, cols, from) = (m.ty, m.cols, &src[m.start..m.start + m.len]);
        ops::for_each_chunk(&mut arena[at..at + m.len], group, |i, g| {
            repack_group(ty, cols, &from[i * group..(i + 1) * group], g)
        });
        file.release(m.start, m.len);
        m.start = at;
        m.layout = Layout::R16;
        at += m.len;
    }
    Ok((Arena(Some(arena)), Repacked { bytes: total, seconds: t0.elapsed().as_secs_f64() }))
}

/// A positive finite F32 key, or `default` when absent.
pub(crate) fn positive_f32_or(h: &Header, key: &str, default: f32) -> Result<f32> {
    match h.get(key) {
        None => Ok(default),
        Some(Value::F32(x)) if x.is_finite() && *x > 0.0 => Ok(*x),
        Some(other) => Err(Error::Model { what: key.into(), msg: format!("{other:?} is not a positive F32") }),
    }
}

/// A U32 key that must be > 0.
pub(crate) fn u32_key(h: &Header, key: &str) -> Result<usize> {
    let v = h.get_u32(key)? as usize;
    if v == 0 {
        return Err(Error::Model { what: key.into(), msg: "must be > 0".into() });
    }
    Ok(v)
}

/// Whether a text GGUF and an mmproj belong together, from their headers alone (before any weight is mapped).
///
/// An error when the mmproj's projection width (`clip.vision.projection_dim`) is not the text embedding width
/// (`llama.embedding_length`): its image rows cannot enter this decoder. Warnings, one line each: both files
/// carry `pixtral.checkpoint.fingerprint` (ours) and the two differ, i.e. they were converted from different
/// checkpoints (files without the key, llama.cpp's, get only the width check); the mmproj's `image_std` equals
/// its `image_mean` (an old llama.cpp converter wrote the mean twice), so every image is normalised wrongly.
pub fn check_pair(text: &Header, mmproj: &Header) -> Result<Vec<String>> {
    let (td, pd) = (text.get_u32(keys::LLAMA_EMBEDDING_LENGTH)?, mmproj.get_u32(keys::CLIP_VISION_PROJECTION_DIM)?);
    if td != pd {
        return Err(Error::Model {
            what: keys::CLIP_VISION_PROJECTION_DIM.into(),
            msg: format!(
                "the mmproj projects images to width {pd}, but the text model's embedding width is {td}: \
                 they are not from the same model"
            ),
        });
    }
    let mut warnings = Vec::new();
    let fp = |h: &Header| h.get_str(keys::PIXTRAL_CHECKPOINT_FINGERPRINT).ok().map(str::to_owned);
    if let (Some(a), Some(b)) = (fp(text), fp(mmproj)) {
        if a != b {
            warnings.push(format!(
                "the model and the mmproj were converted from different checkpoints ({} {a} vs {b}); image \
                 answers may be wrong: convert both from one checkpoint",
                keys::PIXTRAL_CHECKPOINT_FINGERPRINT
            ));
        }
    }
    if let (Some(mean), Some(std)) = (mmproj.get(keys::CLIP_VISION_IMAGE_MEAN), mmproj.get(keys::CLIP_VISION_IMAGE_STD))
    {
        if mean == std {
            warnings.push(format!(
                "the mmproj's {} equals its {} (an old llama.cpp converter bug): images will be normalised \
                 wrongly; reconvert it",
                keys::CLIP_VISION_IMAGE_STD,
                keys::CLIP_VISION_IMAGE_MEAN
            ));
        }
    }
    Ok(warnings)
}

/// Text hyper-parameters from metadata only, checked before anything is sized from them.
pub fn text_config(h: &Header) -> Result<TextConfig> {
    let arch = h.get_str(keys::GENERAL_ARCHITECTURE)?;
    if arch != "llama" {
        return Err(Error::Model {
            what: keys::GENERAL_ARCHITECTURE.into(),
            msg: format!("{arch:?}: a Pixtral text GGUF has architecture \"llama\" (is this an mmproj file?)"),
        });
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
    let bad = |what: &str, msg: String| Err(Error::Model { what: what.into(), msg });
    if n_heads % n_heads_kv != 0 {
        return bad(keys::LLAMA_HEAD_COUNT_KV, format!("{n_heads} heads are not a multiple of {n_heads_kv} kv heads"));
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

impl Model {
    /// Map a text GGUF (ours or llama.cpp's) and check it completely: config, every tensor's presence, shape
    /// and type, the tokenizer. Nothing large is allocated: weights stay in the map.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`Model::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        Self::from_file(GgufFile::open(path.as_ref())?, opts)
    }

    /// [`Model::load_with`] for a file already opened (its header read, e.g. to plan a request before the
    /// weights are touched).
    pub fn from_file(file: GgufFile, opts: &LoadOptions) -> Result<Model> {
        let h = &file.header;
        let cfg = text_config(h)?;
        let mat = |e: &manifest::Entry| -> Result<Mat> {
            let t = checked_tensor(h, &e.name, &e.ne())?;
            Ok(Mat::of(h, t, e.shape[0], e.shape[1]))
        };
        let vec = |e: &manifest::Entry| dequantized(&file, checked_tensor(h, &e.name, &e.ne())?);
        let entries = manifest::text_tensors(&cfg);
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).expect("manifest entry");
        let token_embd = mat(by_name("token_embd.weight"))?;
        // a tied head (no output.weight) reuses the embedding
        let output = if h.tensor("output.weight").is_some() { mat(by_name("output.weight"))? } else { token_embd };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let e = |p: &str| by_name(&format!("blk.{l}.{p}.weight")).clone();
            layers.push(Layer {
                attn_norm: vec(&e("attn_norm"))?,
                wq: mat(&e("attn_q"))?,
                wk: mat(&e("attn_k"))?,
                wv: mat(&e("attn_v"))?,
                wo: mat(&e("attn_output"))?,
                ffn_norm: vec(&e("ffn_norm"))?,
                w_gate: mat(&e("ffn_gate"))?,
                w_up: mat(&e("ffn_up"))?,
                w_down: mat(&e("ffn_down"))?,
            });
        }
        let mut weights = TextWeights { token_embd, output_norm: vec(by_name("output_norm.weight"))?, output, layers };
        let tokenizer = Tokenizer::from_gguf(h)?;
        if tokenizer.n_vocab() != cfg.vocab_size {
            return Err(Error::Model {
                what: keys::TOKENIZER_TOKENS.into(),
                msg: format!("{} tokens, vocab_size {}", tokenizer.n_vocab(), cfg.vocab_size),
            });
        }
        let weight_type = weights.layers.first().map(|l| l.w_up.ty).unwrap_or(token_embd.ty);
        // the embedding stays plain (rows are looked up by token); so does a head tied to it
        let tied = weights.output.start == weights.token_embd.start;
        let TextWeights { output, layers, .. } = &mut weights;
        let mut mats: Vec<&mut Mat> = layers
            .iter_mut()
            .flat_map(|l| [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down])
            .collect();
        if !tied {
            mats.push(output);
        }
        let (arena, repacked) = repack(&file, &mut mats, opts)?;
        Ok(Model { file, arena, cfg, weights, tokenizer, weight_type, repacked })
    }

    /// The bytes of a weight matrix.
    pub fn bytes(&self, m: &Mat) -> &[u8] {
        m.bytes(&self.file, &self.arena)
    }
}
