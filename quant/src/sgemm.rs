//! f32 matrix product `C = A · B` (row-major, any strides): the ViT's attention (`Q·Kᵀ`, `P·V`) and prefill with
//! F32/F16/BF16 weights (widened rows times transposed activations).
//!
//! Every element is one FMA chain over `p = 0..k` in order, starting from 0 (`c = fma(a[i][p], b[p][j], c)`), on
//! every tier: the SIMD micro-tiles vectorise over `j` and keep `MR × NR` sums in registers, so they equal
//! [`sgemm_ref`] to the bit. Cost: `2·m·n·k` flops; the driver cuts `k` in slices of [`KC`] so a tile's slice
//! of B (`KC × NR`) stays in L1 while all of A's row tiles pass over it.

use crate::Kernels;

/// `k` per pass: 256 × 32 f32 of B = 32 KB.
pub const KC: usize = 256;

/// One micro-tile: `c[i·ldc + j] (+)= Σ_{p<k} a[i·lda + p] · b[p·ldb + j]` for `i < m ≤ MR`, `j < n ≤ NR`.
/// `accumulate`: continue from `c` (a later `k` slice) instead of 0.
pub struct Tile<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a [f32],
    pub ldb: usize,
    pub accumulate: bool,
}

impl Tile<'_> {
    /// The slices are long enough for the tile (each kernel checks this once per tile).
    pub fn check(&self, c: &[f32], ldc: usize) {
        let need =
            |rows: usize, ld: usize, cols: usize| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * ld + cols };
        assert!(
            self.a.len() >= need(self.m, self.lda, self.k)
                && self.b.len() >= need(self.k, self.ldb, self.n)
                && c.len() >= need(self.m, ldc, self.n),
            "sgemm tile out of bounds"
        );
    }
}

/// A tier's micro-kernel and its tile shape.
#[derive(Clone, Copy)]
pub struct Sgemm {
    pub mr: usize,
    pub nr: usize,
    pub tile: fn(&Tile, &mut [f32], usize),
}

/// The definition: `C (m × n, ldc) = A (m × k, lda) · B (k × n, ldb)`, each element one FMA chain over `p`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_ref(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    tile_ref(&Tile { m, n, k, a, lda, b, ldb, accumulate: false }, c, ldc)
}

/// [`sgemm_ref`] on one tile (any size): the scalar twin of every micro-kernel.
pub fn tile_ref(t: &Tile, c: &mut [f32], ldc: usize) {
    t.check(c, ldc);
    for i in 0..t.m {
        let row = &mut c[i * ldc..i * ldc + t.n];
        if !t.accumulate {
            row.fill(0.0);
        }
        // p outer, j inner: per element still one chain in p order, and the j loop vectorises where FMA is native
        for p in 0..t.k {
            let av = t.a[i * t.lda + p];
            for (cv, bv) in row.iter_mut().zip(&t.b[p * t.ldb..p * t.ldb + t.n]) {
                *cv = av.mul_add(*bv, *cv);
            }
        }
    }
}

/// `C = A · B` with the tier's micro-kernel (or [`sgemm_ref`] where it has none).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    kern: &Kernels,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
) {
    // k = 0 too: the slices below would not run, and the twin writes the zeros
    let Some(s) = kern.sgemm.filter(|_| k > 0) else { return sgemm_ref(m, n, k, a, lda, b, ldb, c, ldc) };
    for j0 in (0..n).step_by(s.nr) {
        let nc = s.nr.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            for i0 in (0..m).step_by(s.mr) {
                let t = Tile {
                    m: s.mr.min(m - i0),
                    n: nc,
                    k: kc,
                    a: &a[i0 * lda + p0..],
                    lda,
                    b: &b[p0 * ldb + j0..],
                    ldb,
                    accumulate: p0 > 0,
                };
                (s.tile)(&t, &mut c[i0 * ldc + j0..], ldc);
            }
        }
    }
}
