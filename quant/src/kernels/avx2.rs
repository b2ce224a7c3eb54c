//! AVX2 + FMA + F16C kernels.
//!
//! Safety contract: every `unsafe fn` here is `#[target_feature(enable = "avx2,fma,f16c")]` and is reached only
//! through [`KERNELS`], which [`super::kernels`] hands out after `Isa::Avx2.supported()` said yes. Loads are
//! unaligned (`loadu`) and stay inside the slices: lengths are checked with `debug_assert!` and by the callers
//! (rows are whole blocks; `x.len() == w.len() / type size`).

use std::arch::x86_64::*;

use super::Kernels;
use crate::repack::{block_bytes_of, R16};
use crate::sgemm::{Sgemm, Tile};
use crate::{Acts, BlockQ8_0, GgmlType, Isa};

pub static KERNELS: Kernels = Kernels {
    isa: Isa::Avx2,
    dot_q8_0: |w, y| unsafe { dot_q8_0(w, y) },
    dot_q4_0: |w, y| unsafe { dot_q4_0(w, y) },
    dot_f16: |w, x| unsafe { dot_f16(w, x) },
    dot_bf16: |w, x| unsafe { dot_bf16(w, x) },
    dot_f32: |w, x| unsafe { dot_f32(w, x) },
    gemm4_q8_0: Some(|w, y, d, o| unsafe { gemm4_q8_0(w, y, d, o) }),
    gemm4_q4_0: Some(|w, y, d, o| unsafe { gemm4_q4_0(w, y, d, o) }),
    dot_q8_k: super::avx2_k::dot,
    dot_legacy: super::avx2_legacy::dot,
    gemm4_q8_k: super::avx2_k::gemm4,
    r16: |ty| match ty {
        GgmlType::Q4_0 => Some(|g, a, t0, t1, o, ld| unsafe { gemm_r16::<true>(g, a, t0, t1, o, ld) }),
        GgmlType::Q8_0 => Some(|g, a, t0, t1, o, ld| unsafe { gemm_r16::<false>(g, a, t0, t1, o, ld) }),
        _ => None,
    },
    widen_f16: |w, o| unsafe { widen_f16(w, o) },
    axpy_f16: |a, w, o| unsafe { axpy_f16(a, w, o) },
    dots_f16: |r, s, q, o| unsafe { dots_f16(r, s, q, o) },
    axpys_f16: |r, s, w, o| unsafe { axpys_f16(r, s, w, o) },
    sgemm: Some(Sgemm { mr: SGEMM_MR, nr: 16, tile: |t, c, ldc| unsafe { sgemm_tile(t, c, ldc) } }),
    bgemm: || None,
    softmax_cols: |x, r, c, ld, s, inv| unsafe { softmax_cols(x, r, c, ld, s, inv) },
    softmax_online: |x, r, c, ld, s, run| unsafe { softmax_online(x, r, c, ld, s, run) },
    silu_mul: |g, u| unsafe { silu_mul(g, u) },
    quantize_q8_0: |x, o| unsafe { quantize_q8_0(x, o) },
};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Σ qx·qy of 32 signed bytes as 8 f32 lanes (exact: |sum of a lane| ≤ 4·127·127).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_i8(qx: __m256i, qy: __m256i) -> __m256 {
    // maddubs wants unsigned × signed: move the sign of x onto y
    let ax = _mm256_sign_epi8(qx, qx);
    let sy = _mm256_sign_epi8(qy, qx);
    let dot16 = _mm256_maddubs_epi16(ax, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)))
}

/// The f16 at `p` as f32, with F16C (the `half` crate's portable conversion costs more than a block's work).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    f16_bits(u16::from_le_bytes([*p, *p.add(1)]))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_bits(b: u16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b as i32)))
}

/// One block's f32 lanes of Σ qx·qy times its two scales, into `acc`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q8(b: *const u8, by: &BlockQ8_0, acc: __m256) -> __m256 {
    let qx = unpack_q8(b);
    let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
    let d = _mm256_set1_ps(f16_at(b) * f16_bits(by.d.to_bits()));
    _mm256_fmadd_ps(d, mul_sum_i8(qx, qy), acc)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_q4(b: *const u8, by: &BlockQ8_0, acc: __m256) -> __m256 {
    let qx = unpack_q4(b);
    let qy = _mm256_loadu_si256(by.qs.as_ptr() as *const __m256i);
    let d = _mm256_set1_ps(f16_at(b) * f16_bits(by.d.to_bits()));
    _mm256_fmadd_ps(d, mul_sum_i8(qx, qy), acc)
}

/// Bytes ahead of the current block to prefetch (past the end of a row is harmless: prefetches do not fault).
pub(super) const PREFETCH: usize = 4096;

/// Prefetch the cache lines of `len` bytes at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prefetch_lines(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        _mm_prefetch::<_MM_HINT_T0>(p.add(off) as *const i8);
        off += 64;
    }
}

/// Blocks four at a time into four accumulators, so consecutive FMAs do not wait on each other.
macro_rules! block_dot {
    ($name:ident, $bytes:expr, $block:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name(w: &[u8], y: &[BlockQ8_0]) -> f32 {
            debug_assert_eq!(w.len(), y.len() * $bytes);
            let p = w.as_ptr();
            let mut acc = [_mm256_setzero_ps(); 4];
            let quads = y.len() / 4;
            for q in 0..quads {
                // stream the weights: the hardware prefetcher alone keeps too few lines in flight here
                prefetch_lines(p.add(4 * q * $bytes + PREFETCH), 4 * $bytes);
                for (j, a) in acc.iter_mut().enumerate() {
                    let i = 4 * q + j;
                    *a = $block(p.add(i * $bytes), &y[i], *a);
                }
            }
            for i in 4 * quads..y.len() {
                acc[0] = $block(p.add(i * $bytes), &y[i], acc[0]);
            }
            hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
        }
    };
}

block_dot!(dot_q8_0, 34, block_q8);
block_dot!(dot_q4_0, 18, block_q4);

/// A Q4_0 block's 32 weights as signed bytes (low nibbles are elements 0..16, high nibbles 16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q4(b: *const u8) -> __m256i {
    let packed = _mm_loadu_si128(b.add(2) as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    _mm256_sub_epi8(_mm256_and_si256(both, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8))
}

/// A Q8_0 block's 32 weights.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q8(b: *const u8) -> __m256i {
    _mm256_loadu_si256(b.add(2) as *const __m256i)
}

/// One weight row against four tokens: each block is unpacked, made unsigned and its scale converted once, then
/// multiplied with the four tokens' blocks (their scales precomputed as f32). Cost per block and token: a sign,
/// a maddubs, a madd, a convert and an FMA — about half of a lone dot's work. One accumulator per token: the
/// four tokens are the independent FMA chains.
macro_rules! gemm4 {
    ($name:ident, $bytes:expr, $unpack:ident) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name(w: &[u8], y: [&[BlockQ8_0]; 4], d: [&[f32]; 4], out: &mut [f32; 4]) {
            let nb = w.len() / $bytes;
            debug_assert!(y.iter().all(|y| y.len() == nb) && d.iter().all(|d| d.len() == nb));
            let p = w.as_ptr();
            let ones = _mm256_set1_epi16(1);
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in 0..nb {
                let b = p.add(i * $bytes);
                if i % 4 == 0 {
                    prefetch_lines(b.add(PREFETCH), 4 * $bytes);
                }
                let qx = $unpack(b);
                let ax = _mm256_sign_epi8(qx, qx);
                let dw = f16_at(b);
                for j in 0..4 {
                    let qy = _mm256_loadu_si256(y[j].get_unchecked(i).qs.as_ptr() as *const __m256i);
                    let dot16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, qx));
                    let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, ones));
                    acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dw * *d[j].get_unchecked(i)), s, acc[j]);
                }
            }
            for j in 0..4 {
                out[j] = hsum(acc[j]);
            }
        }
    };
}

gemm4!(gemm4_q8_0, 34, unpack_q8);
gemm4!(gemm4_q4_0, 18, unpack_q4);

/// Four independent accumulators over 32 elements per step, then a scalar tail.
macro_rules! float_dot {
    ($name:ident, $bytes:expr, $load:ident, $tail:path) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn $name(w: &[u8], x: &[f32]) -> f32 {
            debug_assert_eq!(w.len(), x.len() * $bytes);
            let n = x.len();
            let (wp, xp) = (w.as_ptr(), x.as_ptr());
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 32 <= n {
                for (a, acc) in acc.iter_mut().enumerate() {
                    let j = i + 8 * a;
                    *acc = _mm256_fmadd_ps($load(wp.add(j * $bytes)), _mm256_loadu_ps(xp.add(j)), *acc);
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps($load(wp.add(i * $bytes)), _mm256_loadu_ps(xp.add(i)), acc[0]);
                i += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            hsum(s) + $tail(&w[i * $bytes..], &x[i..])
        }
    };
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f16(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_bf16(p: *const u8) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)), 16))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_f32(p: *const u8) -> __m256 {
    _mm256_loadu_ps(p as *const f32)
}

float_dot!(dot_f16, 2, load_f16, super::scalar::dot_f16_ref);
float_dot!(dot_bf16, 2, load_bf16, super::scalar::dot_bf16_ref);
float_dot!(dot_f32, 4, load_f32, super::scalar::dot_f32_ref);

/// An F16 row to f32, 8 values per `vcvtph2ps`, the tail by the twin.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn widen_f16(w: &[u8], out: &mut [f32]) {
    let n = out.len().min(w.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(out.as_mut_ptr().add(i), load_f16(w.as_ptr().add(2 * i)));
        i += 8;
    }
    super::scalar::widen_f16_ref(&w[2 * i..], &mut out[i..]);
}

/// `out += a · w` for an F16 row: 8 lanes per step (F16C widening), a scalar tail.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn axpy_f16(a: f32, w: &[u8], out: &mut [f32]) {
    debug_assert_eq!(w.len(), out.len() * 2);
    let n = out.len();
    let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        let o = _mm256_fmadd_ps(av, load_f16(wp.add(2 * i)), _mm256_loadu_ps(op.add(i)));
        _mm256_storeu_ps(op.add(i), o);
        i += 8;
    }
    super::scalar::axpy_f16_ref(a, &w[2 * i..], &mut out[i..]);
}

/// Rows of the f32 micro-tile: 6 × 2 sums + 2 of B + 1 broadcast = 15 of the 16 ymm registers.
const SGEMM_MR: usize = 6;

/// f32 micro-tile ([`crate::sgemm`]): up to 6 rows × 16 columns in 12 ymm sums; per `p` two loads of B, one
/// broadcast of packed A per row, two FMAs per row. Columns past `n` are masked (`vmaskmovps`
/// suppresses faults there).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sgemm_tile(t: &Tile, c: &mut [f32], ldc: usize) {
    t.check(c, ldc);
    debug_assert_eq!(t.mr, SGEMM_MR);
    macro_rules! go {
        ($($m:literal)*) => {
            match (t.m, t.n > 8) {
                $(($m, false) => tile256::<$m, 1>(t, c, ldc),
                  ($m, true) => tile256::<$m, 2>(t, c, ldc),)*
                _ => unreachable!("tile of {} rows", t.m),
            }
        };
    }
    go!(1 2 3 4 5 6)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile256<const MR: usize, const NV: usize>(t: &Tile, c: &mut [f32], ldc: usize) {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let m: [__m256i; NV] =
        std::array::from_fn(|v| _mm256_cmpgt_epi32(_mm256_set1_epi32(t.n as i32 - 8 * v as i32), lanes));
    let (mut a, mut b, cp) = (t.a.as_ptr(), t.b.as_ptr(), c.as_mut_ptr());
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    if t.accumulate {
        for (i, acc) in acc.iter_mut().enumerate() {
            for v in 0..NV {
                acc[v] = _mm256_maskload_ps(cp.wrapping_add(i * ldc + 8 * v), m[v]);
            }
        }
    }
    for _ in 0..t.k {
        let bv: [__m256; NV] = std::array::from_fn(|v| _mm256_maskload_ps(b.wrapping_add(8 * v), m[v]));
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_ps(*a.add(i));
            for v in 0..NV {
                acc[v] = _mm256_fmadd_ps(av, bv[v], acc[v]);
            }
        }
        a = a.add(SGEMM_MR);
        b = b.wrapping_add(t.ldb);
    }
    for (i, acc) in acc.iter().enumerate() {
        for v in 0..NV {
            _mm256_maskstore_ps(cp.wrapping_add(i * ldc + 8 * v), m[v], acc[v]);
        }
    }
}

/// R16 ([`crate::repack`]) without VNNI: each 16-row group as two halves of 8 rows (one i32 lane per row), tokens
/// four at a time. The u8 × i8 products come from `maddubs` (pairs summed in i16) and `madd` (pairs of those into
/// i32). Q4_0's unsigned nibbles times |x| ≤ 127 keep even the sum over a whole block (8 × 2 × 15 × 127 = 30480)
/// inside i16, so one `madd` per block and token; Q8_0 goes back to signed weights and the sign trick
/// (`maddubs(|w|, x·sign(w))`), one `madd` per 4 columns. Exact integers, then the twin's float operations:
/// bit-identical to [`crate::repack::gemm_r16_ref`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemm_r16<const Q4: bool>(
    g: &[u8],
    acts: &Acts,
    t0: usize,
    t1: usize,
    out: &mut [f32],
    ldo: usize,
) {
    // the tiles index blocks and outputs unchecked: shapes checked once here
    let bb = block_bytes_of(Q4);
    assert!(t1 <= t0 || g.len() == acts.q8_row(t0).len() * bb, "R16 group and activations disagree");
    assert!(t1 <= t0 || out.len() >= (t1 - 1) * ldo + R16, "R16 output out of bounds");
    if t1 <= t0 {
        return;
    }
    if t1 - t0 < 4 {
        // decode (one token, or a server's 2–3 streams): both halves of each block while its lines are in L1, every
        // token in the same pass (the group is read from memory once)
        match t1 - t0 {
            3 => r16_halves::<3, Q4, 2>(g, acts, t0, 0, out, ldo),
            2 => r16_halves::<2, Q4, 2>(g, acts, t0, 0, out, ldo),
            _ => r16_halves::<1, Q4, 2>(g, acts, t0, 0, out, ldo),
        }
        return;
    }
    // prefill: one half at a time, four tokens per pass (the registers do not hold both halves' sums)
    for half in 0..2 {
        let mut t = t0;
        while t + 4 <= t1 {
            r16_halves::<4, Q4, 1>(g, acts, t, half, out, ldo);
            t += 4;
        }
        while t < t1 {
            r16_halves::<1, Q4, 1>(g, acts, t, half, out, ldo);
            t += 1;
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn r16_halves<const T: usize, const Q4: bool, const NH: usize>(
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
    let (m4, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi16(1));
    // halves h0..h0 + NH (NH a constant, so the sums stay in registers)
    let mut acc = [[_mm256_setzero_ps(); T]; NH];
    for b in 0..nb {
        let blk = g.as_ptr().add(b * bb);
        prefetch_lines(blk.add(PREFETCH), bb);
        for (hh, acc) in acc.iter_mut().enumerate() {
            let half = h0 + hh;
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * half) as *const __m128i));
            let q = blk.add(32 + 32 * half); // chunk c of this half at q + 64·c
            let mut s = [_mm256_setzero_si256(); T];
            if Q4 {
                let mut s16 = [_mm256_setzero_si256(); T];
                for c in 0..4 {
                    let v = _mm256_loadu_si256(q.add(64 * c) as *const __m256i);
                    let (lo, hi) = (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4));
                    for j in 0..T {
                        let xq = x[j].get_unchecked(b).qs.as_ptr();
                        let xl = _mm256_set1_epi32((xq.add(4 * c) as *const i32).read_unaligned());
                        let xh = _mm256_set1_epi32((xq.add(16 + 4 * c) as *const i32).read_unaligned());
                        let p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
                        s16[j] = _mm256_add_epi16(s16[j], p);
                    }
                }
                for j in 0..T {
                    let off = _mm256_set1_epi32(-8 * *xs[j].get_unchecked(b));
                    s[j] = _mm256_add_epi32(_mm256_madd_epi16(s16[j], ones), off);
                }
            } else {
                let flip = _mm256_set1_epi8(-128);
                for c in 0..8 {
                    let w = _mm256_xor_si256(_mm256_loadu_si256(q.add(64 * c) as *const __m256i), flip);
                    let aw = _mm256_sign_epi8(w, w);
                    for j in 0..T {
                        let xq = x[j].get_unchecked(b).qs.as_ptr();
                        let xb = _mm256_set1_epi32((xq.add(4 * c) as *const i32).read_unaligned());
                        let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xb, w));
                        s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(p, ones));
                    }
                }
            }
            for j in 0..T {
                let d = _mm256_mul_ps(dw, _mm256_set1_ps(*xd[j].get_unchecked(b)));
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[j]), d, acc[j]);
            }
        }
    }
    for (hh, acc) in acc.iter().enumerate() {
        let half = h0 + hh;
        for (j, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((t + j) * ldo + 8 * half), *acc);
        }
    }
}

super::compiled_for! {
    "avx2,fma,f16c":
    fn silu_mul(g: &mut [f32], u: &[f32]) = crate::act::silu_mul_generic;
    fn softmax_cols(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, inv: &mut [f32])
        = crate::softmax::softmax_cols_generic;
    fn softmax_online(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, run: &mut crate::softmax::Running)
        = crate::softmax::softmax_online_generic;
    fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) = crate::q8_0::quantize_row_q8_0_generic;
}

super::strided_f16!("avx2,fma,f16c", dot_f16, axpy_f16);
