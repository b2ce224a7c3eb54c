//! Pixtral-ViT and the vision-language adapter, from an mmproj GGUF (ours or llama.cpp's).
//!
//! Images of one request are packed into one sequence for every matmul; attention is block-diagonal (a patch
//! sees only its own image's patches) and is computed per image block, head and tile of 64 queries, so no
//! n² mask or score matrix is ever built (a 4096-patch image needs a 4096 × 64 score tile, 1 MB, per thread).
//!
//! Per block: RMSNorm → q, k, v → RoPE-2D → attention → o → residual → RMSNorm → SwiGLU (activation from the
//! metadata: SiLU for Pixtral) → residual. No final norm. Adapter: `linear_2(gelu(linear_1(x)))` with biases and
//! the exact erf GELU.
//!
//! RoPE-2D (head_dim D, θ from metadata; ref: mistral-inference `precompute_freqs_cis_2d`, transformers' axial
//! rope): with `f_k = θ^(−2k/D)`, interleaved pair `i < D/4` rotates by `row · f[2i]`, pair `i ≥ D/4` by
//! `col · f[2(i − D/4) + 1]`, row/col being the patch's own grid coordinates.

use std::cell::RefCell;
use std::path::Path;

use pixtral_convert::config::VisionConfig;
use pixtral_convert::manifest;

use super::ops::{for_each, for_each_chunk, matmul, rmsnorm, MatmulScratch};
use super::Mat;
use crate::error::{Error, Result};
use crate::gguf::{keys, GgufFile, Header, Value};
use crate::image::{PreprocessConfig, Preprocessed};

pub struct VisionLayer {
    pub ln1: Vec<f32>,
    pub wq: Mat,
    pub wk: Mat,
    pub wv: Mat,
    pub wo: Mat,
    pub ln2: Vec<f32>,
    pub w_gate: Mat,
    pub w_up: Mat,
    pub w_down: Mat,
}

/// Arithmetic of the ViT's float matmuls (`--vit-precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VitPrecision {
    /// f32 products and sums: the reference (parity with transformers).
    #[default]
    F32,
    /// Operands rounded to bf16, products summed in f32 ([`pixtral_quant::bgemm`], on CPUs with BF16 dot products:
    /// AVX512-BF16). Image features move by ~5e-3 of their range (measured on the tiny model: `tests/vision.rs`).
    /// Faster only where the BF16 unit outruns the f32 FMAs (AMX's tiles, not yet used): on a Xeon exposing
    /// AVX512-BF16 without AMX, `vdpbf16ps` measured 0.68× the f32 kernel's speed (docs/speed.md).
    Bf16,
}

impl VitPrecision {
    pub fn name(self) -> &'static str {
        match self {
            VitPrecision::F32 => "f32",
            VitPrecision::Bf16 => "bf16",
        }
    }

    pub fn from_name(s: &str) -> Option<VitPrecision> {
        [VitPrecision::F32, VitPrecision::Bf16].into_iter().find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Whether the selected ISA tier has kernels for it.
    pub fn available(self) -> bool {
        match self {
            VitPrecision::F32 => true,
            VitPrecision::Bf16 => (pixtral_quant::kernels::selected().bgemm)().is_some(),
        }
    }

    /// What [`VisionModel::encode`] runs when asked for `self`: itself, or f32 where it is not available.
    pub fn usable(self) -> VitPrecision {
        if self.available() {
            self
        } else {
            VitPrecision::F32
        }
    }
}

pub struct VisionModel {
    /// Arithmetic of the float matmuls; [`VitPrecision::Bf16`] falls back to f32 where it is not
    /// [`VitPrecision::available`].
    pub precision: VitPrecision,
    /// The mapped file (as on disk: R16 matrices live in `arena`).
    pub file: GgufFile,
    arena: super::Arena,
    /// the weights re-laid out at load
    pub repacked: super::Repacked,
    pub cfg: VisionConfig,
    /// the text model's width (adapter output)
    pub text_dim: usize,
    patch_embd: Mat, // (dim, 3·P·P)
    ln_pre: Vec<f32>,
    layers: Vec<VisionLayer>,
    mm1: Mat,
    mm1_b: Vec<f32>,
    mm2: Mat,
    mm2_b: Vec<f32>,
}

/// Vision hyper-parameters from mmproj metadata only, checked before anything is allocated. Token ids default
/// to Pixtral's (10, 12, 13) when the file (llama.cpp's) does not carry them.
pub fn vision_config(h: &Header) -> Result<(VisionConfig, usize)> {
    let arch = h.get_str(keys::GENERAL_ARCHITECTURE)?;
    let proj = h.get_str(keys::CLIP_PROJECTOR_TYPE).unwrap_or("");
    if arch != "clip" || proj != "pixtral" {
        return Err(Error::Model {
            what: keys::CLIP_PROJECTOR_TYPE.into(),
            msg: format!("architecture {arch:?}, projector {proj:?}: not a Pixtral mmproj file"),
        });
    }
    let f32_or = |key: &str, default: f32| super::positive_f32_or(h, key, default);
    let id = |key: &str, default: u32| match h.get(key) {
        Some(Value::U32(v)) => *v,
        _ => default,
    };
    let triple = |key: &str, default: [f32; 3]| -> Result<[f32; 3]> {
        match h.get(key) {
            None => Ok(default),
            Some(_) => {
                let v = h.get_f32_array(key)?;
                v.as_slice()
                    .try_into()
                    .map_err(|_| Error::Model { what: key.into(), msg: format!("{} values, want 3", v.len()) })
            }
        }
    };
    let silu = matches!(h.get(keys::CLIP_USE_SILU), Some(Value::Bool(true)));
    let gelu = matches!(h.get(keys::CLIP_USE_GELU), Some(Value::Bool(true)));
    let cfg = VisionConfig {
        dim: super::u32_key(h, keys::CLIP_VISION_EMBEDDING_LENGTH)?,
        n_layers: super::u32_key(h, keys::CLIP_VISION_BLOCK_COUNT)?,
        n_heads: super::u32_key(h, keys::CLIP_VISION_HEAD_COUNT)?,
        ffn_dim: super::u32_key(h, keys::CLIP_VISION_FEED_FORWARD_LENGTH)?,
        n_channels: 3,
        image_size: super::u32_key(h, keys::CLIP_VISION_IMAGE_SIZE)?,
        patch_size: super::u32_key(h, keys::CLIP_VISION_PATCH_SIZE)?,
        rope_theta: f32_or(keys::CLIP_ROPE_FREQ_BASE, 10000.0)?,
        norm_eps: f32_or(keys::CLIP_VISION_LAYER_NORM_EPS, 1e-5)?,
        // Pixtral's FFN is SiLU; a file that says gelu (and not silu) gets gelu
        act: if gelu && !silu { "gelu".into() } else { "silu".into() },
        img_token_id: id(keys::PIXTRAL_IMG_TOKEN_ID, 10),
        img_break_token_id: id(keys::PIXTRAL_IMG_BREAK_TOKEN_ID, 12),
        img_end_token_id: id(keys::PIXTRAL_IMG_END_TOKEN_ID, 13),
        image_mean: triple(keys::CLIP_VISION_IMAGE_MEAN, pixtral_convert::config::IMAGE_MEAN)?,
        image_std: triple(keys::CLIP_VISION_IMAGE_STD, pixtral_convert::config::IMAGE_STD)?,
    };
    let text_dim = super::u32_key(h, keys::CLIP_VISION_PROJECTION_DIM)?;
    let bad = |what: &str, msg: String| Err(Error::Model { what: what.into(), msg });
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

/// Preprocessing for this tower: images at most `max_side` a side (default and ceiling: the model's
/// `image_size`; floor: one patch), its patch size, mean and std.
pub fn preprocess_config(cfg: &VisionConfig, max_side: Option<usize>) -> PreprocessConfig {
    let m = cfg.image_size;
    PreprocessConfig {
        max_side: max_side.map_or(m, |s| s.clamp(cfg.patch_size, m)),
        patch: cfg.patch_size,
        mean: cfg.image_mean,
        std: cfg.image_std,
    }
}

/// Exact GELU: `x · Φ(x) = 0.5 x (1 + erf(x / √2))`.
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Tokens per task of the element-wise steps (norms, RoPE, activation, residuals).
const ROWS_PER_TASK: usize = 64;

/// [`rmsnorm`] over the thread pool, [`ROWS_PER_TASK`] rows per task.
fn rmsnorm_rows(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let chunk = ROWS_PER_TASK * w.len();
    for_each_chunk(out, chunk, |i, o| rmsnorm(o, &x[i * chunk..][..o.len()], w, eps));
}

/// `x += y` over the thread pool (the residual connections), 64 K elements (256 KB) per task.
fn add_rows(x: &mut [f32], y: &[f32]) {
    let chunk = 1 << 16;
    for_each_chunk(x, chunk, |i, x| x.iter_mut().zip(&y[i * chunk..]).for_each(|(a, b)| *a += b));
}

/// Queries per attention task: a (image patches, 64) score tile, 1 MB for a 1024² image.
const QUERY_TILE: usize = 64;

std::thread_local! {
    /// one task's scores Sᵀ (keys, queries), queries Qᵀ and output Oᵀ (head_dim, queries), rows QUERY_TILE wide
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Block-diagonal multi-head attention of the packed sequence `(n, d)`, per image, head and tile of queries,
/// computed transposed: `Sᵀ = K·Qᵀ` (keys × queries), softmax down each column (scale `1/√hd`; its division
/// applied to the outputs), `Oᵀ = Vᵀ·Sᵀ`,
/// with the f32 micro-kernel ([`pixtral_quant::sgemm`]). Its packed operands are each head's keys and transposed
/// values (`kp`, `vp`: scratch), packed once per call and shared by every task; the per-task operands are small
/// (Qᵀ) or in L2 (Sᵀ). `blocks`: (start, length) per image; `tiles`: (image, first query, queries), in order,
/// covering `0..n`. Cost: `4·Σ len²·d` flops.
#[allow(clippy::too_many_arguments)]
fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    att: &mut [f32],
    kp: &mut Vec<f32>,
    vp: &mut Vec<f32>,
    blocks: &[(usize, usize)],
    tiles: &[(usize, usize, usize)],
    d: usize,
    n_heads: usize,
) {
    use pixtral_quant::sgemm::{aligned, pack_a, pack_a_strided, sgemm_packed, Sgemm, B};
    let hd = d / n_heads;
    let kern = pixtral_quant::kernels::selected();
    let sg = kern.sgemm.unwrap_or(Sgemm::REF);
    let mr = sg.mr;
    let n: usize = blocks.iter().map(|b| b.1).sum();
    // per head: each image's keys as whole groups of `mr`, then its values transposed (head_dim rows)
    let k_size: Vec<usize> = blocks.iter().map(|b| b.1.div_ceil(mr) * mr * hd).collect();
    let k_off: Vec<usize> = k_size.iter().scan(0, |o, size| Some(std::mem::replace(o, *o + size))).collect();
    let kph = k_size.iter().sum::<usize>();
    let hdp = hd.div_ceil(mr) * mr;
    let vph = hdp * n;
    let kp = aligned(kp, n_heads * kph);
    for_each_chunk(kp, kph, |h, kp| {
        for (&(start, len), &off) in blocks.iter().zip(&k_off) {
            pack_a(mr, len, hd, &k[start * d + h * hd..], d, &mut kp[off..]);
        }
    });
    let vp = aligned(vp, n_heads * vph);
    for_each_chunk(vp, vph, |h, vp| {
        for &(start, len) in blocks {
            pack_a_strided(mr, hd, len, &v[start * d + h * hd..], (1, d), &mut vp[hdp * start..]);
        }
    });
    let (kp, vp) = (&*kp, &*vp);
    let scale = 1.0 / (hd as f32).sqrt();
    const QT: usize = QUERY_TILE;
    // one task per query tile: its output rows are one contiguous piece of `att`
    let mut pieces = Vec::with_capacity(tiles.len());
    let mut rest = att;
    for &t in tiles {
        let (piece, r) = std::mem::take(&mut rest).split_at_mut(t.2 * d);
        pieces.push((t, piece));
        rest = r;
    }
    for_each(pieces, |((b, q0, m), out)| {
        let (start, len) = blocks[b];
        SCRATCH.with(|s| {
            let [st, qt, ot] = &mut *s.borrow_mut();
            let (st, qt, ot) = (aligned(st, len * QT), aligned(qt, hd * QT), aligned(ot, hd * QT));
            let mut inv = [0f32; QT];
            for h in 0..n_heads {
                for i in 0..m {
                    for (dd, x) in q[(q0 + i) * d + h * hd..][..hd].iter().enumerate() {
                        qt[dd * QT + i] = *x;
                    }
                }
                sgemm_packed(&sg, len, m, hd, &kp[h * kph + k_off[b]..], B::Rows { b: qt, ldb: QT }, st, QT, false);
                (kern.softmax_cols)(st, len, m, QT, scale, &mut inv);
                sgemm_packed(&sg, hd, m, len, &vp[h * vph + hdp * start..], B::Rows { b: st, ldb: QT }, ot, QT, false);
                // O = (Σ numerator · v) / Σ numerators, transposed back
                for ((i, row), inv) in out.chunks_exact_mut(d).enumerate().zip(&inv) {
                    for (dd, o) in row[h * hd..][..hd].iter_mut().enumerate() {
                        *o = ot[dd * QT + i] * inv;
                    }
                }
            }
        })
    });
}

impl VisionModel {
    pub fn load(path: impl AsRef<Path>) -> Result<VisionModel> {
        Self::load_with(path, &super::LoadOptions::default())
    }

    /// [`VisionModel::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, opts: &super::LoadOptions) -> Result<VisionModel> {
        Self::from_file(GgufFile::open(path.as_ref())?, opts)
    }

    /// [`VisionModel::load_with`] for a file already opened.
    pub fn from_file(file: GgufFile, opts: &super::LoadOptions) -> Result<VisionModel> {
        let h = &file.header;
        let (cfg, text_dim) = vision_config(h)?;
        let entries = manifest::vision_tensors(&cfg, text_dim);
        let get = |name: &str| {
            let e = entries.iter().find(|e| e.name == name).expect("manifest entry");
            super::checked_tensor(h, name, &e.ne())
        };
        let mat = |name: &str| -> Result<Mat> {
            let t = get(name)?;
            // rows are the last dimension; the conv's rows are 3·P·P long
            let cols = t.ne[..t.ne.len() - 1].iter().product::<u64>() as usize;
            Ok(Mat::of(h, t, *t.ne.last().expect("dims") as usize, cols))
        };
        let vec = |name: &str| super::dequantized(&file, get(name)?);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let n = |p: &str| format!("v.blk.{l}.{p}.weight");
            layers.push(VisionLayer {
                ln1: vec(&n("ln1"))?,
                wq: mat(&n("attn_q"))?,
                wk: mat(&n("attn_k"))?,
                wv: mat(&n("attn_v"))?,
                wo: mat(&n("attn_out"))?,
                ln2: vec(&n("ln2"))?,
                w_gate: mat(&n("ffn_gate"))?,
                w_up: mat(&n("ffn_up"))?,
                w_down: mat(&n("ffn_down"))?,
            });
        }
        let patch_embd = mat("v.patch_embd.weight")?;
        if patch_embd.ty.row_bytes(patch_embd.cols).is_none() {
            return Err(Error::Model {
                what: "v.patch_embd.weight".into(),
                msg: format!("{} rows of {}", patch_embd.ty, patch_embd.cols),
            });
        }
        let mut v = VisionModel {
            precision: VitPrecision::F32,
            patch_embd,
            ln_pre: vec("v.pre_ln.weight")?,
            mm1: mat("mm.1.weight")?,
            mm1_b: vec("mm.1.bias")?,
            mm2: mat("mm.2.weight")?,
            mm2_b: vec("mm.2.bias")?,
            layers,
            cfg,
            text_dim,
            file,
            arena: Default::default(),
            repacked: Default::default(),
        };
        let VisionModel { patch_embd, mm1, mm2, layers, file, .. } = &mut v;
        let mut mats: Vec<&mut Mat> = layers
            .iter_mut()
            .flat_map(|l| [&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down])
            .chain([patch_embd, mm1, mm2])
            .collect();
        (v.arena, v.repacked) = super::repack(file, &mut mats, opts)?;
        Ok(v)
    }

    fn bytes(&self, m: &Mat) -> &[u8] {
        m.bytes(&self.file, &self.arena)
    }

    /// The `[IMG_BREAK]` embedding carried by the mmproj (row 12 of the text embedding).
    pub fn preprocess_config(&self, max_side: Option<usize>) -> PreprocessConfig {
        preprocess_config(&self.cfg, max_side)
    }

    /// Weights applied to every patch (patch embedding, layers, adapter): ~2 flops each per patch.
    pub fn n_params(&self) -> usize {
        let c = &self.cfg;
        let (d, td) = (c.dim, self.text_dim);
        3 * c.patch_size * c.patch_size * d + c.n_layers * (4 * d * d + 3 * d * c.ffn_dim) + d * td + td * td
    }

    /// Encode images as one packed sequence: `(Σ patches, text_dim)`, images in order, patches row-major.
    pub fn encode(&self, images: &[Preprocessed]) -> Vec<f32> {
        self.encode_with_progress(images, &mut |_, _| {})
    }

    /// [`VisionModel::encode`], calling `progress(layers done, layers)` after each transformer layer.
    pub fn encode_with_progress(&self, images: &[Preprocessed], progress: &mut dyn FnMut(usize, usize)) -> Vec<f32> {
        let c = &self.cfg;
        let (d, p, f) = (c.dim, c.patch_size, c.ffn_dim);
        let hd = d / c.n_heads;
        let n: usize = images.iter().map(|i| i.n_patches()).sum();
        let mut mm = MatmulScratch::default();
        if self.precision == VitPrecision::Bf16 {
            mm.bf16 = (pixtral_quant::kernels::selected().bgemm)();
        }

        // ---- unfold patches: (n, 3·P·P), [channel][ky][kx] as the conv weight's rows ----
        let k = 3 * p * p;
        let mut patches = vec![0f32; n * k];
        let mut pos = Vec::with_capacity(n); // (row, col) per patch
        let mut blocks = Vec::with_capacity(images.len()); // (start, len) per image
        let mut row0 = 0;
        for img in images {
            let (w, h) = (img.width(), img.height());
            for r in 0..img.grid_h {
                for col in 0..img.grid_w {
                    let dst = &mut patches[(row0 + r * img.grid_w + col) * k..][..k];
                    for ch in 0..3 {
                        for ky in 0..p {
                            let src = &img.pixels[ch * w * h + (r * p + ky) * w + col * p..][..p];
                            dst[(ch * p + ky) * p..][..p].copy_from_slice(src);
                        }
                    }
                    pos.push((r, col));
                }
            }
            blocks.push((row0, img.n_patches()));
            row0 += img.n_patches();
        }

        // ---- patch embedding (conv without bias as a matmul) and ln_pre ----
        let mut x = vec![0f32; n * d];
        matmul(self.bytes(&self.patch_embd), &self.patch_embd, &patches, n, &mut x, &mut mm);
        drop(patches);
        let mut xb = vec![0f32; n * d];
        rmsnorm(&mut xb, &x, &self.ln_pre, c.norm_eps);
        std::mem::swap(&mut x, &mut xb);

        // RoPE-2D angles per pair: (D/2) frequencies, the first D/4 for rows, the rest for columns
        let fk: Vec<f64> = (0..hd / 2).map(|i| (c.rope_theta as f64).powf(-2.0 * i as f64 / hd as f64)).collect();
        let pair_freq: Vec<(bool, f32)> = (0..hd / 2)
            .map(|i| if i < hd / 4 { (true, fk[2 * i] as f32) } else { (false, fk[2 * (i - hd / 4) + 1] as f32) })
            .collect();
        // (sin, cos) per patch and pair, the same for every layer: (n, D/2)
        let mut rot = vec![(0f32, 0f32); n * hd / 2];
        for_each_chunk(&mut rot, hd / 2, |t, rot| {
            let (r, col) = pos[t];
            for (sc, &(is_row, fr)) in rot.iter_mut().zip(&pair_freq) {
                *sc = (if is_row { r as f32 * fr } else { col as f32 * fr }).sin_cos();
            }
        });
        let rope2d = |v: &mut [f32], rot: &[(f32, f32)]| {
            for head in v.chunks_exact_mut(hd) {
                for (pair, &(s, co)) in head.chunks_exact_mut(2).zip(rot) {
                    let (a, b) = (pair[0], pair[1]);
                    pair[0] = a * co - b * s;
                    pair[1] = a * s + b * co;
                }
            }
        };

        let (mut q, mut kk, mut v, mut att) =
            (vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d], vec![0f32; n * d]);
        let (mut kp, mut vp) = (Vec::new(), Vec::new());
        // query tiles: QUERY_TILE rows, never across two images
        let tiles: Vec<(usize, usize, usize)> = blocks
            .iter()
            .enumerate()
            .flat_map(|(b, &(start, len))| {
                (0..len).step_by(QUERY_TILE).map(move |q0| (b, start + q0, QUERY_TILE.min(len - q0)))
            })
            .collect();
        let (mut gate, mut up) = (vec![0f32; n * f], vec![0f32; n * f]);
        for (li, layer) in self.layers.iter().enumerate() {
            progress(li, self.layers.len());
            // ---- attention, block-diagonal over images ----
            rmsnorm_rows(&mut xb, &x, &layer.ln1, c.norm_eps);
            matmul(self.bytes(&layer.wq), &layer.wq, &xb, n, &mut q, &mut mm);
            matmul(self.bytes(&layer.wk), &layer.wk, &xb, n, &mut kk, &mut mm);
            matmul(self.bytes(&layer.wv), &layer.wv, &xb, n, &mut v, &mut mm);
            for m in [&mut q, &mut kk] {
                for_each_chunk(m, ROWS_PER_TASK * d, |i, rows| {
                    let rot = rot[i * ROWS_PER_TASK * hd / 2..].chunks_exact(hd / 2);
                    for (row, rot) in rows.chunks_exact_mut(d).zip(rot) {
                        rope2d(row, rot);
                    }
                });
            }
            attention(&q, &kk, &v, &mut att, &mut kp, &mut vp, &blocks, &tiles, d, c.n_heads);
            matmul(self.bytes(&layer.wo), &layer.wo, &att, n, &mut xb, &mut mm);
            add_rows(&mut x, &xb);

            // ---- feed-forward ----
            rmsnorm_rows(&mut xb, &x, &layer.ln2, c.norm_eps);
            matmul(self.bytes(&layer.w_gate), &layer.w_gate, &xb, n, &mut gate, &mut mm);
            matmul(self.bytes(&layer.w_up), &layer.w_up, &xb, n, &mut up, &mut mm);
            let kern = pixtral_quant::kernels::selected();
            for_each_chunk(&mut gate, ROWS_PER_TASK * f, |i, g| {
                let u = &up[i * ROWS_PER_TASK * f..][..g.len()];
                match c.act == "gelu" {
                    true => g.iter_mut().zip(u).for_each(|(g, u)| *g = gelu(*g) * u),
                    false => (kern.silu_mul)(g, u),
                }
            });
            matmul(self.bytes(&layer.w_down), &layer.w_down, &gate, n, &mut xb, &mut mm);
            add_rows(&mut x, &xb);
        }

        progress(self.layers.len(), self.layers.len());

        // ---- adapter: linear_2(gelu(linear_1(x))) ----
        let td = self.text_dim;
        let mut h1 = vec![0f32; n * td];
        matmul(self.bytes(&self.mm1), &self.mm1, &x, n, &mut h1, &mut mm);
        for row in h1.chunks_exact_mut(td) {
            row.iter_mut().zip(&self.mm1_b).for_each(|(a, b)| *a = gelu(*a + b));
        }
        let mut out = vec![0f32; n * td];
        matmul(self.bytes(&self.mm2), &self.mm2, &h1, n, &mut out, &mut mm);
        for row in out.chunks_exact_mut(td) {
            row.iter_mut().zip(&self.mm2_b).for_each(|(a, b)| *a += b);
        }
        out
    }
}
