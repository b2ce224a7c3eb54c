//! The scalar twins: plain loops, the definition every SIMD kernel is tested against.

use super::Kernels;
use crate::{bf16_to_f32, BlockQ8_0, Isa};

pub static KERNELS: Kernels = Kernels {
    isa: Isa::Scalar,
    dot_q8_0: dot_q8_0_ref,
    dot_q4_0: dot_q4_0_ref,
    dot_f16: dot_f16_ref,
    dot_bf16: dot_bf16_ref,
    dot_f32: dot_f32_ref,
    // the definition of a gemm4 is four dots: the scalar tier runs exactly that
    gemm4_q8_0: None,
    gemm4_q4_0: None,
    dot_q8_k: |_| None,
    dot_legacy: |_| None,
    gemm4_q8_k: |_| None,
    r16: |_| None,
    widen_f16: widen_f16_ref,
    axpy_f16: axpy_f16_ref,
    dots_f16: dots_f16_ref,
    axpys_f16: axpys_f16_ref,
    sgemm: None,
    bgemm: || None,
    softmax_cols: crate::softmax::softmax_cols_ref,
    softmax_online: crate::softmax::softmax_online_ref,
    silu_mul: crate::act::silu_mul_ref,
    quantize_q8_0: crate::q8_0::quantize_row_q8_0_ref,
};

pub fn dot_q8_0_ref(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (b, by) in w.chunks_exact(34).zip(y) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let sumi: i32 = b[2..].iter().zip(&by.qs).map(|(q, a)| *q as i8 as i32 * *a as i32).sum();
        sum += sumi as f32 * (d * by.d.to_f32());
    }
    sum
}

pub fn dot_q4_0_ref(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (b, by) in w.chunks_exact(18).zip(y) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi +=
                ((b[2 + j] & 0x0F) as i32 - 8) * by.qs[j] as i32 + ((b[2 + j] >> 4) as i32 - 8) * by.qs[j + 16] as i32;
        }
        sum += sumi as f32 * (d * by.d.to_f32());
    }
    sum
}

pub fn dot_f16_ref(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2).zip(x).map(|(b, x)| half::f16::from_le_bytes([b[0], b[1]]).to_f32() * x).sum()
}

pub fn dot_bf16_ref(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2).zip(x).map(|(b, x)| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])) * x).sum()
}

pub fn dot_f32_ref(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(4).zip(x).map(|(b, x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x).sum()
}

pub fn widen_f16_ref(w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(2).zip(out) {
        *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

pub fn axpy_f16_ref(a: f32, w: &[u8], out: &mut [f32]) {
    for (b, o) in w.chunks_exact(2).zip(out) {
        *o += a * half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// [`crate::Kernels::dots_f16`] by the definition: one `dot_f16_ref` per row.
pub fn dots_f16_ref(rows: &[u8], stride: usize, q: &[f32], out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = dot_f16_ref(&rows[j * stride..][..2 * q.len()], q);
    }
}

/// [`crate::Kernels::axpys_f16`] by the definition: one `axpy_f16_ref` per row, in order.
pub fn axpys_f16_ref(rows: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
    let n = 2 * out.len();
    for (j, w) in w.iter().enumerate() {
        axpy_f16_ref(*w, &rows[j * stride..][..n], out);
    }
}
