//! The one matmul entry point the model calls: `out[t][r] = dot(W[r], x[t])` for weights `W` `(m, k)` in
//! any supported type and f32 activations `x` `(n, k)`.
//!
//! As in ggml, activations are first converted to the weight type's `vec_dot_type`: Q8_0 blocks for Q4_0 and
//! Q8_0 weights (an integer dot per block), f32 for F32/F16/BF16. Then each output is one reference row dot
//! on the weight's raw bytes. This file holds that scalar spec ([`dot_row_ref`], [`matmul_rows_ref`]) and the entry
//! point [`matmul_rows`], which runs the kernels of the ISA tier chosen once per process (`kernels::selected()`:
//! AVX2, AVX-512, NEON, each checked against its scalar twin); [`float_sgemm`] sends float weights against several
//! tokens to [`crate::sgemm`].
//! Cost: `2·m·k·n` flops, `m·row_bytes` bytes of weights read once per call.

use crate::repack::{Layout, R16};
use crate::{BlockQ8_0, BlockQ8_K, GgmlType};

/// Activations in the form a weight type's dot product wants.
#[derive(Debug, Default)]
pub struct Acts {
    k: usize,
    n: usize,
    f32: Vec<f32>,
    q8: Vec<BlockQ8_0>,
    /// the scales of `q8` as f32 (converted once here, not once per weight row)
    q8_d: Vec<f32>,
    /// Σ qs of each block of `q8` (the R16 kernels' offset correction)
    q8_s: Vec<i32>,
    /// Q8_1's `s` of each block of `q8` (Q4_1/Q5_1 weights: [`crate::kquants::q8_1_sum`])
    q8_1s: Vec<f32>,
    /// Q8_K blocks (K-quant and IQ4_XS weights)
    q8k: Vec<BlockQ8_K>,
}

impl Acts {
    /// Prepare `n` rows of `k` activations for weights of type `ty`, reusing this buffer's memory.
    pub fn prepare(&mut self, ty: GgmlType, x: &[f32], n: usize, k: usize) {
        debug_assert_eq!(x.len(), n * k);
        self.k = k;
        self.n = n;
        match ty.vec_dot_type() {
            GgmlType::Q8_K => {
                debug_assert_eq!(k % crate::kquants::QK_K, 0);
                self.q8k.resize(n * k / crate::kquants::QK_K, BlockQ8_K::default());
                crate::kquants::quantize_row_q8_k_ref(x, &mut self.q8k);
            }
            vt @ (GgmlType::Q8_0 | GgmlType::Q8_1) => {
                debug_assert_eq!(k % 32, 0);
                self.q8.resize(n * k / 32, BlockQ8_0 { d: half::f16::ZERO, qs: [0; 32] });
                (crate::kernels::selected().quantize_q8_0)(x, &mut self.q8); // = the ref, to the bit
                self.q8_d.clear();
                self.q8_d.extend(self.q8.iter().map(|b| b.d.to_f32()));
                self.q8_s.clear();
                self.q8_s.extend(self.q8.iter().map(|b| b.qs.iter().map(|&q| q as i32).sum::<i32>()));
                self.q8_1s.clear();
                if vt == GgmlType::Q8_1 {
                    let sums = x.chunks_exact(32).zip(&self.q8);
                    self.q8_1s.extend(sums.map(|(x, b)| crate::kquants::q8_1_sum(x.try_into().expect("32"), &b.qs)));
                }
            }
            _ => {
                self.f32.clear();
                self.f32.extend_from_slice(x);
            }
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Activation row `t` as Q8_0 blocks (after `prepare` for a Q4_0/Q8_0 weight).
    pub fn q8_row(&self, t: usize) -> &[BlockQ8_0] {
        &self.q8[t * self.k / 32..(t + 1) * self.k / 32]
    }

    /// Activation row `t` as Q8_K blocks (after `prepare` for a K-quant or IQ4_XS weight).
    pub fn q8k_row(&self, t: usize) -> &[BlockQ8_K] {
        let nb = self.k / crate::kquants::QK_K;
        &self.q8k[t * nb..(t + 1) * nb]
    }

    /// Q8_1's `s` of each block of activation row `t` (after `prepare` for a Q4_1/Q5_1 weight; empty otherwise).
    pub fn q8_1_sums(&self, t: usize) -> &[f32] {
        self.q8_1s.get(t * self.k / 32..(t + 1) * self.k / 32).unwrap_or(&[])
    }

    /// The block scales of activation row `t` as f32.
    pub fn q8_scales(&self, t: usize) -> &[f32] {
        &self.q8_d[t * self.k / 32..(t + 1) * self.k / 32]
    }

    /// Σ qs of each block of activation row `t`.
    pub fn q8_sums(&self, t: usize) -> &[i32] {
        &self.q8_s[t * self.k / 32..(t + 1) * self.k / 32]
    }

    /// Rows `t .. t + T` as a prefill tile reads them: their Q8_0 blocks, block scales and block sums.
    #[allow(clippy::type_complexity)]
    pub fn q8_tile<const T: usize>(&self, t: usize) -> ([&[BlockQ8_0]; T], [&[f32]; T], [&[i32]; T]) {
        (
            std::array::from_fn(|j| self.q8_row(t + j)),
            std::array::from_fn(|j| self.q8_scales(t + j)),
            std::array::from_fn(|j| self.q8_sums(t + j)),
        )
    }

    /// Activation row `t` as f32 (after `prepare` for an F32/F16/BF16 weight).
    pub fn f32_row(&self, t: usize) -> &[f32] {
        &self.f32[t * self.k..(t + 1) * self.k]
    }
}

/// Dot of one weight row (raw bytes of type `ty`, `k` elements) with activation row `t`: the scalar twins.
pub fn dot_row_ref(ty: GgmlType, w: &[u8], acts: &Acts, t: usize) -> f32 {
    crate::kernels::scalar::KERNELS.dot(ty, w, acts, t)
}

std::thread_local! {
    /// The task's weight rows widened to f32, for [`matmul_rows`] with several tokens.
    static ROWS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Tokens from which widening float rows to f32 once beats converting them in every dot (and from which
/// float weights go through the f32 micro-kernel, where the tier has one).
pub const WIDEN_MIN_TOKENS: usize = 4;
/// Tokens per tile: the tile's activations stay in L2 while every row of the task passes over them
/// (64 × 5120 f32 = 1.3 MB at most; Q8_0 activations a quarter of that).
const TOKEN_TILE: usize = 64;

/// [`matmul_rows_ref`] with the kernels of one ISA tier. Tokens go in tiles over all the task's rows, so
/// activations are read from cache, not memory, once per row; with several tokens an F16/BF16 row is widened to
/// f32 once (the per-element conversion otherwise dominates).
/// `layout` is the weights' ([`Layout::R16`]: whole groups of 16 rows, each through the tier's R16 kernel or,
/// where it has none, the scalar twin).
pub fn matmul_rows(k: &crate::Kernels, ty: GgmlType, layout: Layout, w: &[u8], acts: &Acts, out: &mut [f32]) {
    if layout == Layout::R16 {
        let m = out.len() / acts.n;
        let gb = ty.row_bytes(acts.k).expect("checked at load") * R16;
        let kernel = k.gemm_r16(ty);
        for (i, g) in w.chunks_exact(gb).enumerate() {
            let o = &mut out[i * R16..];
            match kernel {
                Some(f) => f(g, acts, 0, acts.n, o, m),
                None => crate::repack::gemm_r16_ref(ty, g, acts, 0, acts.n, o, m),
            }
        }
        return;
    }
    let row_bytes = ty.row_bytes(acts.k).expect("checked at load");
    let n = acts.n;
    let n_rows = out.len() / n;
    if let Some(s) = float_sgemm(k, ty, n) {
        return float_gemm(k, &s, ty, w, acts, out);
    }
    let widen_rows = n >= WIDEN_MIN_TOKENS && matches!(ty, GgmlType::F16 | GgmlType::BF16);
    let gemm4 = match ty {
        GgmlType::Q8_0 => k.gemm4_q8_0,
        GgmlType::Q4_0 => k.gemm4_q4_0,
        _ => None,
    };
    let gemm4_k = (k.gemm4_q8_k)(ty);
    ROWS.with(|rows| {
        let mut rows = rows.borrow_mut();
        if widen_rows {
            rows.resize(n_rows * acts.k * 4, 0);
            for (src, dst) in w.chunks_exact(row_bytes).zip(rows.chunks_exact_mut(acts.k * 4)) {
                widen(ty, src, dst);
            }
        }
        for t0 in (0..n).step_by(TOKEN_TILE) {
            let t1 = (t0 + TOKEN_TILE).min(n);
            for r in 0..n_rows {
                // out is (tokens, n_rows): this row's outputs are a column
                let at = |t: usize| t * n_rows + r;
                if widen_rows {
                    let row = &rows[r * acts.k * 4..(r + 1) * acts.k * 4];
                    for t in t0..t1 {
                        out[at(t)] = (k.dot_f32)(row, acts.f32_row(t));
                    }
                } else {
                    let row = &w[r * row_bytes..(r + 1) * row_bytes];
                    let mut t = t0;
                    if let Some(g) = gemm4_k {
                        while t + 4 <= t1 {
                            let mut o4 = [0f32; 4];
                            g(row, std::array::from_fn(|j| acts.q8k_row(t + j)), &mut o4);
                            for (j, v) in o4.iter().enumerate() {
                                out[at(t + j)] = *v;
                            }
                            t += 4;
                        }
                    }
                    if let Some(g) = gemm4 {
                        while t + 4 <= t1 {
                            let mut o4 = [0f32; 4];
                            let y = [acts.q8_row(t), acts.q8_row(t + 1), acts.q8_row(t + 2), acts.q8_row(t + 3)];
                            let d = [
                                acts.q8_scales(t),
                                acts.q8_scales(t + 1),
                                acts.q8_scales(t + 2),
                                acts.q8_scales(t + 3),
                            ];
                            g(row, y, d, &mut o4);
                            for (j, v) in o4.iter().enumerate() {
                                out[at(t + j)] = *v;
                            }
                            t += 4;
                        }
                    }
                    for t in t..t1 {
                        out[at(t)] = k.dot(ty, row, acts, t);
                    }
                }
            }
        }
    });
}

/// The tier's f32 micro-kernel when weights of type `ty` against `n` tokens go through it (float weights, at
/// least [`WIDEN_MIN_TOKENS`] tokens, a tier that has one).
pub fn float_sgemm(k: &crate::Kernels, ty: GgmlType, n: usize) -> Option<crate::sgemm::Sgemm> {
    k.sgemm.filter(|_| ty.is_float() && n >= WIDEN_MIN_TOKENS)
}

std::thread_local! {
    /// [`float_gemm`]'s widened weights.
    static PANELS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// F32/F16/BF16 weights against several tokens with the tier's f32 micro-kernel: the rows widened once into
/// panels ([`widen_panels`]), then `out (n, rows) = X (n, k) · Wᵀ` ([`crate::sgemm::sgemm_with`]).
fn float_gemm(kern: &crate::Kernels, s: &crate::sgemm::Sgemm, ty: GgmlType, w: &[u8], acts: &Acts, out: &mut [f32]) {
    let (n, k) = (acts.n, acts.k);
    let rows = out.len() / n;
    PANELS.with(|p| {
        let mut p = p.borrow_mut();
        let panels = crate::sgemm::aligned(&mut p, rows.div_ceil(s.nr) * s.nr * k);
        widen_panels(kern, ty, w, k, s.nr, panels);
        crate::sgemm::sgemm_with(s, n, rows, k, &acts.f32, k, crate::sgemm::B::Panels { b: panels }, out, rows);
    })
}

/// F32/F16/BF16 weight rows (`k` elements each) widened into the micro-kernel's B panels
/// ([`crate::sgemm::B::Panels`]): panel `j`, `(k, nr)`, holds rows `j·nr..(j+1)·nr` as its columns, zero past the
/// last row. `dst`: `⌈rows/nr⌉·nr·k`. Exact.
pub fn widen_panels(kern: &crate::Kernels, ty: GgmlType, w: &[u8], k: usize, nr: usize, dst: &mut [f32]) {
    let eb = ty.row_bytes(1).expect("float type");
    let rows = w.len() / (k * eb);
    for (j, panel) in dst[..rows.div_ceil(nr) * nr * k].chunks_exact_mut(nr * k).enumerate() {
        let r0 = j * nr;
        let nrow = nr.min(rows - r0);
        if nrow < nr {
            panel.fill(0.0);
        }
        // 64 columns at a time, so the panel rows being written (64 × nr f32) stay in L1
        const PB: usize = 64;
        let mut tmp = [0f32; PB];
        for p0 in (0..k).step_by(PB) {
            let pc = PB.min(k - p0);
            for r in 0..nrow {
                let src = &w[(r0 + r) * k * eb + p0 * eb..][..pc * eb];
                if ty == GgmlType::F16 {
                    (kern.widen_f16)(src, &mut tmp[..pc]);
                } else {
                    for (t, v) in tmp.iter_mut().zip(src.chunks_exact(eb)) {
                        *t = float_at(ty, v);
                    }
                }
                for (q, v) in tmp[..pc].iter().enumerate() {
                    panel[(p0 + q) * nr + r] = *v;
                }
            }
        }
    }
}

/// One F32/F16/BF16 value (its little-endian bytes) as f32, exactly.
/// Element `i` of F32/F16/BF16 bytes (exact).
pub fn float_row_value(ty: GgmlType, w: &[u8], i: usize) -> f32 {
    let eb = ty.row_bytes(1).expect("float type");
    float_at(ty, &w[i * eb..(i + 1) * eb])
}

/// One F32/F16/BF16 row widened to f32 (exact).
pub fn widen_row(kern: &crate::Kernels, ty: GgmlType, w: &[u8], out: &mut [f32]) {
    if ty == GgmlType::F16 {
        (kern.widen_f16)(w, out)
    } else {
        let eb = ty.row_bytes(1).expect("float type");
        for (o, v) in out.iter_mut().zip(w.chunks_exact(eb)) {
            *o = float_at(ty, v);
        }
    }
}

fn float_at(ty: GgmlType, v: &[u8]) -> f32 {
    match ty {
        GgmlType::F32 => f32::from_le_bytes([v[0], v[1], v[2], v[3]]),
        GgmlType::F16 => half::f16::from_le_bytes([v[0], v[1]]).to_f32(),
        _ => crate::bf16_to_f32(u16::from_le_bytes([v[0], v[1]])),
    }
}

/// An F16/BF16 row as little-endian f32 bytes (exact).
fn widen(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&float_at(ty, s).to_le_bytes());
    }
}

/// `out[t * m + (r - r0)]` for weight rows `r0..r0 + m`, `m = out.len() / n`: the result's columns of those
/// rows, as a `(n, m)` block of its own, so threads can own disjoint row ranges. `w` holds exactly those rows.
/// The scalar twins.
pub fn matmul_rows_ref(ty: GgmlType, layout: Layout, w: &[u8], acts: &Acts, out: &mut [f32]) {
    matmul_rows(&crate::kernels::scalar::KERNELS, ty, layout, w, acts, out)
}
