//! The one matmul entry point the model calls: `out[t][r] = dot(W[r], x[t])` for weights `W` `(m, k)` in
//! any supported type and f32 activations `x` `(n, k)`.
//!
//! As in ggml, activations are first converted to the weight type's `vec_dot_type`: Q8_0 blocks for Q4_0 and
//! Q8_0 weights (an integer dot per block), f32 for F32/F16/BF16. Then each output is one reference row dot
//! on the weight's raw bytes. This file is the scalar spec; SIMD kernels will sit behind the same functions.
//! Cost: `2·m·k·n` flops, `m·row_bytes` bytes of weights read once per call.

use crate::{BlockQ8_0, GgmlType};

/// Activations in the form a weight type's dot product wants.
#[derive(Debug, Default)]
pub struct Acts {
    k: usize,
    n: usize,
    f32: Vec<f32>,
    q8: Vec<BlockQ8_0>,
}

impl Acts {
    /// Prepare `n` rows of `k` activations for weights of type `ty`, reusing this buffer's memory.
    pub fn prepare(&mut self, ty: GgmlType, x: &[f32], n: usize, k: usize) {
        debug_assert_eq!(x.len(), n * k);
        self.k = k;
        self.n = n;
        match ty {
            GgmlType::Q8_0 | GgmlType::Q4_0 => {
                debug_assert_eq!(k % 32, 0);
                self.q8.resize(n * k / 32, BlockQ8_0 { d: half::f16::ZERO, qs: [0; 32] });
                crate::q8_0::quantize_row_q8_0_ref(x, &mut self.q8);
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
    /// One weight row widened to f32, for [`matmul_rows`] with several tokens.
    static ROW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Tokens from which widening an F16/BF16 row to f32 once beats converting it in every dot.
const WIDEN_MIN_TOKENS: usize = 4;

/// [`matmul_rows_ref`] with the kernels of one ISA tier. With several tokens, an F16/BF16 row is widened to f32
/// once and then dotted with each token (the per-element conversion otherwise dominates).
pub fn matmul_rows(k: &crate::Kernels, ty: GgmlType, w: &[u8], acts: &Acts, out: &mut [f32]) {
    let row_bytes = ty.row_bytes(acts.k).expect("checked at load");
    let n = acts.n;
    if n >= WIDEN_MIN_TOKENS && matches!(ty, GgmlType::F16 | GgmlType::BF16) {
        ROW.with(|row| {
            let mut row = row.borrow_mut();
            row.resize(acts.k * 4, 0);
            for (wr, o) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(n)) {
                widen(ty, wr, &mut row);
                for (t, v) in o.iter_mut().enumerate() {
                    *v = (k.dot_f32)(&row, acts.f32_row(t));
                }
            }
        });
        return;
    }
    for (wr, o) in w.chunks_exact(row_bytes).zip(out.chunks_exact_mut(n)) {
        for (t, v) in o.iter_mut().enumerate() {
            *v = k.dot(ty, wr, acts, t);
        }
    }
}

/// An F16/BF16 row as little-endian f32 bytes (exact).
fn widen(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
        let bits = u16::from_le_bytes([s[0], s[1]]);
        let f = if ty == GgmlType::F16 { half::f16::from_bits(bits).to_f32() } else { crate::bf16_to_f32(bits) };
        d.copy_from_slice(&f.to_le_bytes());
    }
}

/// `out[(r - r0) * n + t]` for weight rows `r0..r0 + out.len() / n`: a row-major block of the transposed
/// result, so threads can own disjoint row ranges. `w` holds exactly those rows. The scalar twins.
pub fn matmul_rows_ref(ty: GgmlType, w: &[u8], acts: &Acts, out: &mut [f32]) {
    matmul_rows(&crate::kernels::scalar::KERNELS, ty, w, acts, out)
}
