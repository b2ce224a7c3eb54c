//! AVX-512 VNNI prefill kernels of the R16 layout of Q4_K and Q6_K ([`crate::repack_k`]): per super-block, one
//! `vpdpbusd` per 4 columns covers the 16 rows, each sub-block's i32 sums are multiplied by the 16 rows' scales
//! (`vpmulld`), and the super-block's integer totals go to f32 once per token. Tiles of up to 4 tokens (their sums,
//! mins and accumulators: 16 of the 32 zmm registers, the sub-block's weights 8 more). Bit-identical to
//! [`crate::repack_k::gemm_r16k_ref`].
//!
//! Safety contract: as `avx512.rs`, with `avx512vnni`; reached only after `vnni()` said yes. Shapes are asserted
//! once per call; the tiles index unchecked inside them.

use std::arch::x86_64::*;

use super::avx2::{prefetch_lines, PREFETCH};
use crate::repack::R16;
use crate::{Acts, BlockQ8_K};

/// The group's 16 rows against tokens `t0..t1` into `out[t * ldo + r]` (a [`super::GemmR16`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn gemm_r16k<const Q6: bool>(
    g: &[u8],
    acts: &Acts,
    t0: usize,
    t1: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let bb = R16 * if Q6 { 210 } else { 144 };
    assert!(t1 <= t0 || g.len() == acts.q8k_row(t0).len() * bb, "R16 group and activations disagree");
    assert!(t1 <= t0 || out.len() >= (t1 - 1) * ldo + R16, "R16 output out of bounds");
    let mut t = t0;
    while t + 8 <= t1 {
        tile::<8, Q6>(g, acts, t, out, ldo);
        t += 8;
    }
    if t + 4 <= t1 {
        tile::<4, Q6>(g, acts, t, out, ldo);
        t += 4;
    }
    match t1.saturating_sub(t) {
        3 => tile::<3, Q6>(g, acts, t, out, ldo),
        2 => tile::<2, Q6>(g, acts, t, out, ldo),
        1 => tile::<1, Q6>(g, acts, t, out, ldo),
        _ => {}
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn srl32(v: __m512i, k: u32) -> __m512i {
    _mm512_srl_epi32(v, _mm_cvtsi32_si128(k as i32))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn srl16(v: __m512i, k: u32) -> __m512i {
    _mm512_srl_epi16(v, _mm_cvtsi32_si128(k as i32))
}

/// The 4 activation bytes at `q` in every i32 lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn bcast4(q: *const i8) -> __m512i {
    _mm512_set1_epi32((q as *const i32).read_unaligned())
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile<const T: usize, const Q6: bool>(g: &[u8], acts: &Acts, t: usize, out: &mut [f32], ldo: usize) {
    let bb = R16 * if Q6 { 210 } else { 144 };
    let nb = g.len() / bb;
    let y: [&[BlockQ8_K]; T] = std::array::from_fn(|j| acts.q8k_row(t + j));
    debug_assert!(y.iter().all(|y| y.len() == nb));
    let m4 = _mm512_set1_epi8(0x0F);
    let m3 = _mm512_set1_epi8(0x03);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    let p = g.as_ptr();
    for b in 0..nb {
        let blk = p.add(b * bb);
        prefetch_lines(blk.add(PREFETCH), bb);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        let mut isum = [_mm512_setzero_si512(); T];
        if !Q6 {
            let dm = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i));
            let (w0, w1, w2) = (
                _mm512_loadu_si512(blk.add(64) as *const _),
                _mm512_loadu_si512(blk.add(128) as *const _),
                _mm512_loadu_si512(blk.add(192) as *const _),
            );
            let (m63, m15, m3_32) = (_mm512_set1_epi32(63), _mm512_set1_epi32(15), _mm512_set1_epi32(3));
            // the 16 rows' scale (`sc`) or min (`w = w1`) of sub-block j: get_scale_min_k4 on each row's words
            let six = |w: __m512i, j: u32, lo_shift: u32| {
                if j < 4 {
                    _mm512_and_si512(srl32(w, 8 * j), m63)
                } else {
                    let k = 8 * (j - 4);
                    let hi = _mm512_slli_epi32::<4>(_mm512_and_si512(srl32(w, k + 6), m3_32));
                    _mm512_or_si512(_mm512_and_si512(srl32(w2, k + lo_shift), m15), hi)
                }
            };
            // the mins in i16 pairs (sub-blocks 2k, 2k + 1), for `vpdpwssd` with the activations' per-32 sums
            let mins: [__m512i; 4] = std::array::from_fn(|k| {
                _mm512_or_si512(six(w1, 2 * k as u32, 4), _mm512_slli_epi32::<16>(six(w1, 2 * k as u32 + 1, 4)))
            });
            let mut msum = [_mm512_setzero_si512(); T];
            for (tt, m) in msum.iter_mut().enumerate() {
                let bs = &y[tt].get_unchecked(b).bsums;
                for (k, mn) in mins.iter().enumerate() {
                    // Σ of 32 activations: |·| ≤ 32·127, an i16
                    let ys = |j: usize| (bs[2 * j] as i32 + bs[2 * j + 1] as i32) as i16 as u16 as u32;
                    let pair = (ys(2 * k) | ys(2 * k + 1) << 16) as i32;
                    *m = _mm512_dpwssd_epi32(*m, *mn, _mm512_set1_epi32(pair));
                }
            }
            for j in 0..8u32 {
                let sc = six(w0, j, 0);
                let (c, hi) = ((j / 2) as usize, j % 2);
                let mut wv = [_mm512_setzero_si512(); 8];
                for (gg, w) in wv.iter_mut().enumerate() {
                    let v = _mm512_loadu_si512(blk.add(256 + 64 * (8 * c + gg)) as *const _);
                    *w = _mm512_and_si512(srl16(v, 4 * hi), m4);
                }
                let col = 64 * c + 32 * hi as usize;
                for tt in 0..T {
                    let q = y[tt].get_unchecked(b).qs.as_ptr().add(col);
                    let mut s = _mm512_setzero_si512();
                    for (gg, w) in wv.iter().enumerate() {
                        s = _mm512_dpbusd_epi32(s, *w, bcast4(q.add(4 * gg)));
                    }
                    isum[tt] = _mm512_add_epi32(isum[tt], _mm512_mullo_epi32(s, sc));
                }
            }
            for tt in 0..T {
                let dy = _mm512_set1_ps(y[tt].get_unchecked(b).d);
                acc_m[tt] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(msum[tt]), _mm512_mul_ps(dm, dy), acc_m[tt]);
            }
        } else {
            for j in 0..16u32 {
                let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(32 + 16 * j as usize) as *const __m128i));
                let mut wv = [_mm512_setzero_si512(); 4];
                for (i, w) in wv.iter_mut().enumerate() {
                    let kg = 4 * j + i as u32;
                    let (c, nib, e, sh) = (kg % 32, kg / 32, kg % 16, kg / 16);
                    let lo = _mm512_and_si512(
                        srl16(_mm512_loadu_si512(blk.add(288 + 64 * c as usize) as *const _), 4 * nib),
                        m4,
                    );
                    let hb = _mm512_and_si512(
                        srl16(_mm512_loadu_si512(blk.add(2336 + 64 * e as usize) as *const _), 2 * sh),
                        m3,
                    );
                    *w = _mm512_or_si512(lo, _mm512_slli_epi16::<4>(hb));
                }
                for tt in 0..T {
                    let yb = y[tt].get_unchecked(b);
                    let q = yb.qs.as_ptr().add(16 * j as usize);
                    // Σ (u − 32)·y = Σ u·y − 32·Σ y: the correction is the sum's start value
                    let mut s = _mm512_set1_epi32(-32 * *yb.bsums.get_unchecked(j as usize) as i32);
                    for (i, w) in wv.iter().enumerate() {
                        s = _mm512_dpbusd_epi32(s, *w, bcast4(q.add(4 * i)));
                    }
                    isum[tt] = _mm512_add_epi32(isum[tt], _mm512_mullo_epi32(s, sc));
                }
            }
        }
        for tt in 0..T {
            let dy = _mm512_set1_ps(y[tt].get_unchecked(b).d);
            acc[tt] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[tt]), _mm512_mul_ps(dw, dy), acc[tt]);
        }
    }
    for (j, (a, m)) in acc.iter().zip(&acc_m).enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add((t + j) * ldo), _mm512_sub_ps(*a, *m));
    }
}
