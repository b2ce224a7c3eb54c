//! AVX-512 VNNI prefill kernels of the R16 layout of Q4_K and Q6_K ([`crate::repack_k`]): per super-block, one
//! `vpdpbusd` per 4 columns covers the 16 rows, each sub-block's i32 sums are multiplied by the 16 rows' scales
//! (`vpmulld`), and the super-block's integer totals go to f32 once per token. Q4_K: tiles of up to 8 tokens run
//! the whole row (their sums, mins and accumulators in registers; a nibble unpack is two operations per 64 bytes).
//! Q6_K: the super-block loop is outside, each super-block unpacked once for every token ([`gemm_q6`]).
//! Bit-identical to [`crate::repack_k::gemm_r16k_ref`].
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
    if Q6 {
        return gemm_q6(g, acts, t0, t1, out, ldo);
    }
    let mut t = t0;
    while t + 8 <= t1 {
        tile::<8>(g, acts, t, out, ldo);
        t += 8;
    }
    if t + 4 <= t1 {
        tile::<4>(g, acts, t, out, ldo);
        t += 4;
    }
    match t1.saturating_sub(t) {
        3 => tile::<3>(g, acts, t, out, ldo),
        2 => tile::<2>(g, acts, t, out, ldo),
        1 => tile::<1>(g, acts, t, out, ldo),
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
unsafe fn tile<const T: usize>(g: &[u8], acts: &Acts, t: usize, out: &mut [f32], ldo: usize) {
    let bb = R16 * 144;
    let nb = g.len() / bb;
    let y: [&[BlockQ8_K]; T] = std::array::from_fn(|j| acts.q8k_row(t + j));
    debug_assert!(y.iter().all(|y| y.len() == nb));
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    let p = g.as_ptr();
    for b in 0..nb {
        let blk = p.add(b * bb);
        prefetch_lines(blk.add(PREFETCH), bb);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        let mut isum = [_mm512_setzero_si512(); T];
        {
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

/// Q6_K: each super-block of the group is unpacked once for all the call's tokens — the 6-bit weights `u = q + 32`
/// into 64 registers' worth of bytes (4 KB, in L1) and the 16 sub-blocks' scales widened to i32 — then tiles of up
/// to 8 tokens read it back, so the unpack (two shifts, two masks, a shift and an or per 64 bytes) is paid once
/// per super-block instead of once per tile. Each token's accumulator lives in `out` between super-blocks
/// (`acc = fma(isum, d·y.d, acc)` in super-block order: the twin's operations, so the result is bit-identical).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemm_q6(g: &[u8], acts: &Acts, t0: usize, t1: usize, out: &mut [f32], ldo: usize) {
    let bb = R16 * 210;
    let nb = g.len() / bb;
    let (m4, m3) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x03));
    let mut wq = [_mm512_setzero_si512(); 64];
    let mut sc = [_mm512_setzero_si512(); 16];
    let p = g.as_ptr();
    for b in 0..nb {
        let blk = p.add(b * bb);
        prefetch_lines(blk.add(bb), bb); // the next super-block of the group
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        for j in 0..16 {
            sc[j] = _mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(32 + 16 * j) as *const __m128i));
            for i in 0..4 {
                let kg = 4 * j + i;
                let (c, nib, e, sh) = (kg % 32, kg / 32, kg % 16, kg / 16);
                let lo =
                    _mm512_and_si512(srl16(_mm512_loadu_si512(blk.add(288 + 64 * c) as *const _), 4 * nib as u32), m4);
                let hb =
                    _mm512_and_si512(srl16(_mm512_loadu_si512(blk.add(2336 + 64 * e) as *const _), 2 * sh as u32), m3);
                wq[kg] = _mm512_or_si512(lo, _mm512_slli_epi16::<4>(hb));
            }
        }
        let mut t = t0;
        while t < t1 {
            let n = (t1 - t).min(8);
            match n {
                8 => tile_q6::<8>(&wq, &sc, dw, acts, b, t, out, ldo),
                7 => tile_q6::<7>(&wq, &sc, dw, acts, b, t, out, ldo),
                6 => tile_q6::<6>(&wq, &sc, dw, acts, b, t, out, ldo),
                5 => tile_q6::<5>(&wq, &sc, dw, acts, b, t, out, ldo),
                4 => tile_q6::<4>(&wq, &sc, dw, acts, b, t, out, ldo),
                3 => tile_q6::<3>(&wq, &sc, dw, acts, b, t, out, ldo),
                2 => tile_q6::<2>(&wq, &sc, dw, acts, b, t, out, ldo),
                _ => tile_q6::<1>(&wq, &sc, dw, acts, b, t, out, ldo),
            }
            t += n;
        }
    }
}

/// Super-block `b` of tokens `t..t + T` against the unpacked weights: per sub-block `j`, four `vpdpbusd` per
/// token starting from the offset term `−32·Σ y` (Σ (u − 32)·y = Σ u·y − 32·Σ y), times the 16 rows' scales.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_q6<const T: usize>(
    wq: &[__m512i; 64],
    sc: &[__m512i; 16],
    dw: __m512,
    acts: &Acts,
    b: usize,
    t: usize,
    out: &mut [f32],
    ldo: usize,
) {
    let y: [&BlockQ8_K; T] = std::array::from_fn(|j| acts.q8k_row(t + j).get_unchecked(b));
    let mut isum = [_mm512_setzero_si512(); T];
    for j in 0..16 {
        for tt in 0..T {
            let q = y[tt].qs.as_ptr().add(16 * j);
            let mut s = _mm512_set1_epi32(-32 * *y[tt].bsums.get_unchecked(j) as i32);
            for i in 0..4 {
                s = _mm512_dpbusd_epi32(s, wq[4 * j + i], bcast4(q.add(4 * i)));
            }
            isum[tt] = _mm512_add_epi32(isum[tt], _mm512_mullo_epi32(s, sc[j]));
        }
    }
    for (tt, y) in y.iter().enumerate() {
        let o = out.as_mut_ptr().add((t + tt) * ldo);
        // the first super-block starts the twin's zero accumulator
        let acc = if b == 0 { _mm512_setzero_ps() } else { _mm512_loadu_ps(o) };
        let dd = _mm512_mul_ps(dw, _mm512_set1_ps(y.d));
        _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[tt]), dd, acc));
    }
}
