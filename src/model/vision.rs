//! Pixtral-ViT and the vision-language adapter, from an mmproj GGUF (ours or llama.cpp's).
//!
//! Images of one request are packed into one sequence for every matmul; attention is block-diagonal (a patch
//! sees only its own image's patches) and is computed per image block, head and tile of 64 queries, so no
//! n² mask or score matrix is ever built (a 4096-patch image needs a 4096 × 64 score tile, 1 MB, per thread).
//!
//! [`VisionModel::encode`] runs named steps over one [`VisionState`] sized for the request: unfold the patches
//! and embed them (`embed_patches`: a conv without bias as one matmul, then `ln_pre`), the RoPE-2D table
//! (`rope_2d_table`), the blocks (`block`: RMSNorm → q, k, v → RoPE-2D → attention → o → residual → RMSNorm →
//! SwiGLU, activation from the metadata, SiLU for Pixtral → residual; no final norm), and the adapter
//! (`adapter`: `linear_2(gelu(linear_1(x)))` with biases and the exact erf GELU).
//!
//! RoPE-2D (head_dim D, θ from metadata; ref: mistral-inference `precompute_freqs_cis_2d`, transformers' axial
//! rope): with `f_k = θ^(−2k/D)`, interleaved pair `i < D/4` rotates by `row · f[2i]`, pair `i ≥ D/4` by
//! `col · f[2(i − D/4) + 1]`, row/col being the patch's own grid coordinates.

use std::cell::RefCell;
use std::path::Path;

use super::{checked_tensor, dequantized, repack, Arena, Block, LoadOptions, Repacked};
use crate::error::{Error, Result};
use crate::gguf::config::{VisionAct, VisionConfig};
use crate::gguf::{manifest, GgufFile};
use crate::image::{PreprocessConfig, Preprocessed};
use crate::ops::{for_each, for_each_chunk, matmul, rmsnorm, Mat, MatmulScratch, Weight};

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
    arena: Arena,
    /// the weights re-laid out at load
    pub repacked: Repacked,
    pub cfg: VisionConfig,
    /// the text model's width (adapter output)
    pub text_dim: usize,
    patch_embd: Mat, // (dim, 3·P·P)
    ln_pre: Vec<f32>,
    layers: Vec<Block>,
    mm1: Mat,
    mm1_b: Vec<f32>,
    mm2: Mat,
    mm2_b: Vec<f32>,
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
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`VisionModel::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<VisionModel> {
        Self::from_file(GgufFile::open(path.as_ref())?, opts)
    }

    /// [`VisionModel::load_with`] for a file already opened.
    pub fn from_file(file: GgufFile, opts: &LoadOptions) -> Result<VisionModel> {
        let h = &file.header;
        let (cfg, text_dim) = VisionConfig::from_gguf(h)?;
        let entries = manifest::vision_tensors(&cfg, text_dim);
        let get = |name: &str| {
            let e = entries.iter().find(|e| e.name == name).expect("manifest entry");
            checked_tensor(h, name, &e.ne())
        };
        let mat = |name: &str| -> Result<Mat> {
            let t = get(name)?;
            // rows are the last dimension; the conv's rows are 3·P·P long
            let cols = t.ne[..t.ne.len() - 1].iter().product::<u64>() as usize;
            Ok(Mat::of(h, t, *t.ne.last().expect("dims") as usize, cols))
        };
        let vec = |name: &str| dequantized(&file, get(name)?);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let name = |p: &str| format!("v.blk.{l}.{p}.weight");
            layers.push(Block::load(&manifest::VISION_BLOCK, name, mat, vec)?);
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
        let mut mats: Vec<&mut Mat> =
            layers.iter_mut().flat_map(Block::mats_mut).chain([patch_embd, mm1, mm2]).collect();
        (v.arena, v.repacked) = repack(file, &mut mats, opts)?;
        Ok(v)
    }

    /// A weight matrix of this tower with its bytes, for [`matmul`].
    pub fn view<'m>(&'m self, m: &'m Mat) -> Weight<'m> {
        self.arena.view(&self.file, m)
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
        let mut s = VisionState::new(self, images);
        self.embed_patches(images, &mut s);
        s.rope_2d_table(&self.cfg);
        for (li, block) in self.layers.iter().enumerate() {
            progress(li, self.layers.len());
            self.block(block, &mut s);
        }
        progress(self.layers.len(), self.layers.len());
        self.adapter(&mut s)
    }

    /// Unfold the patches into `(n, 3·P·P)` rows, `[channel][ky][kx]` as the conv weight's rows; embed them (the
    /// conv without bias, as a matmul) into the residual stream and apply `ln_pre`.
    fn embed_patches(&self, images: &[Preprocessed], s: &mut VisionState) {
        let p = self.cfg.patch_size;
        let k = 3 * p * p;
        for (img, &(row0, _)) in images.iter().zip(&s.images) {
            let (w, h) = (img.width(), img.height());
            for r in 0..img.grid_h {
                for col in 0..img.grid_w {
                    let dst = &mut s.patches[(row0 + r * img.grid_w + col) * k..][..k];
                    for ch in 0..3 {
                        for ky in 0..p {
                            let src = &img.pixels[ch * w * h + (r * p + ky) * w + col * p..][..p];
                            dst[(ch * p + ky) * p..][..p].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        matmul(self.view(&self.patch_embd), &s.patches, s.n, &mut s.xb, &mut s.mm);
        rmsnorm(&mut s.x, &s.xb, &self.ln_pre, self.cfg.norm_eps);
    }

    /// One transformer block over the packed sequence, in place on `s.x`.
    fn block(&self, b: &Block, s: &mut VisionState) {
        let c = &self.cfg;
        let (n, d, f) = (s.n, c.dim, c.ffn_dim);
        let hd = d / c.n_heads;

        // ---- attention, block-diagonal over images ----
        rmsnorm_rows(&mut s.xb, &s.x, &b.attn_norm, c.norm_eps);
        matmul(self.view(&b.wq), &s.xb, n, &mut s.q, &mut s.mm);
        matmul(self.view(&b.wk), &s.xb, n, &mut s.k, &mut s.mm);
        matmul(self.view(&b.wv), &s.xb, n, &mut s.v, &mut s.mm);
        for m in [&mut s.q, &mut s.k] {
            for_each_chunk(m, ROWS_PER_TASK * d, |i, rows| {
                let rot = s.rot[i * ROWS_PER_TASK * hd / 2..].chunks_exact(hd / 2);
                for (row, rot) in rows.chunks_exact_mut(d).zip(rot) {
                    rope_2d(row, hd, rot);
                }
            });
        }
        attention(&s.q, &s.k, &s.v, &mut s.att, &mut s.kp, &mut s.vp, &s.images, &s.tiles, d, c.n_heads);
        matmul(self.view(&b.wo), &s.att, n, &mut s.xb, &mut s.mm);
        add_rows(&mut s.x, &s.xb);

        // ---- feed-forward ----
        rmsnorm_rows(&mut s.xb, &s.x, &b.ffn_norm, c.norm_eps);
        matmul(self.view(&b.w_gate), &s.xb, n, &mut s.gate, &mut s.mm);
        matmul(self.view(&b.w_up), &s.xb, n, &mut s.up, &mut s.mm);
        let kern = pixtral_quant::kernels::selected();
        let up = &s.up;
        for_each_chunk(&mut s.gate, ROWS_PER_TASK * f, |i, g| {
            let u = &up[i * ROWS_PER_TASK * f..][..g.len()];
            match c.act {
                VisionAct::Gelu => g.iter_mut().zip(u).for_each(|(g, u)| *g = gelu(*g) * u),
                VisionAct::Silu => (kern.silu_mul)(g, u),
            }
        });
        matmul(self.view(&b.w_down), &s.gate, n, &mut s.xb, &mut s.mm);
        add_rows(&mut s.x, &s.xb);
    }

    /// The adapter into the text model's width: `linear_2(gelu(linear_1(x)))`, `(n, text_dim)`.
    fn adapter(&self, s: &mut VisionState) -> Vec<f32> {
        let (n, td) = (s.n, self.text_dim);
        matmul(self.view(&self.mm1), &s.x, n, &mut s.h1, &mut s.mm);
        for row in s.h1.chunks_exact_mut(td) {
            row.iter_mut().zip(&self.mm1_b).for_each(|(a, b)| *a = gelu(*a + b));
        }
        let mut out = vec![0f32; n * td];
        matmul(self.view(&self.mm2), &s.h1, n, &mut out, &mut s.mm);
        for row in out.chunks_exact_mut(td) {
            row.iter_mut().zip(&self.mm2_b).for_each(|(a, b)| *a += b);
        }
        out
    }
}

/// Activations of one request's images packed into one sequence of `n` patches, allocated once for its size:
/// the steps of [`VisionModel::encode`] allocate nothing else but the result.
pub struct VisionState {
    n: usize,
    images: Vec<(usize, usize)>,       // (start, len) per image
    tiles: Vec<(usize, usize, usize)>, // (image, first query, queries): attention tasks, never across two images
    pos: Vec<(usize, usize)>,          // (n) each patch's (row, col) in its image's grid
    rot: Vec<(f32, f32)>,              // (n, head_dim / 2) RoPE-2D (sin, cos), the same for every block
    patches: Vec<f32>,                 // (n, 3·P·P) unfolded pixels
    x: Vec<f32>,                       // (n, dim) residual stream
    xb: Vec<f32>,                      // (n, dim) normed input / projection output
    q: Vec<f32>,                       // (n, dim)
    k: Vec<f32>,                       // (n, dim)
    v: Vec<f32>,                       // (n, dim)
    att: Vec<f32>,                     // (n, dim) attention output
    kp: Vec<f32>,                      // attention's packed keys, per head (scratch)
    vp: Vec<f32>,                      // attention's packed transposed values, per head (scratch)
    gate: Vec<f32>,                    // (n, ffn)
    up: Vec<f32>,                      // (n, ffn)
    h1: Vec<f32>,                      // (n, text_dim) adapter hidden
    mm: MatmulScratch,
}

impl VisionState {
    /// Sized for `images` on tower `vm`, with each patch's grid position and the attention tasks.
    pub fn new(vm: &VisionModel, images: &[Preprocessed]) -> VisionState {
        let c = &vm.cfg;
        let (d, p, f) = (c.dim, c.patch_size, c.ffn_dim);
        let hd = d / c.n_heads;
        let n: usize = images.iter().map(|i| i.n_patches()).sum();
        let mut mm = MatmulScratch::default();
        if vm.precision == VitPrecision::Bf16 {
            mm.bf16 = (pixtral_quant::kernels::selected().bgemm)();
        }
        let mut pos = Vec::with_capacity(n);
        let mut spans = Vec::with_capacity(images.len());
        for img in images {
            spans.push((pos.len(), img.n_patches()));
            pos.extend((0..img.grid_h).flat_map(|r| (0..img.grid_w).map(move |col| (r, col))));
        }
        let tiles = spans
            .iter()
            .enumerate()
            .flat_map(|(b, &(start, len))| {
                (0..len).step_by(QUERY_TILE).map(move |q0| (b, start + q0, QUERY_TILE.min(len - q0)))
            })
            .collect();
        VisionState {
            n,
            images: spans,
            tiles,
            pos,
            rot: vec![(0.0, 0.0); n * hd / 2],
            patches: vec![0.0; n * 3 * p * p],
            x: vec![0.0; n * d],
            xb: vec![0.0; n * d],
            q: vec![0.0; n * d],
            k: vec![0.0; n * d],
            v: vec![0.0; n * d],
            att: vec![0.0; n * d],
            kp: Vec::new(),
            vp: Vec::new(),
            gate: vec![0.0; n * f],
            up: vec![0.0; n * f],
            h1: vec![0.0; n * vm.text_dim],
            mm,
        }
    }

    /// RoPE-2D's (sin, cos) per patch and pair: (D/2) frequencies `f_k = θ^(−2k/D)`, pair `i < D/4` turning by
    /// `row · f[2i]`, the others by `col · f[2(i − D/4) + 1]`.
    fn rope_2d_table(&mut self, c: &VisionConfig) {
        let hd = c.dim / c.n_heads;
        let fk: Vec<f64> = (0..hd / 2).map(|i| (c.rope_theta as f64).powf(-2.0 * i as f64 / hd as f64)).collect();
        let pair_freq: Vec<(bool, f32)> = (0..hd / 2)
            .map(|i| if i < hd / 4 { (true, fk[2 * i] as f32) } else { (false, fk[2 * (i - hd / 4) + 1] as f32) })
            .collect();
        let pos = &self.pos;
        for_each_chunk(&mut self.rot, hd / 2, |t, rot| {
            let (r, col) = pos[t];
            for (sc, &(is_row, fr)) in rot.iter_mut().zip(&pair_freq) {
                *sc = (if is_row { r as f32 * fr } else { col as f32 * fr }).sin_cos();
            }
        });
    }
}

/// RoPE-2D on one token's row of heads, `rot`: its (sin, cos) per pair.
fn rope_2d(x: &mut [f32], head_dim: usize, rot: &[(f32, f32)]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, &(s, co)) in head.chunks_exact_mut(2).zip(rot) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * co - b * s;
            pair[1] = a * s + b * co;
        }
    }
}
