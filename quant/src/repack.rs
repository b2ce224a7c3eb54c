//! The row-interleaved layout `R16` of Q4_0 / Q8_0 matrices: 16 weight rows side by side, so one 512-bit
//! multiply-add covers 16 rows × 4 columns and the per-block scales apply to 16 rows in one vector op.
//!
//! Files on disk keep ggml's plain layout; a loader may re-lay a matrix out, group of 16 rows by group, when the
//! selected tier has an R16 kernel ([`crate::Kernels::gemm_r16`]). The layout has exactly the bytes of the plain
//! one (a permutation, plus a sign flip for Q8_0).
//!
//! One group of 16 rows, `nb = cols / 32` blocks, for each block `b` in order:
//! - Q4_0 (288 B): the 16 rows' f16 scales (32 B), then 4 chunks `c` of 64 B: for row `r`, the 4 bytes
//!   `qs[4c..4c + 4]` of its block. Low nibbles of chunk `c` are columns `4c..4c + 4` (k-group `c`), high
//!   nibbles columns `16 + 4c..` (k-group `c + 4`); nibbles stay unsigned (value + 8).
//! - Q8_0 (544 B): the 16 f16 scales, then 8 chunks `g` of 64 B: for row `r`, `qs[4g..4g + 4]` with the sign bit
//!   flipped, i.e. the value + 128 as an unsigned byte.
//!
//! So k-group `g` (4 columns) of all 16 rows is one 64-byte vector of unsigned bytes `u`, and the signed weight is
//! `u - OFFSET`; a kernel sums `u · x` (u8 × i8, as `vpdpbusd` does) and subtracts `OFFSET · Σx` per block.

use crate::GgmlType;

/// Rows per interleaved group.
pub const R16: usize = 16;

/// How a matrix's bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// ggml's: row after row.
    #[default]
    Plain,
    /// Groups of [`R16`] interleaved rows (this module).
    R16,
}

/// The types with an R16 layout, and the offset that makes their weights unsigned.
pub fn offset(ty: GgmlType) -> Option<i32> {
    match ty {
        GgmlType::Q4_0 => Some(8),
        GgmlType::Q8_0 => Some(128),
        _ => None,
    }
}

/// Whether an `(rows, cols)` matrix of `ty` can take the R16 layout (Q4_0, Q8_0, and Q4_K / Q6_K:
/// [`crate::repack_k`]).
pub fn fits(ty: GgmlType, rows: usize, cols: usize) -> bool {
    (offset(ty).is_some() || crate::repack_k::is_r16k(ty))
        && rows.is_multiple_of(R16)
        && cols.is_multiple_of(ty.block_size())
        && cols > 0
}

/// Bytes of one interleaved block (16 rows' scales and quants) of Q4_0 (`q4`) or Q8_0, as the kernels' const
/// generics ask it.
pub const fn block_bytes_of(q4: bool) -> usize {
    R16 * if q4 { 18 } else { 34 }
}

/// Bytes of one interleaved block: 16 rows' scales and quants.
pub fn block_bytes(ty: GgmlType) -> usize {
    debug_assert!(offset(ty).is_some(), "{ty} has no R16 layout");
    block_bytes_of(ty == GgmlType::Q4_0)
}

/// Position of quant byte `j` (0..qs_len) of row `r` within an interleaved block (after the 32 scale bytes).
fn quant_pos(r: usize, j: usize) -> usize {
    32 + (j / 4) * 64 + 4 * r + j % 4
}

/// One group of 16 plain rows (`src`: 16 · row_bytes, `cols` columns) as R16 into `dst` (same length).
pub fn repack_group(ty: GgmlType, cols: usize, src: &[u8], dst: &mut [u8]) {
    if crate::repack_k::is_r16k(ty) {
        return crate::repack_k::repack_group_k(ty, cols, src, dst);
    }
    let bs = ty.row_bytes(32).expect("Q4_0/Q8_0");
    let (nb, qs) = (cols / 32, bs - 2);
    let flip = if ty == GgmlType::Q8_0 { 0x80 } else { 0 };
    debug_assert!(src.len() == R16 * nb * bs && dst.len() == src.len());
    let flip4 = u32::from_ne_bytes([flip; 4]);
    for b in 0..nb {
        let out = &mut dst[b * R16 * bs..(b + 1) * R16 * bs];
        for r in 0..R16 {
            let s = &src[(r * nb + b) * bs..][..bs];
            out[2 * r..2 * r + 2].copy_from_slice(&s[..2]);
            // 4 quant bytes at a time: chunk c of row r is bytes 4c..4c + 4 (see `quant_pos`)
            for (c, q) in s[2..2 + qs].chunks_exact(4).enumerate() {
                let v = u32::from_ne_bytes([q[0], q[1], q[2], q[3]]) ^ flip4;
                let at = quant_pos(r, 4 * c);
                out[at..at + 4].copy_from_slice(&v.to_ne_bytes());
            }
        }
    }
}

/// Rewrite a whole `(rows, cols)` matrix (which must [`fits`]) as R16, in place.
pub fn repack_matrix(ty: GgmlType, cols: usize, bytes: &mut [u8]) {
    let gb = R16 * ty.row_bytes(cols).expect("a type with an R16 layout");
    let mut tmp = vec![0u8; gb];
    for g in bytes.chunks_exact_mut(gb) {
        tmp.copy_from_slice(g);
        repack_group(ty, cols, &tmp, g);
    }
}

/// The inverse of [`repack_group`]: 16 plain rows from one R16 group.
pub fn unpack_group(ty: GgmlType, cols: usize, group: &[u8], out: &mut [u8]) {
    if crate::repack_k::is_r16k(ty) {
        return crate::repack_k::unpack_group_k(ty, cols, group, out);
    }
    let bs = ty.row_bytes(32).expect("Q4_0/Q8_0");
    let (nb, qs) = (cols / 32, bs - 2);
    let flip = if ty == GgmlType::Q8_0 { 0x80 } else { 0 };
    for b in 0..nb {
        let src = &group[b * R16 * bs..(b + 1) * R16 * bs];
        for r in 0..R16 {
            let dst = &mut out[(r * nb + b) * bs..][..bs];
            dst[..2].copy_from_slice(&src[2 * r..2 * r + 2]);
            for j in 0..qs {
                dst[2 + j] = src[quant_pos(r, j)] ^ flip;
            }
        }
    }
}

/// The unsigned weight of row `r`, column `i` (0..32) of an interleaved block (`ty` Q4_0 or Q8_0).
fn weight_u8(ty: GgmlType, block: &[u8], r: usize, i: usize) -> i32 {
    if ty == GgmlType::Q4_0 {
        let byte = block[quant_pos(r, i % 16)];
        (if i < 16 { byte & 0x0F } else { byte >> 4 }) as i32
    } else {
        block[quant_pos(r, i)] as i32
    }
}

/// The scalar twin of every R16 kernel: `out[t * ldo + r]` for the group's 16 rows and tokens `t0..t1` of
/// `acts` (prepared as Q8_0). Per block: the exact integer `Σ u·x − OFFSET·Σx`, then
/// `acc = fma(isum, d_w · d_x, acc)` in block order; the SIMD kernels do the same operations, so they agree to
/// the bit.
pub fn gemm_r16_ref(ty: GgmlType, group: &[u8], acts: &crate::Acts, t0: usize, t1: usize, out: &mut [f32], ldo: usize) {
    if crate::repack_k::is_r16k(ty) {
        return crate::repack_k::gemm_r16k_ref(ty, group, acts, t0, t1, out, ldo);
    }
    let off = offset(ty).expect("Q4_0/Q8_0");
    let bb = block_bytes(ty);
    for t in t0..t1 {
        let (x, xd, xs) = (acts.q8_row(t), acts.q8_scales(t), acts.q8_sums(t));
        for r in 0..R16 {
            let mut acc = 0f32;
            for (b, block) in group.chunks_exact(bb).enumerate() {
                let dw = half::f16::from_le_bytes([block[2 * r], block[2 * r + 1]]).to_f32();
                let mut isum = -off * xs[b];
                for i in 0..32 {
                    isum += weight_u8(ty, block, r, i) * x[b].qs[i] as i32;
                }
                acc = (isum as f32).mul_add(dw * xd[b], acc);
            }
            out[t * ldo + r] = acc;
        }
    }
}
