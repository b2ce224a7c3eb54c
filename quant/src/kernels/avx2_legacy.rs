//! AVX2 dots of the 32-weight formats Q4_1, Q5_0, Q5_1, IQ4_NL with Q8_0 activations (plus Q8_1's block sums for
//! Q4_1/Q5_1), and of IQ4_XS (IQ4_NL's grid in K-sized blocks) with Q8_K activations; the AVX-512 tier uses them
//! too. Each block's 32 weights become 32 bytes — nibbles, Q5's fifth bit, minus 16 for Q5_0, through the grid for
//! IQ4_NL/IQ4_XS (`pshufb`) — whose products with the activations are summed exactly in i32 lanes; then the twin's
//! `sumi·(d·dy)` (+ `m·s` for Q4_1/Q5_1) in f32 lanes ([`crate::kquants::dot_q8_legacy_ref`],
//! [`crate::kquants::dot_q8_k_ref`]; checked within the f32 bound by `selftest`).
//!
//! Safety contract: as `avx2.rs`; `w` holds `y.len()` whole blocks of the type, `ys` one sum per block for
//! Q4_1/Q5_1.

use std::arch::x86_64::*;

use super::avx2::{f16_at, f16_bits, hsum, prefetch_lines, PREFETCH};
use crate::kquants::{KVALUES_IQ4NL, QK_K};
use crate::{BlockQ8_0, BlockQ8_K, GgmlType};

/// The tier's dot for a Q4_1 / Q5_0 / Q5_1 / IQ4_NL weight row, if `ty` is one.
pub fn dot(ty: GgmlType) -> Option<super::DotLegacy> {
    Some(match ty {
        GgmlType::Q4_1 => |w, y, s| unsafe { dot_legacy::<3>(w, y, s) },
        GgmlType::Q5_0 => |w, y, s| unsafe { dot_legacy::<6>(w, y, s) },
        GgmlType::Q5_1 => |w, y, s| unsafe { dot_legacy::<7>(w, y, s) },
        GgmlType::IQ4_NL => |w, y, s| unsafe { dot_legacy::<20>(w, y, s) },
        _ => return None,
    })
}

/// Σ x·y of 32 signed bytes in eight i32 lanes, exact for every i8 `y` (−128 included: Q8_K's peak is −128) and
/// `|x| ≤ 127`: `maddubs` takes `|y|` as unsigned and moves y's sign onto x (pair sums ≤ 2·128·127 < 2^15).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8(x: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_abs_epi8(y), _mm256_sign_epi8(x, y))
}

/// The 16 bytes at `p` as 32 nibbles: weight `l` is the low nibble of byte `l`, weight `l + 16` its high nibble.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let v = _mm_loadu_si128(p as *const __m128i);
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0xF))
}

/// Q5's fifth bits: byte `l` is 0x10 where bit `l` of `qh` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(qh: u32) -> __m256i {
    // byte l takes byte l/8 of qh (the broadcast puts qh's four bytes at the start of both 128-bit lanes)
    let sel = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), sel);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// The IQ4_NL grid in both 128-bit lanes (a `pshufb` table).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn grid() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i))
}

/// One block's `Σ x·y` in eight i32 lanes. `T`: the ggml type id (3 = Q4_1, 6 = Q5_0, 7 = Q5_1, 20 = IQ4_NL).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_sum<const T: u32>(b: *const u8, y: &BlockQ8_0, kv: __m256i) -> __m256i {
    let qh_at = |o: usize| (b.add(o) as *const u32).read_unaligned();
    let x = match T {
        3 => nibbles(b.add(4)),
        6 => _mm256_sub_epi8(_mm256_or_si256(nibbles(b.add(6)), fifth_bits(qh_at(2))), _mm256_set1_epi8(16)),
        7 => _mm256_or_si256(nibbles(b.add(8)), fifth_bits(qh_at(4))),
        _ => _mm256_shuffle_epi8(kv, nibbles(b.add(2))),
    };
    let qy = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
    // Q4_1/Q5_1 weights are unsigned (≤ 31): straight into maddubs
    let p16 = if T == 3 || T == 7 { _mm256_maddubs_epi16(x, qy) } else { dot_i8(x, qy) };
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

/// Blocks four at a time into four accumulators (independent FMA chains), the weights prefetched as `avx2.rs`'s
/// dots do; Q4_1/Q5_1's `m·s` summed apart.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_legacy<const T: u32>(w: &[u8], y: &[BlockQ8_0], ys: &[f32]) -> f32 {
    let bytes = GgmlType::from_id(T).expect("a legacy type").type_size();
    debug_assert_eq!(w.len(), y.len() * bytes);
    let with_min = T == 3 || T == 7;
    debug_assert!(!with_min || ys.len() == y.len());
    let kv = grid();
    let p = w.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [0f32; 4]; // Σ m·s
    let mut step = |i: usize, a: usize| {
        let b = p.add(i * bytes);
        let y = y.get_unchecked(i);
        let dd = _mm256_set1_ps(f16_at(b) * f16_bits(y.d.to_bits()));
        acc[a] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(block_sum::<T>(b, y, kv)), acc[a]);
        if with_min {
            mins[a] += f16_at(b.add(2)) * *ys.get_unchecked(i);
        }
    };
    let quads = y.len() / 4;
    for q in 0..quads {
        prefetch_lines(p.add(4 * q * bytes + PREFETCH), 4 * bytes);
        for a in 0..4 {
            step(4 * q + a, a);
        }
    }
    for i in 4 * quads..y.len() {
        step(i, 0);
    }
    hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
        + ((mins[0] + mins[1]) + (mins[2] + mins[3]))
}

/// IQ4_XS row · Q8_K activations: per super-block eight sub-blocks of 32 through the grid, each sub-block's
/// `Σ x·y` times its 6-bit scale (offset 32) in eight i32 lanes (exact: < 2^25), then `(d·y.d)·sumi`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_iq4_xs(w: &[u8], y: &[BlockQ8_K]) -> f32 {
    const BYTES: usize = 136;
    debug_assert_eq!(w.len(), y.len() * BYTES);
    let kv = grid();
    let mut acc = _mm256_setzero_ps();
    for (i, y) in y.iter().enumerate() {
        let b = w.as_ptr().add(i * BYTES);
        let sh = u16::from_le_bytes([*b.add(2), *b.add(3)]);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 32 {
            let lo = (*b.add(4 + j / 2) >> (4 * (j % 2))) & 0xF;
            let sc = (lo | (((sh >> (2 * j)) & 3) as u8) << 4) as i16 - 32;
            let x = _mm256_shuffle_epi8(kv, nibbles(b.add(8 + 16 * j)));
            let qy = _mm256_loadu_si256(y.qs.as_ptr().add(32 * j) as *const __m256i);
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(dot_i8(x, qy), _mm256_set1_epi16(sc)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b) * y.d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}
