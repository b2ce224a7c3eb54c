//! f32 matrix product `C = A · B` (row-major, any strides): the ViT's attention (`Q·Kᵀ`, `P·V`) and prefill with
//! F32/F16/BF16 weights (activations times the widened, transposed weights).
//!
//! Every element is one FMA chain over `p = 0..k` in order, starting from 0 (`c = fma(a[i][p], b[p][j], c)`), on
//! every tier: the SIMD micro-tiles vectorise over `j` and keep `MR × NR` sums in registers, so they equal
//! [`sgemm_ref`] to the bit.
//!
//! Blocking (GotoBLAS-style; cost `2·m·n·k` flops): A is packed into groups of `MR` rows stored p-major (one
//! pointer, one cache-line stream per tile, no 4 KB-aliased row strides), at most [`MC`] rows at a time so the
//! packed block stays in L2; B is read as `KC × NR` micro-panels, each reused by every row group of the block
//! while it sits in L1/L2. `k` is cut in slices of [`KC`] (C is loaded and stored once per slice).

use crate::Kernels;

/// `k` per pass over C: a `KC × 32` micro-panel of B is 64 KB, a 14-row group of packed A 28 KB.
pub const KC: usize = 512;
/// Rows of A packed per block: `MC × KC` f32 = 384 KB, resident in L2 while B's micro-panels pass over it.
pub const MC: usize = 192;

/// One micro-tile: `c[i·ldc + j] (+)= Σ_{p<k} a[p·mr + i] · b[p·ldb + j]` for `i < m ≤ MR`, `j < n ≤ NR`, with A
/// packed ([`pack_a`]: `mr` is the tier's `MR`). `accumulate`: continue from `c` (a later `k` slice) instead of 0.
pub struct Tile<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [f32],
    pub mr: usize,
    pub b: &'a [f32],
    pub ldb: usize,
    pub accumulate: bool,
}

impl Tile<'_> {
    /// The slices are long enough for the tile (each kernel checks this once per tile).
    pub fn check(&self, c: &[f32], ldc: usize) {
        assert!(
            self.m <= self.mr
                && self.a.len() >= need(self.k, self.mr, self.mr)
                && self.b.len() >= need(self.k, self.ldb, self.n)
                && c.len() >= need(self.m, ldc, self.n),
            "sgemm tile out of bounds"
        );
    }
}

/// Elements a `rows × cols` view with row stride `ld` spans (0 when empty): what a tile's slice must hold.
pub(crate) fn need(rows: usize, ld: usize, cols: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// A tier's micro-kernel and its tile shape.
#[derive(Clone, Copy)]
pub struct Sgemm {
    pub mr: usize,
    pub nr: usize,
    pub tile: fn(&Tile, &mut [f32], usize),
}

impl Sgemm {
    /// The scalar twin as a "micro-kernel", for tiers without one (same packing, same results).
    pub const REF: Sgemm = Sgemm { mr: 4, nr: 16, tile: tile_ref };

    /// Rows per packed block: [`MC`] rounded down to whole groups.
    pub fn mc(&self) -> usize {
        (MC / self.mr).max(1) * self.mr
    }
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
    chains(m, n, k, |i, p| a[i * lda + p], b, ldb, c, ldc, false)
}

/// One tile (any size) by the definition: the scalar twin of every micro-kernel.
pub fn tile_ref(t: &Tile, c: &mut [f32], ldc: usize) {
    t.check(c, ldc);
    chains(t.m, t.n, t.k, |i, p| t.a[p * t.mr + i], t.b, t.ldb, c, ldc, t.accumulate)
}

/// The definition both twins share: `c[i][j] = fma(a(i, p), b[p][j], c[i][j])` for `p = 0..k` in order, from 0
/// or (`accumulate`) from `c`; `a(i, p)` reads A in whichever layout it has.
#[allow(clippy::too_many_arguments)]
fn chains(
    m: usize,
    n: usize,
    k: usize,
    a: impl Fn(usize, usize) -> f32,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        if !accumulate {
            row.fill(0.0);
        }
        // p outer, j inner: per element still one chain in p order
        for p in 0..k {
            let av = a(i, p);
            for (cv, bv) in row.iter_mut().zip(&b[p * ldb..p * ldb + n]) {
                *cv = av.mul_add(*bv, *cv);
            }
        }
    }
}

/// Packed A for the micro-kernel: rows `0..m` of `a` (`lda`) in groups of `mr`, group `g` at
/// `dst[g·k·mr..]` as `(k, mr)` p-major; rows past `m` in the last group are zero. `dst`: `⌈m/mr⌉·mr·k`.
pub fn pack_a(mr: usize, m: usize, k: usize, a: &[f32], lda: usize, dst: &mut [f32]) {
    pack_a_strided(mr, m, k, a, (lda, 1), dst)
}

/// [`pack_a`] for an A whose element `(i, p)` is `a[i·rs + p·cs]` (`(rs, cs) = (1, ld)`: a transposed matrix).
pub fn pack_a_strided(mr: usize, m: usize, k: usize, a: &[f32], (rs, cs): (usize, usize), dst: &mut [f32]) {
    for (g, grp) in dst[..m.div_ceil(mr) * mr * k].chunks_exact_mut(mr * k).enumerate() {
        let rows = mr.min(m - g * mr);
        let a = &a[g * mr * rs..];
        if rows < mr {
            grp.fill(0.0);
        }
        // p outer: the writes are one sequential stream
        for (p, d) in grp.chunks_exact_mut(mr).enumerate() {
            for (i, d) in d[..rows].iter_mut().enumerate() {
                *d = a[i * rs + p * cs];
            }
        }
    }
}

/// B as the micro-kernel reads it.
#[derive(Clone, Copy)]
pub enum B<'a> {
    /// `b[p·ldb + j]`
    Rows { b: &'a [f32], ldb: usize },
    /// Column panels of the tier's `nr`, each `(k, nr)` contiguous: `b[(j / nr · k + p)·nr + j % nr]`
    /// (widened weights, [`crate::matmul::widen_panels`]).
    Panels { b: &'a [f32] },
}

/// `C (m × n, ldc) (+)= A · B` with A packed by [`pack_a`] with the tier's `mr`; `accumulate`: add to `C` (each
/// element's chain then starts from its value in `C`) instead of overwriting it.
/// Per `k` slice: when B's whole slice fits in L1 (attention's `K·Qᵀ`: 64 × 64), each row group of A is read
/// once and meets every column panel; otherwise each micro-panel of B is read once and meets every row group
/// (A's block stays in L2).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_packed(
    s: &Sgemm,
    m: usize,
    n: usize,
    k: usize,
    ap: &[f32],
    b: B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    /// f32 of B that stay in L1 beside A's stream (32 KB).
    const L1_B: usize = 8192;
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        let mut tile = |g: usize, j0: usize| {
            let (bp, ldb) = match b {
                B::Rows { b, ldb } => (&b[p0 * ldb + j0..], ldb),
                B::Panels { b } => (&b[(j0 / s.nr * k + p0) * s.nr..], s.nr),
            };
            let t = Tile {
                m: s.mr.min(m - g * s.mr),
                n: s.nr.min(n - j0),
                k: kc,
                a: &ap[(g * k + p0) * s.mr..],
                mr: s.mr,
                b: bp,
                ldb,
                accumulate: accumulate || p0 > 0,
            };
            (s.tile)(&t, &mut c[g * s.mr * ldc + j0..], ldc);
        };
        if n * kc <= L1_B {
            for g in 0..m.div_ceil(s.mr) {
                for j0 in (0..n).step_by(s.nr) {
                    tile(g, j0);
                }
            }
        } else {
            for j0 in (0..n).step_by(s.nr) {
                for g in 0..m.div_ceil(s.mr) {
                    tile(g, j0);
                }
            }
        }
    }
}

std::thread_local! {
    /// [`sgemm`]'s packed block of A.
    static PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The first `n` elements of `v` from a 64-byte boundary on (vector loads never straddle cache lines).
pub fn aligned(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n + 16 {
        v.resize(n + 16, 0.0);
    }
    let o = v.as_ptr().align_offset(64).min(16);
    &mut v[o..o + n]
}

/// `C (m × n, ldc) = A (m × k, lda) · B` with micro-kernel `s`: A packed [`MC`] rows at a time (`k > 0`).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(s: &Sgemm, m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: B, c: &mut [f32], ldc: usize) {
    PACK.with(|p| {
        let mut p = p.borrow_mut();
        let mc = s.mc();
        let ap = aligned(&mut p, mc * k);
        for i0 in (0..m).step_by(mc) {
            let rows = mc.min(m - i0);
            pack_a(s.mr, rows, k, &a[i0 * lda..], lda, ap);
            sgemm_packed(s, rows, n, k, ap, b, &mut c[i0 * ldc..], ldc, false);
        }
    })
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
    // k = 0 too: the slices would not run, and the twin writes the zeros
    match kern.sgemm.filter(|_| k > 0) {
        Some(s) => sgemm_with(&s, m, n, k, a, lda, B::Rows { b, ldb }, c, ldc),
        None => sgemm_ref(m, n, k, a, lda, b, ldb, c, ldc),
    }
}
