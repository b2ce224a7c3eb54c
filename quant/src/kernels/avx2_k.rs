//! AVX2 dots of the K-quants (Q2_K … Q6_K) with Q8_K activations; the AVX-512 tier uses them too (IQ4_XS: in
//! `avx2_legacy.rs`).
//!
//! One super-block (256 weights) at a time, in three steps that every type shares but the first:
//! 1. unpack: the weights as eight registers of 32 *unsigned* bytes `u` (sub-block `j` of 16 = bytes
//!    `16j..16j+16`), with `q = u − off` (Q3_K: off 4, Q6_K: 32, else 0), plus the sub-block scales `sc` and mins
//!    `mn` as 16 i16 each (Q4_K/Q5_K's eight per-32 values doubled);
//! 2. `Σ_j sc_j · Σ_{i∈j} u_i·y_i`: `maddubs` (u8 × i8 → i16: at most 63·127·2, no saturation), then `madd` with
//!    the scales (i16 × i16 → i32), summed over the super-block in eight i32 lanes (exact: < 2^31);
//! 3. the offset and mins through Q8_K's `bsums`: `Σ_j (off·sc_j)·bsum_j` and `Σ_j mn_j·bsum_j`, one `madd` each.
//!
//! Then `acc += (d·y.d)·(sumi − off·Σ sc·bsum) − (dmin·y.d)·Σ mn·bsum` in f32: the twin's integers, its float
//! steps in another order ([`crate::kquants::dot_q8_k_ref`], checked within the f32 bound by `selftest`).
//!
//! Safety contract: as `avx2.rs` (`#[target_feature(enable = "avx2,fma,f16c")]`, reached through the tier tables
//! after the CPU check); `w` holds `y.len()` whole super-blocks of the type.

use std::arch::x86_64::*;

use super::avx2::{f16_at, hsum, prefetch_lines, PREFETCH};
use crate::kquants::QK_K;
use crate::{BlockQ8_K, GgmlType};

/// The tier's K-quant dot for `ty`, if there is one.
pub fn dot(ty: GgmlType) -> Option<super::DotQ8K> {
    Some(match ty {
        GgmlType::Q2_K => |w, y| unsafe { dot_k::<10>(w, y) },
        GgmlType::Q3_K => |w, y| unsafe { dot_k::<11>(w, y) },
        GgmlType::Q4_K => |w, y| unsafe { dot_k::<12>(w, y) },
        GgmlType::Q5_K => |w, y| unsafe { dot_k::<13>(w, y) },
        GgmlType::Q6_K => |w, y| unsafe { dot_k::<14>(w, y) },
        GgmlType::IQ4_XS => |w, y| unsafe { super::avx2_legacy::dot_iq4_xs(w, y) },
        _ => return None,
    })
}

/// The tier's four-token K-quant kernel for `ty`, if there is one (see [`super::GemmQ8K`]).
pub fn gemm4(ty: GgmlType) -> Option<super::GemmQ8K> {
    Some(match ty {
        GgmlType::Q2_K => |w, y, o| unsafe { gemm_k::<10, 4>(w, y, o) },
        GgmlType::Q3_K => |w, y, o| unsafe { gemm_k::<11, 4>(w, y, o) },
        GgmlType::Q4_K => |w, y, o| unsafe { gemm_k::<12, 4>(w, y, o) },
        GgmlType::Q5_K => |w, y, o| unsafe { gemm_k::<13, 4>(w, y, o) },
        GgmlType::Q6_K => |w, y, o| unsafe { gemm_k::<14, 4>(w, y, o) },
        _ => return None,
    })
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// `(v >> k) & mask` per byte (a 16-bit shift, then the mask drops what crossed from the neighbour byte).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits(v: __m256i, k: i32, mask: i8) -> __m256i {
    _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(k)), _mm256_set1_epi8(mask))
}

/// The super-block's 256 weights as unsigned bytes, 32 per register in weight order (layouts: `kquants::unpack`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack<const T: u32>(b: *const u8, u: &mut [__m256i; 8]) {
    match T {
        // Q2_K: group g = 4h + s of 32 weights: (qs[32h + l] >> 2s) & 3
        10 => {
            for h in 0..2 {
                let v = load(b.add(16 + 32 * h));
                for s in 0..4 {
                    u[4 * h + s] = bits(v, 2 * s as i32, 3);
                }
            }
        }
        // Q3_K: the two low bits as Q2_K's, plus 4 where bit g of hmask[l] is set (q = u − 4)
        11 => {
            let hm = load(b);
            for h in 0..2 {
                let v = load(b.add(32 + 32 * h));
                for s in 0..4 {
                    let g = 4 * h + s;
                    let high = _mm256_slli_epi16(bits(hm, g as i32, 1), 2);
                    u[g] = _mm256_or_si256(bits(v, 2 * s as i32, 3), high);
                }
            }
        }
        // Q4_K / Q5_K: chunk c of 32 bytes: low nibbles are group 2c, high nibbles 2c + 1; Q5_K's fifth bit of
        // group g is bit g of qh[l]
        12 | 13 => {
            let (qs, qh) = if T == 13 { (b.add(48), load(b.add(16))) } else { (b.add(16), _mm256_setzero_si256()) };
            for c in 0..4 {
                let v = load(qs.add(32 * c));
                u[2 * c] = _mm256_and_si256(v, _mm256_set1_epi8(0xF));
                u[2 * c + 1] = bits(v, 4, 0xF);
                if T == 13 {
                    let h0 = _mm256_slli_epi16(bits(qh, 2 * c as i32, 1), 4);
                    let h1 = _mm256_slli_epi16(bits(qh, 2 * c as i32 + 1, 1), 4);
                    u[2 * c] = _mm256_or_si256(u[2 * c], h0);
                    u[2 * c + 1] = _mm256_or_si256(u[2 * c + 1], h1);
                }
            }
        }
        // Q6_K: half h: ql[64h..+32] = a, ql[64h+32..+32] = b, qh[32h..+32] = hb; groups 4h + (a low, b low,
        // a high, b high) with bit pairs 0, 2, 4, 6 of hb as bits 4–5 (q = u − 32)
        _ => {
            for h in 0..2 {
                let (a, c, hb) = (load(b.add(64 * h)), load(b.add(64 * h + 32)), load(b.add(128 + 32 * h)));
                let lo = _mm256_set1_epi8(0xF);
                u[4 * h] = _mm256_or_si256(_mm256_and_si256(a, lo), _mm256_slli_epi16(bits(hb, 0, 3), 4));
                u[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(c, lo), _mm256_slli_epi16(bits(hb, 2, 3), 4));
                u[4 * h + 2] = _mm256_or_si256(bits(a, 4, 0xF), _mm256_slli_epi16(bits(hb, 4, 3), 4));
                u[4 * h + 3] = _mm256_or_si256(bits(c, 4, 0xF), _mm256_slli_epi16(bits(hb, 6, 3), 4));
            }
        }
    }
}

/// `shuffle_epi8` controls that spread i16 scales over a group's 16 i16 lanes: `SAME[g]` repeats element `g` of a
/// broadcast 8-scale register in all lanes (Q4_K/Q5_K: one scale per 32 weights); `PAIR[k]` repeats element `2k`
/// in the low 128 bits and `2k + 1` in the high (two scales per 32 weights: group `g` takes `PAIR[g % 4]` of the
/// broadcast low or high half of the 16 scales).
static SAME: [[u8; 32]; 8] = {
    let mut m = [[0u8; 32]; 8];
    let mut g = 0;
    while g < 8 {
        let mut i = 0;
        while i < 32 {
            m[g][i] = (2 * g + i % 2) as u8;
            i += 1;
        }
        g += 1;
    }
    m
};
static PAIR: [[u8; 32]; 4] = {
    let mut m = [[0u8; 32]; 4];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 32 {
            m[k][i] = (4 * k + 2 * (i / 16) + i % 2) as u8;
            i += 1;
        }
        k += 1;
    }
    m
};

/// One super-block's scales as the loop uses them: `sv[g]` the i16 scale of each lane of group `g`; `sc16` the 16
/// sub-block scales (for the offset term); `mn` the mins (Q2_K: 16 per-16 values; Q4_K/Q5_K: 8 per-32 values in the
/// low half); `d`, `dmin`.
struct Sc {
    sv: [__m256i; 8],
    sc16: __m256i,
    mn: __m256i,
    d: f32,
    dmin: f32,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales<const T: u32>(b: *const u8) -> Sc {
    let mut s = Sc {
        sv: [_mm256_setzero_si256(); 8],
        sc16: _mm256_setzero_si256(),
        mn: _mm256_setzero_si256(),
        d: 0.0,
        dmin: 0.0,
    };
    let pair = |sc16: __m256i, sv: &mut [__m256i; 8]| {
        let (lo, hi) = (_mm256_permute2x128_si256(sc16, sc16, 0x00), _mm256_permute2x128_si256(sc16, sc16, 0x11));
        for (g, v) in sv.iter_mut().enumerate() {
            let m = _mm256_loadu_si256(PAIR[g % 4].as_ptr() as *const __m256i);
            *v = _mm256_shuffle_epi8(if g < 4 { lo } else { hi }, m);
        }
    };
    match T {
        // Q2_K: 16 bytes, scale in the low nibble, min in the high
        10 => {
            let v = _mm_loadu_si128(b as *const __m128i);
            let m4 = _mm_set1_epi8(0xF);
            s.sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
            s.mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
            (s.d, s.dmin) = (f16_at(b.add(80)), f16_at(b.add(82)));
        }
        // Q3_K: 16 six-bit scales (offset 32): low nibbles in bytes 96..104 (scale j: byte 96 + j%8, nibble j/8),
        // high bit pairs in 104..108 (byte 104 + j%4, pair j/4); regrouped four scales per u32 (ggml's `aux`)
        11 => {
            let q = b.add(96) as *const u32;
            let (a0, a1, t) = (q.read_unaligned(), q.add(1).read_unaligned(), q.add(2).read_unaligned());
            const M2: u32 = 0x0f0f0f0f;
            const M3: u32 = 0x03030303;
            let v = _mm_set_epi32(
                (((a1 >> 4) & M2) | (((t >> 6) & M3) << 4)) as i32,
                (((a0 >> 4) & M2) | (((t >> 4) & M3) << 4)) as i32,
                ((a1 & M2) | (((t >> 2) & M3) << 4)) as i32,
                ((a0 & M2) | ((t & M3) << 4)) as i32,
            );
            s.sc16 = _mm256_sub_epi16(_mm256_cvtepu8_epi16(v), _mm256_set1_epi16(32));
            s.d = f16_at(b.add(108));
        }
        // Q4_K / Q5_K: 8 six-bit scales and mins in 12 bytes, regrouped with u32 masks into 8 scale bytes then 8
        // min bytes (ggml's `utmp` arrangement of `get_scale_min_k4`)
        12 | 13 => {
            let q = b.add(4) as *const u32;
            let (u0, u1, u2) = (q.read_unaligned(), q.add(1).read_unaligned(), q.add(2).read_unaligned());
            const M1: u32 = 0x3f3f3f3f;
            const M2: u32 = 0x0f0f0f0f;
            const M3: u32 = 0x03030303;
            let sc_hi = (u2 & M2) | (((u0 >> 6) & M3) << 4);
            let mn_hi = ((u2 >> 4) & M2) | (((u1 >> 6) & M3) << 4);
            let both =
                _mm256_cvtepu8_epi16(_mm_set_epi32(mn_hi as i32, (u1 & M1) as i32, sc_hi as i32, (u0 & M1) as i32));
            let sc8 = _mm256_permute2x128_si256(both, both, 0x00);
            for (g, v) in s.sv.iter_mut().enumerate() {
                *v = _mm256_shuffle_epi8(sc8, _mm256_loadu_si256(SAME[g].as_ptr() as *const __m256i));
            }
            s.mn = _mm256_permute2x128_si256(both, both, 0x11);
            (s.d, s.dmin) = (f16_at(b), f16_at(b.add(2)));
            return s;
        }
        // Q6_K: 16 signed bytes
        _ => {
            s.sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
            s.d = f16_at(b.add(208));
        }
    }
    pair(s.sc16, &mut s.sv);
    s
}

/// `T`: the ggml type id (10 = Q2_K … 14 = Q6_K), a const so each type gets its own loop; `N` tokens (1: the
/// decode dot; 4: prefill, each super-block unpacked once for the four). No horizontal sums inside the loop: the
/// offset term is subtracted from the eight i32 lanes, the mins go to their own f32 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_k<const T: u32, const N: usize>(w: &[u8], y: [&[BlockQ8_K]; N], out: &mut [f32; N]) {
    let ty = GgmlType::from_id(T).expect("a K type");
    let bytes = ty.type_size();
    let nb = w.len() / bytes;
    debug_assert!(y.iter().all(|y| y.len() == nb));
    let p = w.as_ptr();
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [_mm256_setzero_ps(); N];
    let mut u = [_mm256_setzero_si256(); 8];
    for i in 0..nb {
        let b = p.add(i * bytes);
        prefetch_lines(b.add(PREFETCH), bytes);
        let s = scales::<T>(b);
        unpack::<T>(b, &mut u);
        for j in 0..N {
            let y = y[j].get_unchecked(i);
            let mut sumi = _mm256_setzero_si256();
            for (g, (u, sv)) in u.iter().zip(&s.sv).enumerate() {
                let prod = _mm256_maddubs_epi16(*u, load(y.qs.as_ptr().add(32 * g) as *const u8));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(prod, *sv));
            }
            let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
            match T {
                11 => sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(bsums, s.sc16), 2)),
                14 => sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(bsums, s.sc16), 5)),
                _ => {}
            }
            acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(s.d * y.d), _mm256_cvtepi32_ps(sumi), acc[j]);
            let mins = match T {
                10 => _mm256_madd_epi16(bsums, s.mn),
                12 | 13 => {
                    // per-32 sums of the activations (|Σ| ≤ 32·127: i16), times the 8 mins
                    let b32 = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
                    _mm256_castsi128_si256(_mm_madd_epi16(b32, _mm256_castsi256_si128(s.mn)))
                }
                _ => continue,
            };
            // (the upper lanes of the Q4_K/Q5_K case are undefined after the cast: zero them)
            let mins = if T == 10 { mins } else { _mm256_inserti128_si256(mins, _mm_setzero_si128(), 1) };
            acc_m[j] = _mm256_fmadd_ps(_mm256_set1_ps(s.dmin * y.d), _mm256_cvtepi32_ps(mins), acc_m[j]);
        }
    }
    for j in 0..N {
        out[j] = hsum(acc[j]) - hsum(acc_m[j]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_k<const T: u32>(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    let mut o = [0f32];
    gemm_k::<T, 1>(w, [y], &mut o);
    o[0]
}

const _: () = assert!(QK_K == 256);
