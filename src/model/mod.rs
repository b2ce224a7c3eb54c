//! The model layer: the two model parts, each in one file with its config, weights, loading and forward —
//! [`text`] (the Mistral-Nemo decoder of a text GGUF, with its [`tokenizer`] and its [`kv_cache`]) and [`vision`]
//! (Pixtral-ViT and the adapter of an mmproj GGUF) — plus what both share: the transformer [`Block`], loading
//! checks, and the R16 re-layout of the weights ([`repack`]) into an arena. Below it: [`crate::ops`]; above it:
//! [`crate::runtime`]. Hyper-parameters and their GGUF keys are [`crate::gguf::config`]'s.

pub mod attention;
pub mod kv_cache;
pub mod text;
pub mod tokenizer;
pub mod vision;

use pixtral_quant::Layout;

use crate::error::{Error, Result};
use crate::gguf::{keys, GgufFile, Header, TensorInfo};
use crate::ops::{Mat, Weight};

/// One transformer block, text or vision (the same nine tensors under different names): RMSNorm → attention
/// (q, k, v, o) → residual → RMSNorm → SwiGLU feed-forward (gate, up, down) → residual.
pub struct Block {
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

impl Block {
    /// A block from its nine tensors, named in field order by `names` ([`crate::gguf::manifest::TEXT_BLOCK`]
    /// or `VISION_BLOCK`) and found by `name(part)`.
    pub(crate) fn load(
        names: &[&str; 9],
        name: impl Fn(&str) -> String,
        mat: impl Fn(&str) -> Result<Mat>,
        vec: impl Fn(&str) -> Result<Vec<f32>>,
    ) -> Result<Block> {
        let [attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down] = names.map(name);
        Ok(Block {
            attn_norm: vec(&attn_norm)?,
            wq: mat(&wq)?,
            wk: mat(&wk)?,
            wv: mat(&wv)?,
            wo: mat(&wo)?,
            ffn_norm: vec(&ffn_norm)?,
            w_gate: mat(&w_gate)?,
            w_up: mat(&w_up)?,
            w_down: mat(&w_down)?,
        })
    }

    /// Its seven matrices, for [`repack`].
    pub(crate) fn mats_mut(&mut self) -> [&mut Mat; 7] {
        [&mut self.wq, &mut self.wk, &mut self.wv, &mut self.wo, &mut self.w_gate, &mut self.w_up, &mut self.w_down]
    }
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

/// How [`text::Model::load_with`] / [`vision::VisionModel::load_with`] prepare the weights.
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
    fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }

    /// Matrix `m` of a model part whose file is `file` and arena `self`, with its bytes.
    pub(crate) fn view<'m>(&'m self, file: &'m GgufFile, m: &'m Mat) -> Weight<'m> {
        let all = if m.layout == Layout::R16 { self.bytes() } else { file.map_bytes() };
        Weight { mat: m, bytes: &all[m.start..m.start + m.len] }
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
        crate::ops::for_each_chunk(&mut arena[at..at + m.len], group, |i, g| {
            repack_group(ty, cols, &from[i * group..(i + 1) * group], g)
        });
        file.release(m.start, m.len);
        m.start = at;
        m.layout = Layout::R16;
        at += m.len;
    }
    Ok((Arena(Some(arena)), Repacked { bytes: total, seconds: t0.elapsed().as_secs_f64() }))
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
