//! Softmax of attention scores down the columns of a block (the ViT's scores come transposed: one column per
//! query): `x[i] = exp(s·x[i] − s·max) / Σ` (the division left to the caller), with an exp of our own (range
//! reduction to `2ⁿ · e^r`, |r| ≤ ln2/2, degree-6 Taylor polynomial: relative error < 2e-7 over the range a
//! softmax uses). The code is written so the compiler vectorises it: the SIMD tiers compile this same function
//! under their target features ([`softmax_cols_generic`]), and every element sees the same IEEE operations on every
//! tier, so the tiers agree with the scalar twin [`softmax_cols_ref`] to the bit (the sums use 8 fixed partial
//! sums, in the same order everywhere).
//! Cost per element: ~20 flops, against libm's `expf` call (~20 ns here) that dominated the ViT's attention.

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so n·LN2_HI is exact for |n| < 2^9
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// e^x for x ≤ 0 (a softmax's shifted scores); 0 below −87 (where e^x leaves the normal range).
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer (ties to even) held in the low mantissa bits, so n and 2ⁿ come
    // from plain float and integer lane operations (a float→int cast would be scalarised: Rust's casts saturate)
    const MAGIC: f32 = 12_582_912.0;
    // fused multiply-adds throughout (one rounding each, the same on every tier; `mul_add` is exact everywhere)
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = r.mul_add(1.0 / 720.0, 1.0 / 120.0);
    let p = r.mul_add(p, 1.0 / 24.0);
    let p = r.mul_add(p, 1.0 / 6.0);
    let p = r.mul_add(p, 0.5);
    let p = r.mul_add(p, 1.0);
    let p = r.mul_add(p, 1.0);
    // n = bits(t) − bits(MAGIC) ∈ [−126, 0] for x ≥ −87: 2ⁿ has exponent field n + 127 (below, t and e are
    // meaningless and the select discards them)
    let e = f32::from_bits(t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * e
    }
}

/// Partial sums (and maxima) per column: rows `r ≡ i (mod PARTS)` go to part `i`, combined in a fixed order at
/// the end. Shorter dependency chains for the vector units, and 8× fewer terms per chain for the rounding.
const PARTS: usize = 8;
// the sums are combined by a fixed tree of eight (`softmax_cols_generic`)
const _: () = assert!(PARTS == 8);

/// Columns per sweep: the per-column state (maxima, PARTS partial sums) stays in L1 while rows stream past.
const COLS: usize = 64;

/// The body every tier compiles; `#[inline(always)]` so it takes the caller's target features. Softmax down each
/// column `j < cols` of `x` (`rows` rows, row stride `ld`) with the normalisation left to the caller: `x` becomes
/// the numerators `exp(s·x − s·max)` and `inv[j]` the column's `1/Σ` (attention multiplies its weighted sums by
/// it, one product per output instead of one per score). Two row-major sweeps (max; exp and sums) over up to
/// [`COLS`] columns at a time: the compiler vectorises across columns, and every column sees the same scalar
/// operations in the same order (maxima are exact in any order; sums go by part `r mod PARTS`).
#[inline(always)]
pub fn softmax_cols_generic(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, inv: &mut [f32]) {
    for c0 in (0..cols).step_by(COLS) {
        let w = COLS.min(cols - c0);
        let x = &mut x[c0..];
        let mut shift = [f32::NEG_INFINITY; COLS];
        for r in 0..rows {
            for (m, v) in shift[..w].iter_mut().zip(&x[r * ld..r * ld + w]) {
                *m = m.max(*v);
            }
        }
        for s in shift.iter_mut() {
            *s *= scale;
        }
        let mut sum = [[0f32; COLS]; PARTS];
        for r in 0..rows {
            let s = &mut sum[r % PARTS];
            for ((v, s), sh) in x[r * ld..r * ld + w].iter_mut().zip(s.iter_mut()).zip(&shift) {
                *v = exp_neg(scale * *v - sh);
                *s += *v;
            }
        }
        for (j, inv) in inv[c0..c0 + w].iter_mut().enumerate() {
            let s = |i: usize| sum[i][j];
            *inv = 1.0 / (((s(0) + s(1)) + (s(2) + s(3))) + ((s(4) + s(5)) + (s(6) + s(7))));
        }
    }
}

/// The scalar twin.
pub fn softmax_cols_ref(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, inv: &mut [f32]) {
    softmax_cols_generic(x, rows, cols, ld, scale, inv)
}

/// Per-column state of a softmax taken one block of rows at a time (flash attention's online softmax, Milakov &
/// Gimelshein 2018; Dao et al. 2022): the raw maximum so far, the sum of numerators relative to it, and the factor
/// `alpha = e^(s·(old max − new max))` by which the last block rescaled what came before (0 before any score).
pub struct Running {
    pub max: Vec<f32>,
    pub sum: Vec<f32>,
    pub alpha: Vec<f32>,
}

impl Running {
    /// State for `cols` columns before any block: max −∞, sum 0.
    pub fn new(cols: usize) -> Running {
        let mut r = Running { max: Vec::new(), sum: Vec::new(), alpha: Vec::new() };
        r.reset(cols);
        r
    }

    /// Back to the state before any block, for `cols` columns (no allocation once it held as many).
    pub fn reset(&mut self, cols: usize) {
        for (v, x) in [(&mut self.max, f32::NEG_INFINITY), (&mut self.sum, 0.0), (&mut self.alpha, 0.0)] {
            v.clear();
            v.resize(cols, x);
        }
    }
}

/// The body every tier compiles: one block of `rows` scores per column (`cols` columns, row stride `ld`; −∞ for a
/// masked score) folded into `run`. Per column, with `m` the new maximum (old or this block's): `x ←
/// e^(s·x − s·m)`, `alpha = e^(s·old − s·m)`, `sum ← sum·alpha + Σ x` (the block's sum by [`PARTS`] partial sums,
/// as [`softmax_cols_generic`]). The caller rescales its weighted sums by `alpha`, adds this block's, and divides by
/// `sum` after the last block. A column with no finite score yet keeps numerators 0 (shift 0 instead of −∞).
#[inline(always)]
pub fn softmax_online_generic(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, run: &mut Running) {
    for c0 in (0..cols).step_by(COLS) {
        let w = COLS.min(cols - c0);
        let x = &mut x[c0..];
        let mut max = [f32::NEG_INFINITY; COLS];
        max[..w].copy_from_slice(&run.max[c0..c0 + w]);
        for r in 0..rows {
            for (m, v) in max[..w].iter_mut().zip(&x[r * ld..r * ld + w]) {
                *m = m.max(*v);
            }
        }
        let mut shift = [0f32; COLS];
        let (old, alpha) = (&mut run.max[c0..c0 + w], &mut run.alpha[c0..c0 + w]);
        for (((sh, m), old), alpha) in shift.iter_mut().zip(&max[..w]).zip(old).zip(alpha) {
            *sh = if *m == f32::NEG_INFINITY { 0.0 } else { scale * m };
            *alpha = exp_neg(scale * *old - *sh);
            *old = *m;
        }
        let mut sum = [[0f32; COLS]; PARTS];
        for r in 0..rows {
            let s = &mut sum[r % PARTS];
            for ((v, s), sh) in x[r * ld..r * ld + w].iter_mut().zip(s.iter_mut()).zip(&shift) {
                *v = exp_neg(scale * *v - sh);
                *s += *v;
            }
        }
        for (j, (total, alpha)) in run.sum[c0..c0 + w].iter_mut().zip(&run.alpha[c0..c0 + w]).enumerate() {
            let s = |i: usize| sum[i][j];
            let block = ((s(0) + s(1)) + (s(2) + s(3))) + ((s(4) + s(5)) + (s(6) + s(7)));
            *total = total.mul_add(*alpha, block);
        }
    }
}

/// The scalar twin of [`softmax_online_generic`].
pub fn softmax_online_ref(x: &mut [f32], rows: usize, cols: usize, ld: usize, scale: f32, run: &mut Running) {
    softmax_online_generic(x, rows, cols, ld, scale, run)
}
