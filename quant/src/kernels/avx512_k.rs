//! AVX-512 VNNI prefill kernels of the R16 layout of Q4_K and Q6_K ([`crate::repack_k`]): per super-block, one
//! `vpdpbusd` per 4 columns covers the 16 rows, each sub-block's i32 sums are multiplied by the 16 rows' scales
//! (`vpmulld`), and the super-block's integer totals go to f32 once per token. The super-block loop is outside:
//! each super-block of the group is unpacked once ([`unpack`]: the weights as bytes, 4 KB in L1, the scales and
//! mins widened) for a chunk of up to 64 tokens, which tiles of up to 8 tokens then read back ([`tile`]); each
//! token's accumulator waits in `out` between super-blocks (Q4_K's mins in a chunk-sized array). Per 8-token
//! tile this saved the unpack (Q6_K: two shifts, two masks, a shift and an or per 64 bytes; Q4_K: the 6-bit
//! scales) — 188 → 258 GFLOP/s for Q6_K on one thread. The float steps are the twin's, in its order:
//! bit-identical to [`crate::repack_k::gemm_r16k_ref`].
//!
//! Safety contract: as `avx512.rs`, with `avx512vnni`; reached only after `vnni()` said yes. Shapes are asserted
//! once per call; the tiles index unchecked inside them.

use std::arch::x86_64::*;

use super::avx2::prefetch_lines;
use crate::repack::R16;
use crate::{Acts, BlockQ8_K};

/// Tokens per chunk: each super-block is unpacked once per chunk; the chunk's activations of one super-block
/// (64 × 292 B) stay in L1/L2.
const CHUNK: usize = 64;

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
    let nb = g.len() / bb;
    let mut u = Unpacked {
        wq: [_mm512_setzero_si512(); 64],
        sc: [_mm512_setzero_si512(); 16],
        mins: [_mm512_setzero_si512(); 4],
        dw: _mm512_setzero_ps(),
        dm: _mm512_setzero_ps(),
    };
    let mut acc_m = [_mm512_setzero_ps(); CHUNK];
    for c0 in (t0..t1).step_by(CHUNK) {
        let c1 = (c0 + CHUNK).min(t1);
        acc_m.fill(_mm512_setzero_ps());
        for b in 0..nb {
            let blk = g.as_ptr().add(b * bb);
            prefetch_lines(blk.add(bb), bb); // the group's next super-block
            unpack::<Q6>(blk, &mut u);
            let mut t = c0;
            while t < c1 {
                let n = (c1 - t).min(8);
                let m = &mut acc_m[t - c0..];
                match n {
                    8 => tile::<8, Q6>(&u, acts, b, t, out, ldo, m),
                    7 => tile::<7, Q6>(&u, acts, b, t, out, ldo, m),
                    6 => tile::<6, Q6>(&u, acts, b, t, out, ldo, m),
                    5 => tile::<5, Q6>(&u, acts, b, t, out, ldo, m),
                    4 => tile::<4, Q6>(&u, acts, b, t, out, ldo, m),
                    3 => tile::<3, Q6>(&u, acts, b, t, out, ldo, m),
                    2 => tile::<2, Q6>(&u, acts, b, t, out, ldo, m),
                    _ => tile::<1, Q6>(&u, acts, b, t, out, ldo, m),
                }
                t += n;
            }
        }
        // the twin's `acc − acc_m` (Q6_K: acc_m stays 0)
        for t in c0..c1 {
            let o = out.as_mut_ptr().add(t * ldo);
            _mm512_storeu_ps(o, _mm512_sub_ps(_mm512_loadu_ps(o), acc_m[t - c0]));
        }
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

/// One super-block of a group, unpacked. `wq`: the weights as unsigned bytes, 64 bytes = 4 columns × 16 rows per
/// register (Q4_K: sub-block `j` of 32 columns is `wq[8j..8j + 8]`; Q6_K: `u = q + 32`, sub-block `j` of 16
/// columns is `wq[4j..4j + 4]`); `sc`: each sub-block's 16 row scales as i32 (Q4_K: 8 of them); `mins`: Q4_K's
/// mins of sub-blocks `2k, 2k + 1` as i16 pairs (for `vpdpwssd`); `dw`, `dm`: the rows' `d` and `dmin`.
struct Unpacked {
    wq: [__m512i; 64],
    sc: [__m512i; 16],
    mins: [__m512i; 4],
    dw: __m512,
    dm: __m512,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn unpack<const Q6: bool>(blk: *const u8, u: &mut Unpacked) {
    let m4 = _mm512_set1_epi8(0x0F);
    u.dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
    if Q6 {
        let m3 = _mm512_set1_epi8(0x03);
        for j in 0..16 {
            u.sc[j] = _mm512_cvtepi8_epi32(_mm_loadu_si128(blk.add(32 + 16 * j) as *const __m128i));
            for i in 0..4 {
                let kg = 4 * j + i;
                let (c, nib, e, sh) = (kg % 32, kg / 32, kg % 16, kg / 16);
                let lo =
                    _mm512_and_si512(srl16(_mm512_loadu_si512(blk.add(288 + 64 * c) as *const _), 4 * nib as u32), m4);
                let hb =
                    _mm512_and_si512(srl16(_mm512_loadu_si512(blk.add(2336 + 64 * e) as *const _), 2 * sh as u32), m3);
                u.wq[kg] = _mm512_or_si512(lo, _mm512_slli_epi16::<4>(hb));
            }
        }
        return;
    }
    u.dm = _mm512_cvtph_ps(_mm256_loadu_si256(blk.add(32) as *const __m256i));
    let (w0, w1, w2) = (
        _mm512_loadu_si512(blk.add(64) as *const _),
        _mm512_loadu_si512(blk.add(128) as *const _),
        _mm512_loadu_si512(blk.add(192) as *const _),
    );
    let (m63, m15, m3_32) = (_mm512_set1_epi32(63), _mm512_set1_epi32(15), _mm512_set1_epi32(3));
    // the 16 rows' scale (`w = w0`) or min (`w = w1`) of sub-block j: get_scale_min_k4 on each row's words
    let six = |w: __m512i, j: u32, lo_shift: u32| {
        if j < 4 {
            _mm512_and_si512(srl32(w, 8 * j), m63)
        } else {
            let k = 8 * (j - 4);
            let hi = _mm512_slli_epi32::<4>(_mm512_and_si512(srl32(w, k + 6), m3_32));
            _mm512_or_si512(_mm512_and_si512(srl32(w2, k + lo_shift), m15), hi)
        }
    };
    for k in 0..4u32 {
        u.mins[k as usize] = _mm512_or_si512(six(w1, 2 * k, 4), _mm512_slli_epi32::<16>(six(w1, 2 * k + 1, 4)));
    }
    for j in 0..8 {
        u.sc[j] = six(w0, j as u32, 0);
        let (c, hi) = (j / 2, (j % 2) as u32);
        for gg in 0..8 {
            let v = _mm512_loadu_si512(blk.add(256 + 64 * (8 * c + gg)) as *const _);
            u.wq[8 * j + gg] = _mm512_and_si512(srl16(v, 4 * hi), m4);
        }
    }
}

/// Super-block `b` of tokens `t..t + T`: each sub-block's `Σ u·y` by `vpdpbusd` (4 columns × 16 rows each; Q6_K's
/// sum starts from its offset term `−32·Σ y`), times the rows' scales, summed exactly; Q4_K's mins through
/// `vpdpwssd` with the activations' per-32 sums into `acc_m`; then `acc = fma(isum, d·y.d, acc)` in `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const T: usize, const Q6: bool>(
    u: &Unpacked,
    acts: &Acts,
    b: usize,
    t: usize,
    out: &mut [f32],
    ldo: usize,
    acc_m: &mut [__m512],
) {
    let y: [&BlockQ8_K; T] = std::array::from_fn(|j| acts.q8k_row(t + j).get_unchecked(b));
    let mut isum = [_mm512_setzero_si512(); T];
    if Q6 {
        for j in 0..16 {
            for (tt, y) in y.iter().enumerate() {
                let q = y.qs.as_ptr().add(16 * j);
                let mut s = _mm512_set1_epi32(-32 * *y.bsums.get_unchecked(j) as i32);
                for i in 0..4 {
                    s = _mm512_dpbusd_epi32(s, u.wq[4 * j + i], bcast4(q.add(4 * i)));
                }
                isum[tt] = _mm512_add_epi32(isum[tt], _mm512_mullo_epi32(s, u.sc[j]));
            }
        }
    } else {
        for j in 0..8 {
            for (tt, y) in y.iter().enumerate() {
                let q = y.qs.as_ptr().add(32 * j);
                let mut s = _mm512_setzero_si512();
                for gg in 0..8 {
                    s = _mm512_dpbusd_epi32(s, u.wq[8 * j + gg], bcast4(q.add(4 * gg)));
                }
                isum[tt] = _mm512_add_epi32(isum[tt], _mm512_mullo_epi32(s, u.sc[j]));
            }
        }
        for (tt, y) in y.iter().enumerate() {
            let bs = &y.bsums;
            let mut m = _mm512_setzero_si512();
            for (k, mn) in u.mins.iter().enumerate() {
                // Σ of 32 activations: |·| ≤ 32·127, an i16
                let ys = |j: usize| (bs[2 * j] as i32 + bs[2 * j + 1] as i32) as i16 as u16 as u32;
                let pair = (ys(2 * k) | ys(2 * k + 1) << 16) as i32;
                m = _mm512_dpwssd_epi32(m, *mn, _mm512_set1_epi32(pair));
            }
            let dy = _mm512_set1_ps(y.d);
            acc_m[tt] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(u.dm, dy), acc_m[tt]);
        }
    }
    for (tt, y) in y.iter().enumerate() {
        let o = out.as_mut_ptr().add((t + tt) * ldo);
        // the first super-block starts the twin's zero accumulator
        let acc = if b == 0 { _mm512_setzero_ps() } else { _mm512_loadu_ps(o) };
        let dd = _mm512_mul_ps(u.dw, _mm512_set1_ps(y.d));
        _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[tt]), dd, acc));
    }
}
