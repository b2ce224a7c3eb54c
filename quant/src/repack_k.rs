//! The R16 layout of Q4_K and Q6_K matrices (the two types of llama.cpp's Q4_K_M mix): 16 weight rows side by side
//! per super-block, so that one 512-bit `vpdpbusd` covers 16 rows × 4 columns, and each sub-block's scales, one per
//! row, apply to the 16 rows in one vector multiply. Same bytes as the plain layout, permuted.
//!
//! One group of 16 rows, for each super-block (256 columns) in order:
//! - Q4_K (2304 B): the 16 rows' `d` (f16, 32 B), their `dmin` (32 B), the 12 packed scale bytes of each row as
//!   three u32 words, word-major (`W0` of the 16 rows, then `W1`, then `W2`: 3 × 64 B), then 32 chunks of 64 B:
//!   chunk `8c + g` holds, for row `r` at `4r`, the row's bytes `qs[32c + 4g .. 32c + 4g + 4]`: low nibbles are
//!   columns `64c + 4g ..+4` (sub-block `2c`), high nibbles columns `64c + 32 + 4g ..+4` (sub-block `2c + 1`).
//! - Q6_K (3360 B): the 16 `d` (32 B); the scales, sub-block-major (16 × 16 B: the 16 rows' i8 scale of sub-block
//!   `j`); then the unsigned 6-bit weights `u = q + 32`: 32 chunks of low nibbles (chunk `c`, row `r` at `4r`: the
//!   low 4 bits of columns `4c ..+4` in the low nibbles, of columns `128 + 4c ..+4` in the high nibbles) and 16
//!   chunks of high bit pairs (chunk `e`: bits `2s, 2s + 1` of byte `i` are the high two bits of column
//!   `4(e + 16s) + i`).
//!
//! The kernels sum `u · x` (u8 × i8) per sub-block and apply the integer scale per row: Q4_K
//! `Σ_j sc_j·Σ u·x` and the mins `Σ_j m_j·Σ x`; Q6_K `Σ_j sc_j·(Σ u·x − 32·Σ x)`. Exact integers per super-block,
//! then `acc = fma(isum, d·y.d, acc)` and `acc_m = fma(msum, dmin·y.d, acc_m)` in super-block order, `acc − acc_m`
//! at the end: [`gemm_r16k_ref`], which every tier's kernel equals to the bit.

use crate::kquants::{unpack, QK_K};
use crate::repack::R16;
use crate::{Acts, GgmlType};

/// Whether `ty` has this layout.
pub fn is_r16k(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K)
}

/// One group of 16 plain rows (`src`, `cols` columns) as R16 into `dst` (same length).
pub fn repack_group_k(ty: GgmlType, cols: usize, src: &[u8], dst: &mut [u8]) {
    let (bs, nb) = (ty.type_size(), cols / QK_K);
    debug_assert!(src.len() == R16 * nb * bs && dst.len() == src.len());
    for b in 0..nb {
        let out = &mut dst[b * R16 * bs..(b + 1) * R16 * bs];
        for r in 0..R16 {
            let s = &src[(r * nb + b) * bs..][..bs];
            if ty == GgmlType::Q4_K {
                out[2 * r..2 * r + 2].copy_from_slice(&s[0..2]);
                out[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&s[2..4]);
                for wd in 0..3 {
                    out[64 + 64 * wd + 4 * r..][..4].copy_from_slice(&s[4 + 4 * wd..][..4]);
                }
                for c in 0..4 {
                    for g in 0..8 {
                        out[256 + 64 * (8 * c + g) + 4 * r..][..4].copy_from_slice(&s[16 + 32 * c + 4 * g..][..4]);
                    }
                }
            } else {
                out[2 * r..2 * r + 2].copy_from_slice(&s[208..210]);
                for j in 0..16 {
                    out[32 + 16 * j + r] = s[192 + j];
                }
                let u = unpack(ty, s).q.map(|q| (q + 32) as u8);
                for c in 0..32 {
                    for i in 0..4 {
                        out[288 + 64 * c + 4 * r + i] = (u[4 * c + i] & 0xF) | (u[128 + 4 * c + i] & 0xF) << 4;
                    }
                }
                for e in 0..16 {
                    for i in 0..4 {
                        let mut v = 0u8;
                        for sh in 0..4 {
                            v |= (u[4 * (e + 16 * sh) + i] >> 4) << (2 * sh);
                        }
                        out[2336 + 64 * e + 4 * r + i] = v;
                    }
                }
            }
        }
    }
}

/// The inverse of [`repack_group_k`] (a test and debugging aid).
pub fn unpack_group_k(ty: GgmlType, cols: usize, group: &[u8], out: &mut [u8]) {
    let (bs, nb) = (ty.type_size(), cols / QK_K);
    for b in 0..nb {
        let src = &group[b * R16 * bs..(b + 1) * R16 * bs];
        for r in 0..R16 {
            let dst = &mut out[(r * nb + b) * bs..][..bs];
            if ty == GgmlType::Q4_K {
                dst[0..2].copy_from_slice(&src[2 * r..2 * r + 2]);
                dst[2..4].copy_from_slice(&src[32 + 2 * r..32 + 2 * r + 2]);
                for wd in 0..3 {
                    dst[4 + 4 * wd..][..4].copy_from_slice(&src[64 + 64 * wd + 4 * r..][..4]);
                }
                for c in 0..4 {
                    for g in 0..8 {
                        dst[16 + 32 * c + 4 * g..][..4].copy_from_slice(&src[256 + 64 * (8 * c + g) + 4 * r..][..4]);
                    }
                }
            } else {
                dst[208..210].copy_from_slice(&src[2 * r..2 * r + 2]);
                for j in 0..16 {
                    dst[192 + j] = src[32 + 16 * j + r];
                }
                // back to ggml's ql / qh from the unsigned weights
                let u: [u8; QK_K] = std::array::from_fn(|col| u_at(ty, src, r, col) as u8);
                for (i, u) in u.iter().enumerate() {
                    let (h, rr) = (i / 128, i % 128);
                    let (lo, hi) = (u & 0xF, u >> 4);
                    let ql = &mut dst[64 * h + rr % 64];
                    *ql = if rr < 64 { (*ql & 0xF0) | lo } else { (*ql & 0x0F) | lo << 4 };
                    let qh = &mut dst[128 + 32 * h + rr % 32];
                    let sh = 2 * (rr / 32);
                    *qh = (*qh & !(3 << sh)) | hi << sh;
                }
            }
        }
    }
}

/// The unsigned weight of row `r`, column `col` (0..256) of one interleaved super-block; Q4_K: 0..15, Q6_K: 0..63.
fn u_at(ty: GgmlType, blk: &[u8], r: usize, col: usize) -> i32 {
    if ty == GgmlType::Q4_K {
        let (c, within) = (col / 64, col % 64);
        let (half, l) = (within / 32, within % 32);
        let byte = blk[256 + 64 * (8 * c + l / 4) + 4 * r + l % 4];
        (if half == 0 { byte & 0xF } else { byte >> 4 }) as i32
    } else {
        let (c, nib) = (col % 128 / 4, col / 128);
        let lo = (blk[288 + 64 * c + 4 * r + col % 4] >> (4 * nib)) & 0xF;
        let kg = col / 4;
        let (e, sh) = (kg % 16, kg / 16);
        let hi = (blk[2336 + 64 * e + 4 * r + col % 4] >> (2 * sh)) & 3;
        (lo | hi << 4) as i32
    }
}

/// Row `r`'s scale and min of sub-block `j` of one interleaved super-block (Q4_K: 8 per-32 sub-blocks, from the
/// packed words as `get_scale_min_k4`; Q6_K: 16 per-16 scales, min 0).
pub(crate) fn sc_at(ty: GgmlType, blk: &[u8], r: usize, j: usize) -> (i32, i32) {
    if ty == GgmlType::Q4_K {
        let q = |i: usize| blk[64 + 64 * (i / 4) + 4 * r + i % 4];
        if j < 4 {
            ((q(j) & 63) as i32, (q(j + 4) & 63) as i32)
        } else {
            (((q(j + 4) & 0xF) | ((q(j - 4) >> 6) << 4)) as i32, ((q(j + 4) >> 4) | ((q(j) >> 6) << 4)) as i32)
        }
    } else {
        (blk[32 + 16 * j + r] as i8 as i32, 0)
    }
}

/// The scalar twin of the R16 K kernels: `out[t * ldo + r]` for the group's 16 rows and tokens `t0..t1` of `acts`
/// (prepared as Q8_K).
pub fn gemm_r16k_ref(ty: GgmlType, group: &[u8], acts: &Acts, t0: usize, t1: usize, out: &mut [f32], ldo: usize) {
    let bb = R16 * ty.type_size();
    let (sub, off) = if ty == GgmlType::Q4_K { (32, 0) } else { (16, 32) };
    let f16 = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    for t in t0..t1 {
        let y = acts.q8k_row(t);
        for r in 0..R16 {
            let (mut acc, mut acc_m) = (0f32, 0f32);
            for (b, blk) in group.chunks_exact(bb).enumerate() {
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..QK_K / sub {
                    let (sc, m) = sc_at(ty, blk, r, j);
                    let ysum: i32 = y[b].bsums[j * sub / 16..(j + 1) * sub / 16].iter().map(|&s| s as i32).sum();
                    let mut dot = -off * ysum;
                    for col in j * sub..(j + 1) * sub {
                        dot += u_at(ty, blk, r, col) * y[b].qs[col] as i32;
                    }
                    isum += sc * dot;
                    msum += m * ysum;
                }
                acc = (isum as f32).mul_add(f16(blk, 2 * r) * y[b].d, acc);
                if ty == GgmlType::Q4_K {
                    acc_m = (msum as f32).mul_add(f16(blk, 32 + 2 * r) * y[b].d, acc_m);
                }
            }
            out[t * ldo + r] = acc - acc_m;
        }
    }
}
