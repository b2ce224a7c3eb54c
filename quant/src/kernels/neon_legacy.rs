//! NEON dots of Q4_1, Q5_0, Q5_1, IQ4_NL (Q8_0 activations, plus Q8_1's block sums for Q4_1/Q5_1) and IQ4_XS
//! (Q8_K activations): `avx2_legacy.rs`'s scheme on 16-byte registers — each block's weights as signed bytes
//! (nibbles, Q5's fifth bit through `vtst`, the IQ4_NL grid through `tbl`), their products with the activations
//! summed exactly by `sdot` or widening multiplies — then the scalar twin's float steps in its order, so these
//! equal [`crate::kquants::dot_q8_legacy_ref`] / [`crate::kquants::dot_q8_k_ref`] to the bit.
//!
//! Safety contract: as `neon.rs`; the `DOT = true` code runs only after [`super::neon::dotprod`] said yes; `w`
//! holds `y.len()` whole blocks, `ys` one sum per block for Q4_1/Q5_1.

use std::arch::aarch64::*;

use super::neon_k::dot16;
use crate::kquants::{KVALUES_IQ4NL, QK_K};
use crate::{BlockQ8_0, BlockQ8_K, GgmlType};

/// The tier's dot for a Q4_1 / Q5_0 / Q5_1 / IQ4_NL weight row, if `ty` is one.
pub fn dot(ty: GgmlType) -> Option<super::DotLegacy> {
    macro_rules! pick {
        ($t:literal) => {
            if super::neon::dotprod() {
                |w, y, s| unsafe { dot_legacy::<$t, true>(w, y, s) }
            } else {
                |w, y, s| unsafe { dot_legacy::<$t, false>(w, y, s) }
            }
        };
    }
    Some(match ty {
        GgmlType::Q4_1 => pick!(3),
        GgmlType::Q5_0 => pick!(6),
        GgmlType::Q5_1 => pick!(7),
        GgmlType::IQ4_NL => pick!(20),
        _ => return None,
    })
}

fn f16_at(b: *const u8) -> f32 {
    // SAFETY: callers pass a pointer to two bytes inside a block
    half::f16::from_le_bytes(unsafe { [*b, *b.add(1)] }).to_f32()
}

/// The 16 bytes at `p` as weights `0..16` (low nibbles) and `16..32` (high nibbles).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    let v = vld1q_u8(p);
    (vandq_u8(v, vdupq_n_u8(0xF)), vshrq_n_u8::<4>(v))
}

/// Q5's fifth bits of 16 weights: byte `l` is 0x10 where bit `l` of `h` is set.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn fifth_bits(h: u16) -> uint8x16_t {
    let v = vcombine_u8(vdup_n_u8(h as u8), vdup_n_u8((h >> 8) as u8));
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    vandq_u8(vtstq_u8(v, bit), vdupq_n_u8(0x10))
}

/// `T`: the ggml type id (3 = Q4_1, 6 = Q5_0, 7 = Q5_1, 20 = IQ4_NL).
#[target_feature(enable = "neon")]
unsafe fn dot_legacy<const T: u32, const DOT: bool>(w: &[u8], y: &[BlockQ8_0], ys: &[f32]) -> f32 {
    let bytes = GgmlType::from_id(T).expect("a legacy type").type_size();
    debug_assert_eq!(w.len(), y.len() * bytes);
    let kv = vld1q_s8(KVALUES_IQ4NL.as_ptr());
    let mut acc = 0f32;
    for (i, y) in y.iter().enumerate() {
        let b = w.as_ptr().add(i * bytes);
        let qs = b.add(match T {
            3 => 4,
            6 => 6,
            7 => 8,
            _ => 2,
        });
        let (mut lo, mut hi) = nibbles(qs);
        if T == 6 || T == 7 {
            let qh = (qs.sub(4) as *const u32).read_unaligned();
            lo = vorrq_u8(lo, fifth_bits(qh as u16));
            hi = vorrq_u8(hi, fifth_bits((qh >> 16) as u16));
        }
        let (xl, xh) = match T {
            6 => (vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(16)), vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(16))),
            20 => (vqtbl1q_s8(kv, lo), vqtbl1q_s8(kv, hi)),
            _ => (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)),
        };
        let (yl, yh) = (vld1q_s8(y.qs.as_ptr()), vld1q_s8(y.qs.as_ptr().add(16)));
        let sumi = vaddvq_s32(vaddq_s32(dot16::<DOT>(xl, yl), dot16::<DOT>(xh, yh)));
        acc += sumi as f32 * (f16_at(b) * y.d.to_f32());
        if T == 3 || T == 7 {
            acc += f16_at(b.add(2)) * ys[i]; // the twin's −dmin·s with dmin = −m
        }
    }
    acc
}

/// IQ4_XS row · Q8_K activations: eight sub-blocks of 32 through the grid, each `Σ x·y` times its 6-bit scale
/// (offset 32), summed exactly per super-block, then `(d·y.d)·sumi` as the twin.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot_iq4_xs<const DOT: bool>(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    const BYTES: usize = 136;
    debug_assert_eq!(w.len(), y.len() * BYTES);
    let kv = vld1q_s8(KVALUES_IQ4NL.as_ptr());
    let mut acc = 0f32;
    for (i, y) in y.iter().enumerate() {
        let b = w.as_ptr().add(i * BYTES);
        let sh = u16::from_le_bytes([*b.add(2), *b.add(3)]);
        let mut sumi = vdupq_n_s32(0);
        for j in 0..QK_K / 32 {
            let sc = ((*b.add(4 + j / 2) >> (4 * (j % 2))) & 0xF) as i32 | (((sh >> (2 * j)) & 3) as i32) << 4;
            let (lo, hi) = nibbles(b.add(8 + 16 * j));
            let yq = y.qs.as_ptr().add(32 * j);
            let p = vaddq_s32(
                dot16::<DOT>(vqtbl1q_s8(kv, lo), vld1q_s8(yq)),
                dot16::<DOT>(vqtbl1q_s8(kv, hi), vld1q_s8(yq.add(16))),
            );
            sumi = vmlaq_n_s32(sumi, p, sc - 32);
        }
        acc += (f16_at(b) * y.d) * vaddvq_s32(sumi) as f32;
    }
    acc
}
