//! AVX-512 (F, BW, VL) kernels: two Q8_0/Q4_0 blocks or 16 floats per step; a leftover odd block or tail goes
//! to the AVX2 code (every AVX-512 CPU we accept also passed the AVX2 check).
//!
//! Safety contract: as in `avx2.rs`, with `#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]`,
//! reached only through [`KERNELS`] after `Isa::Avx512.supported()`.

use std::arch::x86_64::*;

use super::avx2;
use super::Kernels;
use crate::bgemm::{Bgemm, TileBf16};
use crate::repack::{block_bytes_of, R16};
use crate::sgemm::{Sgemm, Tile};
use crate::{Acts, BlockQ8_0, GgmlType, Isa};

pub static KERNELS: Kernels = Kernels {
    isa: Isa::Avx512,
    dot_q8_0: |w, y| unsafe { dot_q8_0(w, y) },
    dot_q4_0: |w, y| unsafe { dot_q4_0(w, y) },
    dot_f16: |w, x| unsafe { dot_f16(w, x) },
    dot_bf16: |w, x| unsafe { dot_bf16(w, x) },
    dot_f32: |w, x| unsafe { dot_f32(w, x) },
    // Q4_0: VNNI (`vpdpbusd`: one instruction for maddubs + madd) where the CPU has it, else the AVX2 gemm (wider
    // registers do not help a kernel bound by per-block scale handling). Q8_0: the AVX2 gemm — its VNNI twin
    // measured 34 % slower here (gemmbench: 48 vs 73 GFLOP/s, unexplained yet), so it is not used.
    gemm4_q8_0: Some(|w, y, d, o| unsafe { avx2::gemm4_q8_0(w, y, d, o) }),
    gemm4_q4_0: Some(|w, y, d, o| unsafe {
        if vnni() {
            gemm4_q4_0_vnni(w, y, d, o)
        } else {
            avx2::gemm4_q4_0(w, y, d, o)
        }
    }),
    // without VNNI, the AVX2 tier's R16 kernel
    dot_q8_k: super::avx2_k::dot,
    dot_legacy: super::avx2_legacy::dot,
    gemm4_q8_k: super::avx2_k::gemm4,
    r16: |ty| match ty {
        GgmlType::Q4_0 if vnni() => Some(|g, a, t0, t1, o, ld| unsafe { gemm_r16::<true>(g, a, t0, t1, o, ld) }),
        GgmlType::Q8_0 if vnni() => Some(|g, a, t0, t1, o, ld| unsafe { gemm_r16::<false>(g, a, t0, t1, o, ld) }),
        GgmlType::Q4_K if vnni() => {
            Some(|g, a, t0, t1, o, ld| unsafe { super::avx512_k::gemm_r16k::<false>(g, a, t0, t1, o, ld) })
        }
        GgmlType::Q6_K if vnni() => {
            Some(|g, a, t0, t1, o, ld| unsafe { super::avx512_k::gemm_r16k::<true>(g, a, t0, t1, o, ld) })
        }
        _ => (avx2::KERNELS.r16)(ty),
    },
    widen_f16: |w, o| unsafe { widen_f16(w, o) },
    axpy_f16: |a, w, o| unsafe { axpy_f16(a, w, o) },
    dots_f16: |r, s, q, o| unsafe { dots_f16(r, s, q, o) },
    axpys_f16: |r, s, w, o| unsafe { axpys_f16(r, s, w, o) },
    sgemm: Some(Sgemm { mr: SGEMM_MR, nr: 32, tile: |t, c, ldc| unsafe { sgemm_tile(t, c, ldc) } }),
    bgemm: || bf16().then_some(Bgemm { mr: SGEMM_MR, nr: 32, tile: |t, c, ldc| unsafe { bgemm_tile(t, c, ldc) } }),
    softmax_cols: |x, r, c, ld, s, inv| unsafe { softmax_cols(x, r, c, ld, s, inv) },
    softmax_online: |x, r, c, ld, s, run| unsafe { softmax_online(x, r, c, ld, s, run) },
    silu_mul: |g, u| unsafe { silu_mul(g, u) },
    quantize_q8_0: |x, o| unsafe { quantize_q8_0(x, o) },
};

use super::avx2::{f16_at, f16_bits};

/// AVX512-BF16 present (`vdpbf16ps`: Cooper Lake, Sapphire Rapids, Zen 4 and later).
pub fn bf16() -> bool {
    is_x86_feature_detected!("avx512bf16")
}

/// AVX512-VNNI present (std caches the CPUID answer; this is an atomic load).
fn vnni() -> bool {
    is_x86_feature_detected!("avx512vnni")
}

/// [`avx2`]'s gemm4 with `vpdpbusd` summing four u8·i8 products into each i32 lane in one instruction (no i16
/// intermediate, so no saturation either). Reached only when [`vnni`] said yes.
macro_rules! gemm4_vnni {
    ($name:ident, $bytes:expr, $unpack:path) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], y: [&[BlockQ8_0]; 4], d: [&[f32]; 4], out: &mut [f32; 4]) {
            let nb = w.len() / $bytes;
            debug_assert!(y.iter().all(|y| y.len() == nb) && d.iter().all(|d| d.len() == nb));
            let p = w.as_ptr();
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in 0..nb {
                let b = p.add(i * $bytes);
                if i % 4 == 0 {
                    avx2::prefetch_lines(b.add(avx2::PREFETCH), 4 * $bytes);
                }
                let qx = $unpack(b);
                let ax = _mm256_sign_epi8(qx, qx);
                let dw = f16_at(b);
                for j in 0..4 {
                    let qy = _mm256_loadu_si256(y[j].get_unchecked(i).qs.as_ptr() as *const __m256i);
                    let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, _mm256_sign_epi8(qy, qx));
                    acc[j] =
                        _mm256_fmadd_ps(_mm256_set1_ps(dw * *d[j].get_unchecked(i)), _mm256_cvtepi32_ps(s), acc[j]);
                }
            }
            for j in 0..4 {
                out[j] = avx2::hsum(acc[j]);
            }
        }
    };
}

gemm4_vnni!(gemm4_q4_0_vnni, 18, avx2::unpack_q4);

/// Σ qx·qy of 64 signed bytes (two blocks) as 16 f32 lanes: lanes 0..8 block 0, 8..16 block 1.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn mul_sum_i8_2(qx: __m512i, qy: __m512i) -> __m512 {
    let neg = _mm512_movepi8_mask(qx);
    let ax = _mm512_abs_epi8(qx);
    let sy = _mm512_mask_sub_epi8(qy, neg, _mm512_setzero_si512(), qy);
    let dot16 = _mm512_maddubs_epi16(ax, sy);
    _mm512_cvtepi32_ps(_mm512_madd_epi16(dot16, _mm512_set1_epi16(1)))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn scales(d0: f32, d1: f32) -> __m512 {
    _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1))
}

/// Blocks `i` and `i + 1` into `acc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn pair<const Q4: bool>(p: *const u8, bytes: usize, y: &[BlockQ8_0], i: usize, acc: __m512) -> __m512 {
    let (b0, b1) = (p.add(i * bytes), p.add((i + 1) * bytes));
    let load = |b| if Q4 { avx2::unpack_q4(b) } else { avx2::unpack_q8(b) };
    let qx = _mm512_inserti64x4(_mm512_castsi256_si512(load(b0)), load(b1), 1);
    let qy = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(y[i].qs.as_ptr() as *const __m256i)),
        _mm256_loadu_si256(y[i + 1].qs.as_ptr() as *const __m256i),
        1,
    );
    let d = scales(f16_at(b0) * f16_bits(y[i].d.to_bits()), f16_at(b1) * f16_bits(y[i + 1].d.to_bits()));
    _mm512_fmadd_ps(d, mul_sum_i8_2(qx, qy), acc)
}

/// Four blocks per step in two accumulators; a leftover 1–3 blocks go to the AVX2 kernel.
macro_rules! block_dot512 {
    ($name:ident, $bytes:expr, $q4:expr, $tail:path) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], y: &[BlockQ8_0]) -> f32 {
            debug_assert_eq!(w.len(), y.len() * $bytes);
            let p = w.as_ptr();
            let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let quads = y.len() / 4;
            for q in 0..quads {
                avx2::prefetch_lines(p.add(4 * q * $bytes + avx2::PREFETCH), 4 * $bytes);
                a0 = pair::<$q4>(p, $bytes, y, 4 * q, a0);
                a1 = pair::<$q4>(p, $bytes, y, 4 * q + 2, a1);
            }
            let done = 4 * quads;
            let rest = if done < y.len() { $tail(&w[done * $bytes..], &y[done..]) } else { 0.0 };
            _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + rest
        }
    };
}

block_dot512!(dot_q8_0, 34, false, avx2::dot_q8_0);
block_dot512!(dot_q4_0, 18, true, avx2::dot_q4_0);

macro_rules! float_dot512 {
    ($name:ident, $bytes:expr, $load:ident, $tail:path) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn $name(w: &[u8], x: &[f32]) -> f32 {
            debug_assert_eq!(w.len(), x.len() * $bytes);
            let n = x.len();
            let (wp, xp) = (w.as_ptr(), x.as_ptr());
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            while i + 64 <= n {
                for (a, acc) in acc.iter_mut().enumerate() {
                    let j = i + 16 * a;
                    *acc = _mm512_fmadd_ps($load(wp.add(j * $bytes)), _mm512_loadu_ps(xp.add(j)), *acc);
                }
                i += 64;
            }
            while i + 16 <= n {
                acc[0] = _mm512_fmadd_ps($load(wp.add(i * $bytes)), _mm512_loadu_ps(xp.add(i)), acc[0]);
                i += 16;
            }
            let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            _mm512_reduce_add_ps(s) + $tail(&w[i * $bytes..], &x[i..])
        }
    };
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_f16(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_bf16(p: *const u8) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)), 16))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn load_f32(p: *const u8) -> __m512 {
    _mm512_loadu_ps(p as *const f32)
}

// tails (< 16 elements) go through the AVX2 kernels, which finish with the scalar twin
float_dot512!(dot_f16, 2, load_f16, tail_f16);
float_dot512!(dot_bf16, 2, load_bf16, tail_bf16);
float_dot512!(dot_f32, 4, load_f32, tail_f32);

/// An F16 row to f32, 16 values per `vcvtph2ps`, the tail by the AVX2 kernel (exact, as every tier).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn widen_f16(w: &[u8], out: &mut [f32]) {
    let n = out.len().min(w.len() / 2);
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(out.as_mut_ptr().add(i), load_f16(w.as_ptr().add(2 * i)));
        i += 16;
    }
    avx2::widen_f16(&w[2 * i..], &mut out[i..]);
}

/// `out += a · w` for an F16 row (decode attention's weighted sum over the f16 cache): 16 lanes per step, one
/// FMA per element as the AVX2 kernel and the twin, the tail by the AVX2 kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn axpy_f16(a: f32, w: &[u8], out: &mut [f32]) {
    debug_assert_eq!(w.len(), out.len() * 2);
    let n = out.len();
    let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
    let av = _mm512_set1_ps(a);
    let mut i = 0;
    while i + 16 <= n {
        _mm512_storeu_ps(op.add(i), _mm512_fmadd_ps(av, load_f16(wp.add(2 * i)), _mm512_loadu_ps(op.add(i))));
        i += 16;
    }
    avx2::axpy_f16(a, &w[2 * i..], &mut out[i..]);
}

fn tail_f16(w: &[u8], x: &[f32]) -> f32 {
    (avx2::KERNELS.dot_f16)(w, x)
}
fn tail_bf16(w: &[u8], x: &[f32]) -> f32 {
    (avx2::KERNELS.dot_bf16)(w, x)
}
fn tail_f32(w: &[u8], x: &[f32]) -> f32 {
    (avx2::KERNELS.dot_f32)(w, x)
}

/// R16 ([`crate::repack`]): 16 interleaved weight rows × tokens `t0..t1`, eight tokens per pass over the group
/// (then four, then the last one to three together), so each weight vector loaded and unpacked serves up to eight
/// tokens. Per block and
/// token: eight `vpdpbusd` (16 rows × 4 columns each, the activation's 4 bytes broadcast), the offset correction
/// as the accumulator's start value, one convert and one FMA with the 16 rows' scales. Bit-identical to
/// [`crate::repack::gemm_r16_ref`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn gemm_r16<const Q4: bool>(g: &[u8], acts: &Acts, t0: usize, t1: usize, out: &mut [f32], ldo: usize) {
    // the tiles index blocks and outputs unchecked: shapes checked once here
    let bb = block_bytes_of(Q4);
    assert!(t1 <= t0 || g.len() == acts.q8_row(t0).len() * bb, "R16 group and activations disagree");
    assert!(t1 <= t0 || out.len() >= (t1 - 1) * ldo + R16, "R16 output out of bounds");
    let mut t = t0;
    while t + 8 <= t1 {
        r16_tile::<8, Q4>(g, acts, t, out, ldo);
        t += 8;
    }
    if t + 4 <= t1 {
        r16_tile::<4, Q4>(g, acts, t, out, ldo);
        t += 4;
    }
    // the last 1–3 tokens in one pass: a server's 2 or 3 decoding streams read the group once, not once each
    match t1.saturating_sub(t) {
        3 => r16_tile::<3, Q4>(g, acts, t, out, ldo),
        2 => r16_tile::<2, Q4>(g, acts, t, out, ldo),
        1 => r16_tile::<1, Q4>(g, acts, t, out, ldo),
        _ => {}
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn r16_tile<const T: usize, const Q4: bool>(g: &[u8], acts: &Acts, t: usize, out: &mut [f32], ldo: usize) {
    let (bb, off) = (block_bytes_of(Q4), if Q4 { -8 } else { -128 });
    let nb = g.len() / bb;
    let (x, xd, xs) = acts.q8_tile::<T>(t);
    debug_assert!(x.iter().all(|x| x.len() == nb) && g.len() == nb * bb);
    let m4 = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); T];
    let p = g.as_ptr();
    for b in 0..nb {
        let blk = p.add(b * bb);
        avx2::prefetch_lines(blk.add(avx2::PREFETCH), bb);
        let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
        let mut w = [_mm512_setzero_si512(); 8];
        if Q4 {
            for c in 0..4 {
                let v = _mm512_loadu_si512(blk.add(32 + 64 * c) as *const _);
                w[c] = _mm512_and_si512(v, m4);
                w[c + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
            }
        } else {
            for (c, w) in w.iter_mut().enumerate() {
                *w = _mm512_loadu_si512(blk.add(32 + 64 * c) as *const _);
            }
        }
        for j in 0..T {
            let q = x[j].get_unchecked(b).qs.as_ptr();
            let mut s = _mm512_set1_epi32(off * *xs[j].get_unchecked(b));
            for (c, w) in w.iter().enumerate() {
                let y = _mm512_set1_epi32((q.add(4 * c) as *const i32).read_unaligned());
                s = _mm512_dpbusd_epi32(s, *w, y);
            }
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(*xd[j].get_unchecked(b)));
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[j]);
        }
    }
    // the 16 rows of token t + j are 16 consecutive outputs (bounds asserted by the caller)
    for (j, acc) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add((t + j) * ldo), *acc);
    }
}

/// `$tile::<M, NV>(t, c, ldc)` for the tile's rows `M` (1..=14, the const generic the register arrays need) and
/// `NV` = 1 or 2 vectors of 16 columns.
macro_rules! by_rows {
    ($tile:ident, $t:ident, $c:ident, $ldc:ident) => {
        by_rows!(@ $tile, $t, $c, $ldc; 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    };
    (@ $tile:ident, $t:ident, $c:ident, $ldc:ident; $($m:literal)*) => {
        match ($t.m, $t.n > 16) {
            $(($m, false) => $tile::<$m, 1>($t, $c, $ldc),
              ($m, true) => $tile::<$m, 2>($t, $c, $ldc),)*
            _ => unreachable!("tile of {} rows", $t.m),
        }
    };
}

/// Rows of the f32 micro-tile: 14 × 2 sums + 2 of B + 1 broadcast = 31 of the 32 zmm registers. Per step 16
/// loads for 28 FMAs (12 rows: 14 for 24); the ViT at 1024² ran at 230 GFLOP/s with 12 rows and 258–269 with 14.
const SGEMM_MR: usize = 14;
/// How many `p` steps ahead the tile prefetches its streams of A and B (the micro-panels come from L2).
const SGEMM_PREFETCH: usize = 16;

/// A micro-tile's C: the masks of its `n` columns (`NV` vectors of 16; columns past `n` masked, loads suppress
/// faults there) and its `MR × NV` sums, loaded from `cp` (row stride `ldc`) when `accumulate`, else 0.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn c_tile<const MR: usize, const NV: usize>(
    n: usize,
    accumulate: bool,
    cp: *const f32,
    ldc: usize,
) -> ([__mmask16; NV], [[__m512; NV]; MR]) {
    let m: [__mmask16; NV] = std::array::from_fn(|v| ((1u32 << n.saturating_sub(16 * v).min(16)) - 1) as __mmask16);
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if accumulate {
        for (i, acc) in acc.iter_mut().enumerate() {
            for v in 0..NV {
                acc[v] = _mm512_maskz_loadu_ps(m[v], cp.wrapping_add(i * ldc + 16 * v));
            }
        }
    }
    (m, acc)
}

/// Store a micro-tile's sums into C under its column masks ([`c_tile`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn c_store<const MR: usize, const NV: usize>(
    m: &[__mmask16; NV],
    acc: &[[__m512; NV]; MR],
    cp: *mut f32,
    ldc: usize,
) {
    for (i, acc) in acc.iter().enumerate() {
        for v in 0..NV {
            _mm512_mask_storeu_ps(cp.wrapping_add(i * ldc + 16 * v), m[v], acc[v]);
        }
    }
}

/// f32 micro-tile ([`crate::sgemm`]): up to 14 rows × 32 columns in 28 zmm sums; per `p` two loads of B, one
/// broadcast of packed A per row, two FMAs per row. Columns past `n` are masked (loads suppress faults there).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn sgemm_tile(t: &Tile, c: &mut [f32], ldc: usize) {
    t.check(c, ldc);
    debug_assert_eq!(t.mr, SGEMM_MR);
    by_rows!(tile512, t, c, ldc)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile512<const MR: usize, const NV: usize>(t: &Tile, c: &mut [f32], ldc: usize) {
    let (mut a, mut b, cp) = (t.a.as_ptr(), t.b.as_ptr(), c.as_mut_ptr());
    let (m, mut acc) = c_tile::<MR, NV>(t.n, t.accumulate, cp, ldc);
    for _ in 0..t.k {
        // a hint only: addresses past the end are not dereferenced
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(SGEMM_PREFETCH * t.ldb) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(SGEMM_PREFETCH * t.ldb + 16) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(SGEMM_PREFETCH * SGEMM_MR) as *const i8);
        let bv: [__m512; NV] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(m[v], b.wrapping_add(16 * v)));
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*a.add(i));
            for v in 0..NV {
                acc[v] = _mm512_fmadd_ps(av, bv[v], acc[v]);
            }
        }
        a = a.add(SGEMM_MR);
        b = b.wrapping_add(t.ldb);
    }
    c_store(&m, &acc, cp, ldc);
}

/// BF16 micro-tile ([`crate::bgemm`]): up to 14 rows × 32 columns in 28 zmm f32 sums; per pair of `k`, two loads
/// of B's pairs, one broadcast of A's pair per row, two `vdpbf16ps` per row (64 multiply-adds where the f32 tile
/// does 32). Columns past `n` are masked. Reached only when [`bf16`] said yes.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn bgemm_tile(t: &TileBf16, c: &mut [f32], ldc: usize) {
    t.check(c, ldc);
    debug_assert_eq!(t.mr, SGEMM_MR);
    by_rows!(btile512, t, c, ldc)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn btile512<const MR: usize, const NV: usize>(t: &TileBf16, c: &mut [f32], ldc: usize) {
    let (mut a, mut b, cp) = (t.a.as_ptr(), t.b.as_ptr(), c.as_mut_ptr());
    let (m, mut acc) = c_tile::<MR, NV>(t.n, t.accumulate, cp, ldc);
    for _ in 0..t.pairs {
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(SGEMM_PREFETCH * t.ldb) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(SGEMM_PREFETCH * t.ldb + 16) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(SGEMM_PREFETCH * SGEMM_MR) as *const i8);
        let bv: [__m512bh; NV] = std::array::from_fn(|v| {
            let x = _mm512_maskz_loadu_epi32(m[v], b.wrapping_add(16 * v) as *const i32);
            std::mem::transmute::<__m512i, __m512bh>(x)
        });
        for (i, acc) in acc.iter_mut().enumerate() {
            let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*a.add(i) as i32));
            for v in 0..NV {
                acc[v] = _mm512_dpbf16_ps(acc[v], av, bv[v]);
            }
        }
        a = a.add(SGEMM_MR);
        b = b.wrapping_add(t.ldb);
    }
    c_store(&m, &acc, cp, ldc);
}

super::compiled_for! {
    "avx512f,avx512bw,avx512vl,avx2,fma,f16c":
    fn silu_mul(g: &mut [f32], u: &[f32]) = crate::act::silu_mul_generic;
    fn softmax_cols(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, inv: &mut [f32])
        = crate::softmax::softmax_cols_generic;
    fn softmax_online(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, run: &mut crate::softmax::Running)
        = crate::softmax::softmax_online_generic;
    fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) = crate::q8_0::quantize_row_q8_0_generic;
}

super::strided_f16!("avx512f,avx512bw,avx512vl,avx2,fma,f16c", dot_f16, axpy_f16);
