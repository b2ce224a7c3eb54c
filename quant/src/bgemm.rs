//! BF16 matrix product with f32 sums, `C = A · B`: the ViT's matmuls at `--vit-precision bf16`, through AVX512-BF16's
//! `vdpbf16ps` (two bf16 products into each f32 lane: twice the FMA rate of f32 at the same register count).
//!
//! Operands are rounded to bf16 (nearest even, [`crate::bf16_from_f32_ref`]) when packed, in the pair layout the
//! instruction reads (and AMX's `TDPBF16PS` too): `k` in pairs, one `u32` per pair = element `2p` in the low half,
//! `2p + 1` in the high half; an odd `k` gets a zero pair partner.
//! - A: groups of `mr` rows, each `(k/2, mr)` pair-major ([`pack_a_bf16`]), as [`crate::sgemm::pack_a`];
//! - B: column panels of `nr`, each `(k/2, nr)` ([`widen_panels_bf16`]).
//!
//! Every element of C is, per pair `p` in order: `c ← c + a[2p+1]·b[2p+1]`, then `c ← c + a[2p]·b[2p]` (the
//! instruction's definition, Intel SDM `VDPBF16PS`: products of bf16 are exact in f32; each sum rounded to nearest
//! even; subnormal inputs and results flushed to zero). The scalar twin [`tile_bf16_ref`] computes exactly that,
//! so the tier equals it to the bit. Against f32 the result differs by the operands' rounding (2⁻⁹ relative
//! each): [`crate::sgemm`] stays the default and the reference.

use crate::bf16_from_f32_ref;

/// A micro-tile: `c[i·ldc + j] (+)= Σ_p a(i, p) · b(p, j)` for `i < m ≤ mr`, `j < n ≤ nr`, over `pairs` pairs.
pub struct TileBf16<'a> {
    pub m: usize,
    pub n: usize,
    pub pairs: usize,
    /// packed A: `(pairs, mr)`
    pub a: &'a [u32],
    pub mr: usize,
    /// B pairs: `b[p·ldb + j]`
    pub b: &'a [u32],
    pub ldb: usize,
    pub accumulate: bool,
}

impl TileBf16<'_> {
    /// The slices are long enough for the tile.
    pub fn check(&self, c: &[f32], ldc: usize) {
        use crate::sgemm::need;
        assert!(
            self.m <= self.mr
                && self.a.len() >= need(self.pairs, self.mr, self.mr)
                && self.b.len() >= need(self.pairs, self.ldb, self.n)
                && c.len() >= need(self.m, ldc, self.n),
            "bf16 gemm tile out of bounds"
        );
    }
}

/// A tier's BF16 micro-kernel and its tile shape.
#[derive(Clone, Copy)]
pub struct Bgemm {
    pub mr: usize,
    pub nr: usize,
    pub tile: fn(&TileBf16, &mut [f32], usize),
}

impl Bgemm {
    /// The scalar twin as a micro-kernel (tests; same packing, same results).
    pub const REF: Bgemm = Bgemm { mr: 4, nr: 16, tile: tile_bf16_ref };

    /// Rows per packed block: [`crate::sgemm::MC`] rounded down to whole groups.
    pub fn mc(&self) -> usize {
        (crate::sgemm::MC / self.mr).max(1) * self.mr
    }
}

/// A bf16 (bits) as the instruction reads it: subnormals are zero.
fn bf16_daz(b: u16) -> f32 {
    if b & 0x7f80 == 0 {
        f32::from_bits(((b & 0x8000) as u32) << 16)
    } else {
        crate::bf16_to_f32(b)
    }
}

/// A sum as the instruction keeps it: subnormal results are zero (of the same sign).
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// `c + lo(a)·lo(b)` after `c + hi(a)·hi(b)`: one pair, as `vdpbf16ps` computes it.
#[inline]
pub fn dot_pair_ref(c: f32, a: u32, b: u32) -> f32 {
    let (a1, b1) = (bf16_daz((a >> 16) as u16), bf16_daz((b >> 16) as u16));
    let (a0, b0) = (bf16_daz(a as u16), bf16_daz(b as u16));
    let c = ftz(c + a1 * b1); // the product is exact: one rounding, the sum's
    ftz(c + a0 * b0)
}

/// One tile by the definition: the scalar twin of every BF16 micro-kernel.
pub fn tile_bf16_ref(t: &TileBf16, c: &mut [f32], ldc: usize) {
    t.check(c, ldc);
    for i in 0..t.m {
        for j in 0..t.n {
            let mut acc = if t.accumulate { c[i * ldc + j] } else { 0.0 };
            for p in 0..t.pairs {
                acc = dot_pair_ref(acc, t.a[p * t.mr + i], t.b[p * t.ldb + j]);
            }
            c[i * ldc + j] = acc;
        }
    }
}

/// Two f32 as one bf16 pair (`lo` in the low half), each rounded to nearest even.
#[inline]
pub fn pair(lo: f32, hi: f32) -> u32 {
    bf16_from_f32_ref(lo) as u32 | (bf16_from_f32_ref(hi) as u32) << 16
}

/// Packed A: rows `0..m` of `a` (row stride `lda`, `k` columns) in groups of `mr`, group `g` at
/// `dst[g·⌈k/2⌉·mr..]` as `(⌈k/2⌉, mr)`; rows past `m` are zero. `dst`: `⌈m/mr⌉·mr·⌈k/2⌉`.
pub fn pack_a_bf16(mr: usize, m: usize, k: usize, a: &[f32], lda: usize, dst: &mut [u32]) {
    let kp = k.div_ceil(2);
    for (g, grp) in dst[..m.div_ceil(mr) * mr * kp].chunks_exact_mut(mr * kp).enumerate() {
        let rows = mr.min(m - g * mr);
        if rows < mr {
            grp.fill(0);
        }
        for i in 0..rows {
            let row = &a[(g * mr + i) * lda..][..k];
            for (p, d) in grp.iter_mut().skip(i).step_by(mr).enumerate() {
                *d = pair(row[2 * p], if 2 * p + 1 < k { row[2 * p + 1] } else { 0.0 });
            }
        }
    }
}

/// F32/F16/BF16 weight rows (`k` elements each) as B panels of `nr` columns, `(⌈k/2⌉, nr)` pairs each, zero past
/// the last row; the f16 → bf16 rounding keeps 8 of f16's 11 significant bits. `dst`: `⌈rows/nr⌉·nr·⌈k/2⌉`.
pub fn widen_panels_bf16(kern: &crate::Kernels, ty: crate::GgmlType, w: &[u8], k: usize, nr: usize, dst: &mut [u32]) {
    let eb = ty.row_bytes(1).expect("float type");
    let rows = w.len() / (k * eb);
    let kp = k.div_ceil(2);
    let mut row = vec![0f32; k + 1];
    for (j, panel) in dst[..rows.div_ceil(nr) * nr * kp].chunks_exact_mut(nr * kp).enumerate() {
        let nrow = nr.min(rows - j * nr);
        if nrow < nr {
            panel.fill(0);
        }
        for r in 0..nrow {
            crate::matmul::widen_row(kern, ty, &w[(j * nr + r) * k * eb..][..k * eb], &mut row[..k]);
            for (p, d) in panel.iter_mut().skip(r).step_by(nr).enumerate() {
                *d = pair(row[2 * p], row[2 * p + 1]);
            }
        }
    }
}

/// Pairs of `k` per pass over C: a `KC_PAIRS × 32` micro-panel of B is 32 KB (L1), a 14-row group of A 14 KB.
pub const KC_PAIRS: usize = 256;

/// `C (m × n, ldc) = A (m × k, lda) · B` (panels from [`widen_panels_bf16`]) with micro-kernel `s`: A packed
/// [`crate::sgemm::MC`] rows at a time; per slice of [`KC_PAIRS`] pairs each micro-panel of B meets every row
/// group of the block (as [`crate::sgemm::sgemm_packed`]).
#[allow(clippy::too_many_arguments)]
pub fn bgemm_panels(
    s: &Bgemm,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[u32],
    c: &mut [f32],
    ldc: usize,
) {
    let kp = k.div_ceil(2);
    let mc = s.mc();
    PACK.with(|p| {
        let mut p = p.borrow_mut();
        let len = p.len().max(mc * kp);
        p.resize(len, 0);
        for i0 in (0..m).step_by(mc) {
            let rows = mc.min(m - i0);
            pack_a_bf16(s.mr, rows, k, &a[i0 * lda..], lda, &mut p);
            for p0 in (0..kp).step_by(KC_PAIRS) {
                for j0 in (0..n).step_by(s.nr) {
                    for g in 0..rows.div_ceil(s.mr) {
                        let t = TileBf16 {
                            m: s.mr.min(rows - g * s.mr),
                            n: s.nr.min(n - j0),
                            pairs: KC_PAIRS.min(kp - p0),
                            a: &p[(g * kp + p0) * s.mr..],
                            mr: s.mr,
                            b: &b[(j0 / s.nr * kp + p0) * s.nr..],
                            ldb: s.nr,
                            accumulate: p0 > 0,
                        };
                        (s.tile)(&t, &mut c[(i0 + g * s.mr) * ldc + j0..], ldc);
                    }
                }
            }
        }
    })
}

std::thread_local! {
    /// [`bgemm_panels`]'s packed block of A.
    static PACK: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}
