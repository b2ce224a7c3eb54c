//! NEON dots of the K-quants (Q2_K … Q6_K) with Q8_K activations: `avx2_k.rs`'s scheme on 16-byte registers.
//! Each super-block is unpacked once into sixteen registers of unsigned bytes `u` (sub-block `j` = register `j`,
//! `q = u − off`; all `u ≤ 63`, so they are valid signed bytes too), each sub-block's `Σ u·y` is one `sdot` (or,
//! on an Armv8.0 core, widening multiplies), multiplied by its scale into four i32 lanes; offsets and mins go through
//! Q8_K's `bsums`. Exact integers per super-block, then `(d·y.d)·sumi − …` in f32 as the twin
//! ([`crate::kquants::dot_q8_k_ref`], checked within the f32 bound by `selftest`).
//!
//! Safety contract: as `neon.rs`; the `DOT = true` code runs only after [`super::neon::dotprod`] said yes.

use std::arch::aarch64::*;
use std::arch::asm;

use crate::kquants::KScales;
use crate::{BlockQ8_K, GgmlType};

/// The tier's K-quant dot for `ty`.
pub fn dot(ty: GgmlType) -> Option<super::DotQ8K> {
    macro_rules! pick {
        ($t:literal) => {
            if super::neon::dotprod() {
                |w, y| unsafe { dot_k::<$t, true>(w, y) }
            } else {
                |w, y| unsafe { dot_k::<$t, false>(w, y) }
            }
        };
    }
    Some(match ty {
        GgmlType::Q2_K => pick!(10),
        GgmlType::Q3_K => pick!(11),
        GgmlType::Q4_K => pick!(12),
        GgmlType::Q5_K => pick!(13),
        GgmlType::Q6_K => pick!(14),
        GgmlType::IQ4_XS => {
            if super::neon::dotprod() {
                |w, y| unsafe { super::neon_legacy::dot_iq4_xs::<true>(w, y) }
            } else {
                |w, y| unsafe { super::neon_legacy::dot_iq4_xs::<false>(w, y) }
            }
        }
        _ => return None,
    })
}

/// `(v >> k) & mask` per byte.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn bits(v: uint8x16_t, k: i8, mask: u8) -> uint8x16_t {
    vandq_u8(vshlq_u8(v, vdupq_n_s8(-k)), vdupq_n_u8(mask))
}

/// The super-block's 256 weights as unsigned bytes, 16 per register in weight order (`avx2_k::unpack`'s layouts,
/// each 32-byte step as two halves).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn unpack<const T: u32>(b: *const u8, u: &mut [uint8x16_t; 16]) {
    for half in 0..2 {
        // bytes 16·half .. 16·half + 16 of each 32-byte load; register of group g: 2g + half
        let o = 16 * half;
        match T {
            10 => {
                for h in 0..2 {
                    let v = vld1q_u8(b.add(16 + 32 * h + o));
                    for s in 0..4 {
                        u[2 * (4 * h + s) + half] = bits(v, 2 * s as i8, 3);
                    }
                }
            }
            11 => {
                let hm = vld1q_u8(b.add(o));
                for h in 0..2 {
                    let v = vld1q_u8(b.add(32 + 32 * h + o));
                    for s in 0..4 {
                        let g = 4 * h + s;
                        u[2 * g + half] = vorrq_u8(bits(v, 2 * s as i8, 3), vshlq_n_u8::<2>(bits(hm, g as i8, 1)));
                    }
                }
            }
            12 | 13 => {
                let qs = if T == 13 { b.add(48) } else { b.add(16) };
                let qh = if T == 13 { vld1q_u8(b.add(16 + o)) } else { vdupq_n_u8(0) };
                for c in 0..4 {
                    let v = vld1q_u8(qs.add(32 * c + o));
                    let (mut lo, mut hi) = (vandq_u8(v, vdupq_n_u8(0xF)), vshrq_n_u8::<4>(v));
                    if T == 13 {
                        lo = vorrq_u8(lo, vshlq_n_u8::<4>(bits(qh, 2 * c as i8, 1)));
                        hi = vorrq_u8(hi, vshlq_n_u8::<4>(bits(qh, 2 * c as i8 + 1, 1)));
                    }
                    (u[2 * (2 * c) + half], u[2 * (2 * c + 1) + half]) = (lo, hi);
                }
            }
            _ => {
                for h in 0..2 {
                    let a = vld1q_u8(b.add(64 * h + o));
                    let c = vld1q_u8(b.add(64 * h + 32 + o));
                    let hb = vld1q_u8(b.add(128 + 32 * h + o));
                    let lo = vdupq_n_u8(0xF);
                    let g = 4 * h;
                    u[2 * g + half] = vorrq_u8(vandq_u8(a, lo), vshlq_n_u8::<4>(bits(hb, 0, 3)));
                    u[2 * (g + 1) + half] = vorrq_u8(vandq_u8(c, lo), vshlq_n_u8::<4>(bits(hb, 2, 3)));
                    u[2 * (g + 2) + half] = vorrq_u8(vshrq_n_u8::<4>(a), vshlq_n_u8::<4>(bits(hb, 4, 3)));
                    u[2 * (g + 3) + half] = vorrq_u8(vshrq_n_u8::<4>(c), vshlq_n_u8::<4>(bits(hb, 6, 3)));
                }
            }
        }
    }
}

/// Σ a·b of 16 signed bytes in four i32 lanes, exactly.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot16<const DOT: bool>(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        return dot16_sdot(a, b);
    }
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi))
}

/// `sdot` through `asm!` (the dotprod intrinsics are not stable Rust yet).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot16_sdot(a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = vdupq_n_s32(0);
    asm!("sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b", acc = inout(vreg) acc, a = in(vreg) a, b = in(vreg) b,
         options(pure, nomem, nostack));
    acc
}

#[target_feature(enable = "neon")]
unsafe fn dot_k<const T: u32, const DOT: bool>(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let ty = GgmlType::from_id(T).expect("a K type");
    let bytes = ty.type_size();
    debug_assert_eq!(w.len(), y.len() * bytes);
    let mut acc = 0f32;
    let mut u = [vdupq_n_u8(0); 16];
    for (i, y) in y.iter().enumerate() {
        let b = w.as_ptr().add(i * bytes);
        let s = KScales::read(ty, std::slice::from_raw_parts(b, bytes));
        unpack::<T>(b, &mut u);
        let mut sumi = vdupq_n_s32(0);
        for (j, u) in u.iter().enumerate() {
            let p = dot16::<DOT>(vreinterpretq_s8_u8(*u), vld1q_s8(y.qs.as_ptr().add(16 * j)));
            sumi = vmlaq_n_s32(sumi, p, s.sc[j] as i32);
        }
        // offsets and mins: Σ_j sc_j·bsum_j and Σ_j mn_j·bsum_j (16 i16 products each, exact in i32)
        let (b0, b1) = (vld1q_s16(y.bsums.as_ptr()), vld1q_s16(y.bsums.as_ptr().add(8)));
        let dot_bs = |v: &[i16; 16]| {
            let (v0, v1) = (vld1q_s16(v.as_ptr()), vld1q_s16(v.as_ptr().add(8)));
            let p = vaddq_s32(
                vaddq_s32(vmull_s16(vget_low_s16(b0), vget_low_s16(v0)), vmull_high_s16(b0, v0)),
                vaddq_s32(vmull_s16(vget_low_s16(b1), vget_low_s16(v1)), vmull_high_s16(b1, v1)),
            );
            vaddvq_s32(p)
        };
        let dy = y.d;
        acc += (s.d * dy) * vaddvq_s32(sumi) as f32;
        if s.off != 0 {
            acc -= (s.d * dy) * (s.off as i32 * dot_bs(&s.sc)) as f32;
        }
        if matches!(T, 10 | 12 | 13) {
            acc -= (s.dmin * dy) * dot_bs(&s.mn) as f32;
        }
    }
    acc
}
