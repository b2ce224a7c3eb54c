//! Q8_0: 32 weights; f16 scale `d = amax / 127`, then 32 × i8; w = q · d. 34 bytes.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl BlockQ8_0 {
    pub const BYTES: usize = 34;

    /// ggml `quantize_row_q8_0_ref`: `id = 1/d` in f32, `q = round_half_away(x * id)`.
    pub fn quantize_ref(x: &[f32; 32]) -> BlockQ8_0 {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, v) in qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8; // f32::round is round-half-away-from-zero, as roundf
        }
        BlockQ8_0 { d: f16::from_f32(d), qs }
    }

    pub fn dequantize_ref(&self, out: &mut [f32; 32]) {
        let d = self.d.to_f32();
        for (o, q) in out.iter_mut().zip(&self.qs) {
            *o = *q as f32 * d;
        }
    }

    /// Parse from exactly 34 little-endian bytes.
    pub fn read_from(b: &[u8]) -> BlockQ8_0 {
        debug_assert_eq!(b.len(), Self::BYTES);
        let mut qs = [0i8; 32];
        for (q, v) in qs.iter_mut().zip(&b[2..34]) {
            *q = *v as i8;
        }
        BlockQ8_0 { d: f16::from_bits(u16::from_le_bytes([b[0], b[1]])), qs }
    }

    pub fn write_to(&self, b: &mut [u8]) {
        debug_assert_eq!(b.len(), Self::BYTES);
        b[0..2].copy_from_slice(&self.d.to_bits().to_le_bytes());
        for (v, q) in b[2..34].iter_mut().zip(&self.qs) {
            *v = *q as u8;
        }
    }
}

/// Quantize a row of activations (len % 32 == 0) into Q8_0 blocks, the `vec_dot_type` of Q4_0/Q8_0 weights.
pub fn quantize_row_q8_0_ref(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (chunk, o) in x.chunks_exact(32).zip(out.iter_mut()) {
        *o = BlockQ8_0::quantize_ref(chunk.try_into().expect("chunk of 32"));
    }
}

/// The body every tier compiles ([`crate::Kernels::quantize_q8_0`]); `#[inline(always)]` so it takes the caller's
/// target features, where `trunc` is one vector instruction (`vroundps`, `frintz`) instead of libm's `roundf`.
/// Equal to [`quantize_row_q8_0_ref`] to the bit: the maximum is exact in any order (8 partial maxima), and
/// round-half-away-from-zero is `t = trunc(s)`, plus `±1` when `|s − t| ≥ ½` (exact: `|s| ≤ 2²³`; NaN stays NaN
/// and casts to 0, as `roundf`'s does).
#[inline(always)]
pub fn quantize_row_q8_0_generic(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    for (chunk, o) in x.chunks_exact(32).zip(out.iter_mut()) {
        let mut m = [0f32; 8];
        for v in chunk.chunks_exact(8) {
            for (m, v) in m.iter_mut().zip(v) {
                *m = m.max(v.abs());
            }
        }
        let amax = m.iter().fold(0f32, |a, b| a.max(*b));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in o.qs.iter_mut().zip(chunk) {
            let s = v * id;
            let t = s.trunc();
            *q = (if (s - t).abs() >= 0.5 { t + 1f32.copysign(s) } else { t }) as i8;
        }
        o.d = f16::from_f32(d);
    }
}
