//! NEON (AArch64 baseline) kernels. Q8_0/Q4_0: each block's integer sum computed exactly — with `sdot` where the
//! CPU has the dot-product extension (`dotprod`, Armv8.2+; checked once per row), else widening multiplies
//! (`smull`/`smull2`, pairwise adds) — and scales applied in the scalar twin's order, so these are bit-identical
//! to it. R16 prefill ([`crate::repack`]): `usmmla` tiles where the CPU has I8MM, `sdot` tiles where it has only
//! the dot product, none on an Armv8.0 core (chosen per call by [`r16`]); bit-identical to their twin too. f32
//! products (`sgemm`): 8 × 8 register tiles of fused multiply-adds, bit-identical too. F32/BF16: 4-wide FMAs; F16:
//! widened with `fcvtl` (stable `asm!`: the f16 intrinsics are not stable Rust yet).
//!
//! Safety contract: NEON is part of every AArch64 CPU (`Isa::Neon.supported()` checks anyway); the `dotprod` and
//! `i8mm` functions run only after [`dotprod`] / [`i8mm`] said yes; loads stay inside the slices (rows are whole
//! blocks, lengths checked by the callers and `debug_assert!`; R16 shapes asserted once per call).

use std::arch::aarch64::*;
use std::arch::asm;

use super::{GemmR16, Kernels};
use crate::repack::{block_bytes_of, R16};
use crate::sgemm::{Sgemm, Tile};
use crate::{Acts, BlockQ8_0, GgmlType, Isa};

/// The dot-product extension (`sdot`); std caches the answer, so this is an atomic load.
pub fn dotprod() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The int8 matrix multiply-accumulates (FEAT_I8MM: `smmla`, `usmmla`; Armv8.6, optional from 8.2); cached by
/// std like [`dotprod`].
pub fn i8mm() -> bool {
    std::arch::is_aarch64_feature_detected!("i8mm")
}

pub static KERNELS: Kernels = Kernels {
    isa: Isa::Neon,
    dot_q8_0: |w, y| unsafe {
        if dotprod() {
            dot_q8_0::<true>(w, y)
        } else {
            dot_q8_0::<false>(w, y)
        }
    },
    dot_q4_0: |w, y| unsafe {
        if dotprod() {
            dot_q4_0::<true>(w, y)
        } else {
            dot_q4_0::<false>(w, y)
        }
    },
    dot_f16: |w, x| unsafe { dot_f16(w, x) },
    dot_bf16: |w, x| unsafe { dot_bf16(w, x) },
    dot_f32: |w, x| unsafe { dot_f32(w, x) },
    gemm4_q8_0: Some(|w, y, d, o| unsafe {
        if dotprod() {
            gemm4_q8_0::<true>(w, y, d, o)
        } else {
            gemm4_q8_0::<false>(w, y, d, o)
        }
    }),
    gemm4_q4_0: Some(|w, y, d, o| unsafe {
        if dotprod() {
            gemm4_q4_0::<true>(w, y, d, o)
        } else {
            gemm4_q4_0::<false>(w, y, d, o)
        }
    }),
    r16,
    dot_q8_k: super::neon_k::dot,
    dot_legacy: super::neon_legacy::dot,
    gemm4_q8_k: |_| None,
    widen_f16: |w, o| unsafe { widen_f16(w, o) },
    axpy_f16: |a, w, o| unsafe { axpy_f16(a, w, o) },
    dots_f16: |r, s, q, o| unsafe { dots_f16(r, s, q, o) },
    axpys_f16: |r, s, w, o| unsafe { axpys_f16(r, s, w, o) },
    sgemm: Some(Sgemm { mr: SGEMM_MR, nr: 8, tile: |t, c, ldc| unsafe { sgemm_tile(t, c, ldc) } }),
    bgemm: || None,
    softmax_cols: crate::softmax::softmax_cols_ref,
    softmax_online: crate::softmax::softmax_online_ref,
    silu_mul: crate::act::silu_mul_ref,
    quantize_q8_0: crate::q8_0::quantize_row_q8_0_generic,
};

fn f16_at(b: &[u8]) -> f32 {
    half::f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Σ a·b of 32 signed bytes (two 16-byte halves each), exactly; `DOT`: with `sdot` (the caller checked
/// [`dotprod`]).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sum_i8<const DOT: bool>(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    if DOT {
        return sum_i8_sdot(a0, a1, b0, b1);
    }
    let p0 = vmull_s8(vget_low_s8(a0), vget_low_s8(b0));
    let p1 = vmull_high_s8(a0, b0);
    let p2 = vmull_s8(vget_low_s8(a1), vget_low_s8(b1));
    let p3 = vmull_high_s8(a1, b1);
    // |product| ≤ 128·128: pairwise-add into i32 before summing
    let s = vaddq_s32(vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)), vaddq_s32(vpaddlq_s16(p2), vpaddlq_s16(p3)));
    vaddvq_s32(s)
}

/// [`sum_i8`] with two `sdot`s (4 products per i32 lane each). `asm!`: the dotprod intrinsics are not stable
/// Rust yet.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sum_i8_sdot(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    let mut acc = vdupq_n_s32(0);
    asm!(
        "sdot {acc:v}.4s, {a0:v}.16b, {b0:v}.16b",
        "sdot {acc:v}.4s, {a1:v}.16b, {b1:v}.16b",
        acc = inout(vreg) acc,
        a0 = in(vreg) a0,
        b0 = in(vreg) b0,
        a1 = in(vreg) a1,
        b1 = in(vreg) b1,
        options(pure, nomem, nostack)
    );
    vaddvq_s32(acc)
}

#[target_feature(enable = "neon")]
unsafe fn dot_q8_0<const DOT: bool>(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), y.len() * 34);
    let mut sum = 0f32;
    for (b, by) in w.chunks_exact(34).zip(y) {
        let q = b.as_ptr().add(2) as *const i8;
        let a = by.qs.as_ptr();
        let sumi = sum_i8::<DOT>(vld1q_s8(q), vld1q_s8(q.add(16)), vld1q_s8(a), vld1q_s8(a.add(16)));
        sum += sumi as f32 * (f16_at(b) * by.d.to_f32());
    }
    sum
}

#[target_feature(enable = "neon")]
unsafe fn dot_q4_0<const DOT: bool>(w: &[u8], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(w.len(), y.len() * 18);
    let mut sum = 0f32;
    let eight = vdupq_n_s8(8);
    for (b, by) in w.chunks_exact(18).zip(y) {
        let packed = vld1q_u8(b.as_ptr().add(2));
        // low nibbles are elements 0..16, high nibbles 16..32
        let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F))), eight);
        let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
        let a = by.qs.as_ptr();
        let sumi = sum_i8::<DOT>(lo, hi, vld1q_s8(a), vld1q_s8(a.add(16)));
        sum += sumi as f32 * (f16_at(b) * by.d.to_f32());
    }
    sum
}

/// A Q4_0 block's weights as two halves of signed bytes (low nibbles 0..16, high nibbles 16..32).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn unpack_q4(b: &[u8]) -> (int8x16_t, int8x16_t) {
    let packed = vld1q_u8(b.as_ptr().add(2));
    let eight = vdupq_n_s8(8);
    let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(packed, vdupq_n_u8(0x0F))), eight);
    let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(packed, 4)), eight);
    (lo, hi)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn unpack_q8(b: &[u8]) -> (int8x16_t, int8x16_t) {
    let q = b.as_ptr().add(2) as *const i8;
    (vld1q_s8(q), vld1q_s8(q.add(16)))
}

/// One weight row against four tokens: each block unpacked and its scale converted once (the software f16
/// conversion is the costly part on NEON), the activation scales precomputed; per token the same exact integer
/// sum and scalar order as the dots, so the result is bit-identical to four scalar dots.
macro_rules! gemm4 {
    ($name:ident, $bytes:expr, $unpack:ident) => {
        #[target_feature(enable = "neon")]
        unsafe fn $name<const DOT: bool>(w: &[u8], y: [&[BlockQ8_0]; 4], d: [&[f32]; 4], out: &mut [f32; 4]) {
            let mut sum = [0f32; 4];
            for (i, b) in w.chunks_exact($bytes).enumerate() {
                let (x0, x1) = $unpack(b);
                let dw = f16_at(b);
                for j in 0..4 {
                    let a = y[j][i].qs.as_ptr();
                    let sumi = sum_i8::<DOT>(x0, x1, vld1q_s8(a), vld1q_s8(a.add(16)));
                    sum[j] += sumi as f32 * (dw * d[j][i]);
                }
            }
            *out = sum;
        }
    };
}

gemm4!(gemm4_q8_0, 34, unpack_q8);
gemm4!(gemm4_q4_0, 18, unpack_q4);

/// The R16 kernel for this CPU ([`Kernels::r16`]): `usmmla` where it has I8MM (and the dot product, which its lone
/// tokens take; every I8MM core has both, DotProd being mandatory from Armv8.4), else `sdot` where it has the
/// dot product, else none (the loader keeps the plain layout and prefill takes the `gemm4` dots).
fn r16(ty: GgmlType) -> Option<GemmR16> {
    let q4 = match ty {
        GgmlType::Q4_0 => true,
        GgmlType::Q8_0 => false,
        _ => return None,
    };
    if !dotprod() {
        return None;
    }
    let f: GemmR16 = match (i8mm(), q4) {
        (true, true) => |g, a, t0, t1, o, ld| unsafe { gemm_r16_mmla::<true>(g, a, t0, t1, o, ld) },
        (true, false) => |g, a, t0, t1, o, ld| unsafe { gemm_r16_mmla::<false>(g, a, t0, t1, o, ld) },
        (false, true) => |g, a, t0, t1, o, ld| unsafe { gemm_r16_sdot::<true>(g, a, t0, t1, o, ld) },
        (false, false) => |g, a, t0, t1, o, ld| unsafe { gemm_r16_sdot::<false>(g, a, t0, t1, o, ld) },
    };
    Some(f)
}

/// The shapes every R16 tile relies on (it indexes blocks and outputs unchecked), checked once per call.
fn r16_check(q4: bool, g: &[u8], acts: &Acts, t0: usize, t1: usize, out: &[f32], ldo: usize) {
    assert!(t1 <= t0 || g.len() == acts.q8_row(t0).len() * block_bytes_of(q4), "R16 group and activations disagree");
    assert!(t1 <= t0 || out.len() >= (t1 - 1) * ldo + R16, "R16 output out of bounds");
}

/// `body` once per listed value, `$c` a `u32` constant in it (the lane of `sdot` by element is an immediate).
macro_rules! unroll {
    ($c:ident in [$($n:literal)*] $body:block) => {
        $({
            const $c: u32 = $n;
            $body
        })*
    };
}

/// `sdot` by element: `acc.s[i] += Σ_k w.b[4i + k] · x.b[4L + k]`, i.e. 4 rows × 4 columns (one R16 k-group
/// register) against the k-group `L` of an activation register. `asm!`: the dotprod intrinsics are not stable
/// Rust (1.96) yet.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot_lane<const L: u32>(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        l = const L,
        options(pure, nomem, nostack)
    );
    acc
}

/// `usmmla`: `acc.s[2i + j] += Σ_k w.b[8i + k] · x.b[8j + k]`, `w` unsigned and `x` signed: a 2 × 8 by 8 × 2
/// product (2 rows × 8 columns of weights, 8 columns of 2 tokens). `asm!`: the i8mm intrinsics are not stable
/// Rust (1.96) yet.
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn usmmla(mut acc: int32x4_t, w: uint8x16_t, x: int8x16_t) -> int32x4_t {
    asm!(
        "usmmla {acc:v}.4s, {w:v}.16b, {x:v}.16b",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        options(pure, nomem, nostack)
    );
    acc
}

/// Eight f16 at `p` widened to f32 (`fcvtl`, `fcvtl2`: exact), e.g. the scales of 8 rows of an R16 block.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_f16x8(p: *const u8) -> [float32x4_t; 2] {
    let h = vld1q_u8(p);
    let (lo, hi): (float32x4_t, float32x4_t);
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        h = in(vreg) h,
        options(pure, nomem, nostack)
    );
    [lo, hi]
}

/// R16 ([`crate::repack`]) with `sdot` by element (FEAT_DotProd): one `sdot` is 4 rows × one k-group (4
/// columns) of the layout against that k-group of a token, which is a lane of the token's block as loaded, so the
/// activations need no broadcast. Prefill: one half of the group (8 rows) at a time, four tokens per pass (8 f32
/// sums, 8 i32 block sums and 8 activation registers stay in the 32 q registers); decode and the last `n % 4`
/// tokens: both halves per block, one token. Q4_0: the nibbles (0..15) are already valid `i8`, so the weights
/// stay unsigned and each block sum starts at `−8·Σx` as in the twin. Q8_0: the bytes `u = w + 128` are not
/// `i8`, and the `u8 × i8` form (`usdot`) is an I8MM instruction, so the weights go back to `i8` (XOR 0x80)
/// and the sums start at 0: `Σ (u − 128)·x = Σ u·x − 128·Σx` exactly, as `Acts::prepare` makes the block sums
/// `Σx` from the same `qs` (the AVX2 tier's Q8_0 relies on the same). Exact integers, then the twin's float
/// operations (`fmul` of the two scales, `scvtf`, `fmla`): bit-identical to [`crate::repack::gemm_r16_ref`].
///
/// Instructions per 32-column block (the compiled loops, Debian's rustc 1.96; not timed: we have no ARM machine,
/// only qemu), 16 rows × 4 tokens (two 8-row tiles): Q8_0 280 (128 `sdot`, 32 `eor`s), Q4_0 288 (128 `sdot`, 32
/// nibble `and`/`ushr`s); 16 rows × 1 token: Q8_0 107, Q4_0 102 (32 `sdot`).
#[target_feature(enable = "neon,dotprod")]
unsafe fn gemm_r16_sdot<const Q4: bool>(g: &[u8], acts: &Acts, t0: usize, t1: usize, out: &mut [f32], ldo: usize) {
    r16_check(Q4, g, acts, t0, t1, out, ldo);
    let mut t = t0;
    if t1.saturating_sub(t0) >= 4 {
        for half in 0..2 {
            t = t0;
            while t + 4 <= t1 {
                r16_sdot::<4, Q4, 1>(g, acts, t, half, out, ldo);
                t += 4;
            }
        }
    }
    // decode and the last 1–3 tokens: both halves of each block while its lines are in L1, the tokens in one pass
    // (a server's 2 or 3 decoding streams read the group once)
    match t1.saturating_sub(t) {
        3 => r16_sdot::<3, Q4, 2>(g, acts, t, 0, out, ldo),
        2 => r16_sdot::<2, Q4, 2>(g, acts, t, 0, out, ldo),
        1 => r16_sdot::<1, Q4, 2>(g, acts, t, 0, out, ldo),
        _ => {}
    }
}

/// Rows `8·h0 .. 8·(h0 + NH)` of the group against tokens `t .. t + T` (see [`gemm_r16_sdot`]).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn r16_sdot<const T: usize, const Q4: bool, const NH: usize>(
    g: &[u8],
    acts: &Acts,
    t: usize,
    h0: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let bb = block_bytes_of(Q4);
    let nb = g.len() / bb;
    let (x, xd, xs) = acts.q8_tile::<T>(t);
    debug_assert!(x.iter().all(|x| x.len() == nb) && g.len() == nb * bb);
    let (m4, flip) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x80));
    // (half, token, rows 4i .. 4i + 4 of the half)
    let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; NH];
    for b in 0..nb {
        let blk = g.as_ptr().add(b * bb);
        // token j's block b: k-group c (columns 4c .. 4c + 4) is lane c % 4 of register c / 4
        let mut xv = [[vdupq_n_s8(0); 2]; T];
        for (j, xv) in xv.iter_mut().enumerate() {
            let q = x[j].get_unchecked(b).qs.as_ptr();
            *xv = [vld1q_s8(q), vld1q_s8(q.add(16))];
        }
        for (hh, acc) in acc.iter_mut().enumerate() {
            let half = h0 + hh;
            // chunk c, rows 8·half + 4i .. + 4: the 16 bytes at q + 64c + 16i
            let q = blk.add(32 + 32 * half);
            let mut s = [[vdupq_n_s32(0); 2]; T];
            if Q4 {
                for (j, s) in s.iter_mut().enumerate() {
                    *s = [vdupq_n_s32(-8 * *xs[j].get_unchecked(b)); 2];
                }
                // low nibbles of chunk c: k-group c (register 0); high nibbles: k-group c + 4 (register 1)
                unroll!(C in [0 1 2 3] {
                    let p = q.add(64 * C as usize);
                    let v = [vld1q_u8(p), vld1q_u8(p.add(16))];
                    let lo = v.map(|v| vreinterpretq_s8_u8(vandq_u8(v, m4)));
                    let hi = v.map(|v| vreinterpretq_s8_u8(vshrq_n_u8(v, 4)));
                    for (s, xv) in s.iter_mut().zip(&xv) {
                        for i in 0..2 {
                            s[i] = sdot_lane::<C>(s[i], lo[i], xv[0]);
                            s[i] = sdot_lane::<C>(s[i], hi[i], xv[1]);
                        }
                    }
                });
            } else {
                unroll!(C in [0 1 2 3 4 5 6 7] {
                    let p = q.add(64 * C as usize);
                    let w = [vld1q_u8(p), vld1q_u8(p.add(16))].map(|v| vreinterpretq_s8_u8(veorq_u8(v, flip)));
                    for (s, xv) in s.iter_mut().zip(&xv) {
                        for i in 0..2 {
                            s[i] = sdot_lane::<{ C % 4 }>(s[i], w[i], xv[C as usize / 4]);
                        }
                    }
                });
            }
            let dw = load_f16x8(blk.add(16 * half));
            for (j, (acc, s)) in acc.iter_mut().zip(&s).enumerate() {
                let xd = *xd[j].get_unchecked(b);
                for i in 0..2 {
                    acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(s[i]), vmulq_n_f32(dw[i], xd));
                }
            }
        }
    }
    // bounds asserted by the caller
    for (hh, acc) in acc.iter().enumerate() {
        for (j, acc) in acc.iter().enumerate() {
            for (i, acc) in acc.iter().enumerate() {
                vst1q_f32(out.as_mut_ptr().add((t + j) * ldo + 8 * (h0 + hh) + 4 * i), *acc);
            }
        }
    }
}

/// R16 with `usmmla` (FEAT_I8MM): one instruction is 2 rows × 8 columns of weights against the same 8 columns of
/// 2 tokens, twice the multiply-adds of an `sdot`. The layout holds 4 columns per row together, so each pair of
/// chunks (k-groups `2p`, `2p + 1`) is zipped by 32-bit lanes into rows of 8 consecutive columns `8p .. 8p + 8`
/// (one `zip` per weight register, shared by the tile's tokens); a token pair's columns `8p ..` are two 8-byte
/// loads. The sums come out as `(row, token)` 2 × 2 squares, which the f32 sums keep (the scales multiplied in
/// the same shape: each row's scale twice × the two tokens') until one `uzp` per 4 outputs at the end.
/// `usmmla` rather than `smmla`: the layout's unsigned bytes are its `u8` operand as stored, and each block sum
/// starts at `−OFFSET·Σx` as in the twin (per token pair and block: two loads and four vector instructions, shared
/// by the 4 row pairs), one code path for both types. `smmla` would need Q8_0's weights made signed first, an
/// `eor` per weight register (16 per 8 × 4 tile); for Q4_0's nibbles (0..15) the two are the same. Prefill: one
/// half (8 rows) at a time, two token pairs per pass (8 + 8 sums in registers); the last tokens a pair at a time
/// over both halves; a lone token (decode) through [`gemm_r16_sdot`], as `usmmla` would spend half its products
/// on a second token (the CPU has `sdot`: [`r16`] checked). Bit-identical to [`crate::repack::gemm_r16_ref`].
///
/// Instructions per 32-column block (counted as for [`gemm_r16_sdot`]; not timed), 16 rows × 4 tokens: Q8_0 288
/// (64 `usmmla`, 32 weight `zip`s), Q4_0 302 (64 `usmmla`); 16 rows × 2 tokens: Q8_0 154, Q4_0 178. Half the
/// multiply instructions of `sdot`, but about as many in all: R16 keeps 4 columns of a row together (the x86
/// `vpdpbusd` grouping), so each pass zips the weights into 8-column rows, and the token pairs' operands and
/// scales are built per block. A layout with 8-byte groups (ggml's `q4_0_4x8` for ARM) would drop the zips.
#[target_feature(enable = "neon,i8mm")]
unsafe fn gemm_r16_mmla<const Q4: bool>(g: &[u8], acts: &Acts, t0: usize, t1: usize, out: &mut [f32], ldo: usize) {
    r16_check(Q4, g, acts, t0, t1, out, ldo);
    let mut t = t0;
    if t1.saturating_sub(t0) >= 4 {
        for half in 0..2 {
            t = t0;
            while t + 4 <= t1 {
                r16_mmla::<2, Q4, 1>(g, acts, [[t, t + 1], [t + 2, t + 3]], half, out, ldo);
                t += 4;
            }
        }
    }
    // the last tokens a pair at a time over both halves (the group's lines read once)
    while t + 2 <= t1 {
        r16_mmla::<1, Q4, 2>(g, acts, [[t, t + 1]], 0, out, ldo);
        t += 2;
    }
    // a lone token (decode): `usmmla` would spend half its products on a second token, `sdot` none
    gemm_r16_sdot::<Q4>(g, acts, t, t1, out, ldo);
}

/// Columns `8p .. 8p + 8` of block `b` of two tokens' rows as the 8 × 2 operand of `usmmla`: the first token's in
/// bytes 0..8, the second's in 8..16 (two 8-byte loads).
#[inline]
#[target_feature(enable = "neon")]
unsafe fn cols8(x: [&[BlockQ8_0]; 2], b: usize, p: usize) -> int8x16_t {
    let at = |x: &[BlockQ8_0]| x.get_unchecked(b).qs.as_ptr().add(8 * p) as *const i64;
    vreinterpretq_s8_s64(vld1q_lane_s64::<1>(at(x[1]), vld1q_dup_s64(at(x[0]))))
}

/// Chunks `c` and `c + 1` of rows `4r .. 4r + 4` (the 16 bytes at `q + 64c + 16r` and 64 further) zipped by 32-bit
/// lanes: rows `4r`, `4r + 1` with 8 consecutive columns each (`c`'s 4 then `c + 1`'s), then rows `4r + 2`, `4r + 3`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn zip_chunks(q: *const u8, c: usize, r: usize) -> [uint8x16_t; 2] {
    let a = vreinterpretq_u32_u8(vld1q_u8(q.add(64 * c + 16 * r)));
    let b = vreinterpretq_u32_u8(vld1q_u8(q.add(64 * c + 64 + 16 * r)));
    [vreinterpretq_u8_u32(vzip1q_u32(a, b)), vreinterpretq_u8_u32(vzip2q_u32(a, b))]
}

/// Rows `8·h0 .. 8·(h0 + NH)` of the group against the token pairs `ts` (see [`gemm_r16_mmla`]).
#[inline]
#[target_feature(enable = "neon,i8mm")]
unsafe fn r16_mmla<const P: usize, const Q4: bool, const NH: usize>(
    g: &[u8],
    acts: &Acts,
    ts: [[usize; 2]; P],
    h0: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let bb = block_bytes_of(Q4);
    let nb = g.len() / bb;
    let x: [[&[BlockQ8_0]; 2]; P] = ts.map(|tp| tp.map(|t| acts.q8_row(t)));
    let xd: [[&[f32]; 2]; P] = ts.map(|tp| tp.map(|t| acts.q8_scales(t)));
    let xs: [[&[i32]; 2]; P] = ts.map(|tp| tp.map(|t| acts.q8_sums(t)));
    debug_assert!(x.iter().flatten().all(|x| x.len() == nb) && g.len() == nb * bb);
    let (m4, off) = (vdupq_n_u8(0x0F), vdupq_n_s32(if Q4 { -8 } else { -128 }));
    // (half, pair (ta, tb), row pair i of the half): lanes (2i, ta), (2i, tb), (2i + 1, ta), (2i + 1, tb)
    let mut acc = [[[vdupq_n_f32(0.0); 4]; P]; NH];
    for b in 0..nb {
        let blk = g.as_ptr().add(b * bb);
        for (hh, acc) in acc.iter_mut().enumerate() {
            let half = h0 + hh;
            // chunk c, rows 8·half + 4r .. + 4: the 16 bytes at q + 64c + 16r
            let q = blk.add(32 + 32 * half);
            let mut s = [[vdupq_n_s32(0); 4]; P];
            // each block sum starts at −OFFSET·Σx of (ta, tb, ta, tb), as in the twin
            for (k, s) in s.iter_mut().enumerate() {
                let xs2 = vtrn1q_s32(vld1q_dup_s32(xs[k][0].as_ptr().add(b)), vld1q_dup_s32(xs[k][1].as_ptr().add(b)));
                *s = [vmulq_s32(xs2, off); 4];
            }
            if Q4 {
                // chunks 2c, 2c + 1: low nibbles are columns 8c .. 8c + 8, high nibbles 16 + 8c ..
                for c in 0..2 {
                    let (mut xl, mut xh) = ([vdupq_n_s8(0); P], [vdupq_n_s8(0); P]);
                    for k in 0..P {
                        (xl[k], xh[k]) = (cols8(x[k], b, c), cols8(x[k], b, c + 2));
                    }
                    for r in 0..2 {
                        for (z, w) in zip_chunks(q, 2 * c, r).into_iter().enumerate() {
                            let (lo, hi) = (vandq_u8(w, m4), vshrq_n_u8(w, 4));
                            for k in 0..P {
                                s[k][2 * r + z] = usmmla(s[k][2 * r + z], lo, xl[k]);
                                s[k][2 * r + z] = usmmla(s[k][2 * r + z], hi, xh[k]);
                            }
                        }
                    }
                }
            } else {
                for p in 0..4 {
                    let mut xp = [vdupq_n_s8(0); P];
                    for k in 0..P {
                        xp[k] = cols8(x[k], b, p);
                    }
                    for r in 0..2 {
                        for (z, w) in zip_chunks(q, 2 * p, r).into_iter().enumerate() {
                            for k in 0..P {
                                s[k][2 * r + z] = usmmla(s[k][2 * r + z], w, xp[k]);
                            }
                        }
                    }
                }
            }
            // each row's scale twice, (2i, 2i, 2i + 1, 2i + 1), times (ta, tb, ta, tb)'s
            let dw = load_f16x8(blk.add(16 * half));
            let dw2 = [
                vzip1q_f32(dw[0], dw[0]),
                vzip2q_f32(dw[0], dw[0]),
                vzip1q_f32(dw[1], dw[1]),
                vzip2q_f32(dw[1], dw[1]),
            ];
            for (k, (acc, s)) in acc.iter_mut().zip(&s).enumerate() {
                let xd2 = vtrn1q_f32(vld1q_dup_f32(xd[k][0].as_ptr().add(b)), vld1q_dup_f32(xd[k][1].as_ptr().add(b)));
                for i in 0..4 {
                    acc[i] = vfmaq_f32(acc[i], vcvtq_f32_s32(s[i]), vmulq_f32(dw2[i], xd2));
                }
            }
        }
    }
    // rows 4r .. 4r + 4 of token ta: the even lanes of row pairs 2r, 2r + 1; of tb the odd ones (bounds asserted
    // by the caller)
    for (hh, acc) in acc.iter().enumerate() {
        for (acc, [ta, tb]) in acc.iter().zip(ts) {
            for r in 0..2 {
                let o = out.as_mut_ptr().add(8 * (h0 + hh) + 4 * r);
                let at = |t: usize| o.add(t * ldo);
                vst1q_f32(at(ta), vuzp1q_f32(acc[2 * r], acc[2 * r + 1]));
                vst1q_f32(at(tb), vuzp2q_f32(acc[2 * r], acc[2 * r + 1]));
            }
        }
    }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_f16(p: *const u8) -> float32x4_t {
    let h = vld1_u16(p as *const u16);
    let out: float32x4_t;
    asm!("fcvtl {o:v}.4s, {i:v}.4h", o = out(vreg) out, i = in(vreg) h, options(pure, nomem, nostack));
    out
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_bf16(p: *const u8) -> float32x4_t {
    vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p as *const u16), 16))
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn load_f32(p: *const u8) -> float32x4_t {
    vld1q_f32(p as *const f32)
}

macro_rules! float_dot {
    ($name:ident, $bytes:expr, $load:ident, $tail:path) => {
        #[target_feature(enable = "neon")]
        unsafe fn $name(w: &[u8], x: &[f32]) -> f32 {
            debug_assert_eq!(w.len(), x.len() * $bytes);
            let n = x.len();
            let (wp, xp) = (w.as_ptr(), x.as_ptr());
            let mut acc = [vdupq_n_f32(0.0); 4];
            let mut i = 0;
            while i + 16 <= n {
                for (a, acc) in acc.iter_mut().enumerate() {
                    let j = i + 4 * a;
                    *acc = vfmaq_f32(*acc, $load(wp.add(j * $bytes)), vld1q_f32(xp.add(j)));
                }
                i += 16;
            }
            while i + 4 <= n {
                acc[0] = vfmaq_f32(acc[0], $load(wp.add(i * $bytes)), vld1q_f32(xp.add(i)));
                i += 4;
            }
            let s = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
            vaddvq_f32(s) + $tail(&w[i * $bytes..], &x[i..])
        }
    };
}

float_dot!(dot_f16, 2, load_f16, super::scalar::dot_f16_ref);
float_dot!(dot_bf16, 2, load_bf16, super::scalar::dot_bf16_ref);
float_dot!(dot_f32, 4, load_f32, super::scalar::dot_f32_ref);

/// An F16 row to f32, 4 values per `fcvtl`, the tail by the twin.
#[target_feature(enable = "neon")]
unsafe fn widen_f16(w: &[u8], out: &mut [f32]) {
    let n = out.len().min(w.len() / 2);
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(out.as_mut_ptr().add(i), load_f16(w.as_ptr().add(2 * i)));
        i += 4;
    }
    super::scalar::widen_f16_ref(&w[2 * i..], &mut out[i..]);
}

/// `out += a · w` for an F16 row: 4 lanes per step (`fcvtl` widening), a scalar tail.
#[target_feature(enable = "neon")]
unsafe fn axpy_f16(a: f32, w: &[u8], out: &mut [f32]) {
    debug_assert_eq!(w.len(), out.len() * 2);
    let n = out.len();
    let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 4 <= n {
        vst1q_f32(op.add(i), vfmaq_n_f32(vld1q_f32(op.add(i)), load_f16(wp.add(2 * i)), a));
        i += 4;
    }
    super::scalar::axpy_f16_ref(a, &w[2 * i..], &mut out[i..]);
}

/// Rows of the f32 micro-tile (16 sums + 2 of B + 1 broadcast of the 32 q registers).
const SGEMM_MR: usize = 8;

/// f32 micro-tile ([`crate::sgemm`]): up to 8 rows × 8 columns in 16 q-register sums; per `p` two loads of B,
/// one broadcast load of packed A per row, two fused multiply-adds per row. Tiles narrower than 8 columns (the edges)
/// go to the scalar twin, which computes the same fused chain.
#[target_feature(enable = "neon")]
unsafe fn sgemm_tile(t: &Tile, c: &mut [f32], ldc: usize) {
    t.check(c, ldc);
    debug_assert_eq!(t.mr, SGEMM_MR);
    if t.n != 8 {
        return crate::sgemm::tile_ref(t, c, ldc);
    }
    macro_rules! go {
        ($($m:literal)*) => {
            match t.m {
                $($m => tile_neon::<$m>(t, c, ldc),)*
                _ => unreachable!("tile of {} rows", t.m),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn tile_neon<const MR: usize>(t: &Tile, c: &mut [f32], ldc: usize) {
    let (mut a, mut b, cp) = (t.a.as_ptr(), t.b.as_ptr(), c.as_mut_ptr());
    let mut acc = [[vdupq_n_f32(0.0); 2]; MR];
    if t.accumulate {
        for (i, acc) in acc.iter_mut().enumerate() {
            *acc = [vld1q_f32(cp.add(i * ldc)), vld1q_f32(cp.add(i * ldc + 4))];
        }
    }
    for _ in 0..t.k {
        let (b0, b1) = (vld1q_f32(b), vld1q_f32(b.add(4)));
        b = b.wrapping_add(t.ldb);
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = vld1q_dup_f32(a.add(i));
            acc[0] = vfmaq_f32(acc[0], av, b0);
            acc[1] = vfmaq_f32(acc[1], av, b1);
        }
        a = a.add(SGEMM_MR);
    }
    for (i, acc) in acc.iter().enumerate() {
        vst1q_f32(cp.add(i * ldc), acc[0]);
        vst1q_f32(cp.add(i * ldc + 4), acc[1]);
    }
}

super::strided_f16!("neon", dot_f16, axpy_f16);
