//! The ops layer, below the model: weight matrices as the kernels see them ([`Mat`], [`Weight`]), the threaded
//! matmul over [`pixtral_quant`]'s kernels, the element-wise ops, and the thread-pool helpers. Shapes are row-major
//! `(tokens, features)`, features fastest.

use pixtral_quant::{matmul_rows, Acts, GgmlType, Layout};
use rayon::prelude::*;

use crate::gguf::{Header, TensorInfo};

/// A weight matrix `(rows, cols)`: `rows` outputs of `cols` inputs, row-major, `cols` = `ne[0]`. Its bytes are at
/// `start..start + len` of the file map (ggml's layout) or, once re-laid out at load (R16), of the owning model's
/// arena: the model resolves it into a [`Weight`] (`model.view(&layer.wq)`), the one thing [`matmul`] takes.
#[derive(Debug, Clone, Copy)]
pub struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub(crate) start: usize,
    pub(crate) len: usize,
    /// ggml's layout, in the file; or R16, in the model's arena (see [`crate::model::repack`]).
    pub layout: Layout,
}

impl Mat {
    /// A view of tensor `t` of the file as `(rows, cols)`.
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

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols).expect("checked at load")
    }
}

/// A matrix with its bytes resolved (file map or arena): two borrows, made per call, nothing copied.
#[derive(Clone, Copy)]
pub struct Weight<'m> {
    pub mat: &'m Mat,
    pub bytes: &'m [u8],
}

/// Scratch of [`matmul`], kept in the session state so decoding allocates nothing.
#[derive(Default)]
pub struct MatmulScratch {
    acts: Acts,
    /// per task, its (n, rows) block of the result
    tr: Vec<f32>,
    /// float weights widened into the f32 micro-kernel's panels
    panels: Vec<f32>,
    /// float weights as bf16 pairs, for [`MatmulScratch::bf16`]
    panels_bf16: Vec<u32>,
    /// Float weights against several tokens in BF16 with this micro-kernel instead of f32 (the ViT at
    /// `--vit-precision bf16`, [`pixtral_quant::bgemm`]).
    pub bf16: Option<pixtral_quant::bgemm::Bgemm>,
}

static SERIAL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Run every parallel loop on the calling thread, without a worker pool (`-t 1`): no thread is ever created,
/// and one core is not shared between a caller and a worker. Results are the same bits either way (every
/// output element is computed by one thread, in one order).
pub fn set_serial(on: bool) {
    SERIAL.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn serial() -> bool {
    SERIAL.load(std::sync::atomic::Ordering::Relaxed)
}

/// `f(i, chunk)` for every `chunk`-sized piece of `data`, on the thread pool or, in serial mode, here.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if serial() {
        data.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// `f(item)` for every item, on the thread pool or, in serial mode, here.
pub fn for_each<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    if serial() {
        items.into_iter().for_each(f);
    } else {
        items.into_par_iter().for_each(f);
    }
}

/// Output rows handed to one task: enough work to amortise the hand-off, small enough to balance 2–64 threads;
/// one R16 group exactly, so a task never splits one.
const ROWS_PER_TASK: usize = pixtral_quant::repack::R16;

/// `out (n, w.rows) = x (n, w.cols) · Wᵀ`, threads over weight rows; float weights against several tokens
/// ([`float_matmul`]) over tokens.
pub fn matmul(w: Weight, x: &[f32], n: usize, out: &mut [f32], s: &mut MatmulScratch) {
    let Weight { mat: w, bytes } = w;
    debug_assert_eq!(x.len(), n * w.cols);
    debug_assert_eq!(out.len(), n * w.rows);
    let k = pixtral_quant::kernels::selected(); // the ISA tier, chosen once per process
    if let Some(sg) = pixtral_quant::matmul::float_sgemm(k, w.ty, n) {
        use pixtral_quant::bgemm::{bgemm_panels, widen_panels_bf16};
        use pixtral_quant::matmul::widen_panels;
        use pixtral_quant::sgemm::{aligned, sgemm_with, B};
        let (rows, cols, ty) = (w.rows, w.cols, w.ty);
        return match s.bf16 {
            Some(bg) => {
                // bf16 pairs: ⌈cols/2⌉ a panel row
                s.panels_bf16.resize(rows.div_ceil(bg.nr) * bg.nr * cols.div_ceil(2), 0);
                float_matmul(
                    (bg.mr, bg.nr, bg.mc()),
                    (bytes, w),
                    (x, n, out),
                    &mut s.panels_bf16,
                    |r, p| widen_panels_bf16(k, ty, r, cols, bg.nr, p),
                    |t, x, p, o| bgemm_panels(&bg, t, rows, cols, x, cols, p, o, rows),
                )
            }
            None => float_matmul(
                (sg.mr, sg.nr, sg.mc()),
                (bytes, w),
                (x, n, out),
                aligned(&mut s.panels, rows.div_ceil(sg.nr) * sg.nr * cols),
                |r, p| widen_panels(k, ty, r, cols, sg.nr, p),
                |t, x, p, o| sgemm_with(&sg, t, rows, cols, x, cols, B::Panels { b: p }, o, rows),
            ),
        };
    }
    s.acts.prepare(w.ty, x, n, w.cols);
    s.tr.resize(w.rows * n, 0.0);
    let rb = w.row_bytes();
    let acts = &s.acts;
    for_each_chunk(&mut s.tr, ROWS_PER_TASK * n, |i, o| {
        let r0 = i * ROWS_PER_TASK;
        matmul_rows(k, w.ty, w.layout, &bytes[r0 * rb..(r0 + o.len() / n) * rb], acts, o);
    });
    // each task's block is (n, ROWS_PER_TASK): a contiguous run of every output row
    for (i, block) in s.tr.chunks(ROWS_PER_TASK * n).enumerate() {
        let m = block.len() / n;
        for (t, run) in block.chunks_exact(m).enumerate() {
            out[t * w.rows + i * ROWS_PER_TASK..][..m].copy_from_slice(run);
        }
    }
}

/// Float weights against several tokens ([`pixtral_quant::matmul::float_sgemm`]) with a micro-kernel of `mr` rows,
/// `nr`-column panels and packed blocks of at most `mc` rows (GotoBLAS-style, see [`pixtral_quant::sgemm`]; f32, or
/// bf16 pairs by [`pixtral_quant::bgemm`]): all rows widened once into the shared `panels` (`widen(rows' bytes,
/// panel)`, threads over panels), then threads over blocks of tokens, each writing its rows of `out` directly
/// (`gemm(tokens, their x, panels, their out)`). Every task reads all the panels (from L2/L3) once per block,
/// against `2·tokens·rows·cols` flops.
fn float_matmul<T: Send + Sync>(
    (mr, nr, mc): (usize, usize, usize),
    (bytes, w): (&[u8], &Mat),
    (x, n, out): (&[f32], usize, &mut [f32]),
    panels: &mut [T],
    widen: impl Fn(&[u8], &mut [T]) + Sync + Send,
    gemm: impl Fn(usize, &[f32], &[T], &mut [f32]) + Sync + Send,
) {
    let (rows, cols, rb) = (w.rows, w.cols, w.row_bytes());
    let panel = panels.len() / rows.div_ceil(nr); // one panel: the widened `nr` rows
    for_each_chunk(panels, panel, |j, p| widen(&bytes[j * nr * rb..((j + 1) * nr).min(rows) * rb], p));
    let panels = &*panels;
    // blocks of whole row groups, at most one packed block, and about four per thread to balance
    let threads = if serial() { 1 } else { rayon::current_num_threads() };
    let tokens = n.div_ceil(4 * threads).next_multiple_of(mr).min(mc);
    for_each_chunk(out, tokens * rows, |i, o| gemm(o.len() / rows, &x[i * tokens * cols..], panels, o));
}

/// RMSNorm of each row of `x` into `out`: `x / sqrt(mean(x²) + eps) * w`.
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(xr).zip(w) {
            *o = v * inv * w;
        }
    }
}

/// RoPE on interleaved pairs `(2i, 2i+1)` of each head of one token's `x` (`n_heads · head_dim`), at
/// position `pos`: rotate by `pos · θ^(−2i/head_dim)`. `inv_freq[i] = θ^(−2i/head_dim)`.
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, inv_freq: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (s, c) = (pos as f32 * inv_freq[i]).sin_cos();
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// `θ^(−2i/d)` for `i < d/2`, computed in f64 then rounded (as transformers computes `inv_freq` in f32 from
/// an f32 power, the two agree to an ulp).
pub fn rope_inv_freq(theta: f32, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2).map(|i| (1.0 / (theta as f64).powf(2.0 * i as f64 / head_dim as f64)) as f32).collect()
}

/// Dot product in 8 independent lanes: the compiler vectorizes it (a single running sum would pin the order).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
