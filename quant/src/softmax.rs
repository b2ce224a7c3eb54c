//! Softmax of a row of attention scores: `x[i] = exp(s·x[i] − s·max) / Σ`, with an exp of our own (range
//! reduction to `2ⁿ · e^r`, |r| ≤ ln2/2, degree-6 Taylor polynomial: relative error < 2e-7 over the range a
//! softmax uses). The code is written so the compiler vectorises it: the SIMD tiers compile this same function
//! under their target features ([`softmax_generic`]), and every element sees the same IEEE operations on every
//! tier, so the tiers agree with the scalar twin [`softmax_ref`] to the bit (the sums use 16 fixed partial
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
    let xc = x.max(-87.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n = bits(t) − bits(MAGIC) ∈ [−126, 0]: 2ⁿ has exponent field n + 127
    let e = f32::from_bits(t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * e
    }
}

/// The body every tier compiles; `#[inline(always)]` so it takes the caller's target features.
#[inline(always)]
pub fn softmax_generic(x: &mut [f32], scale: f32) {
    let mut m = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (m, v) in m.iter_mut().zip(c) {
            *m = m.max(*v);
        }
    }
    for (m, v) in m.iter_mut().zip(chunks.remainder()) {
        *m = m.max(*v);
    }
    let max = m.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    let shift = scale * max;
    let mut s = [0f32; 16];
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for (s, v) in s.iter_mut().zip(c.iter_mut()) {
            *v = exp_neg(scale * *v - shift);
            *s += *v;
        }
    }
    for (s, v) in s.iter_mut().zip(chunks.into_remainder()) {
        *v = exp_neg(scale * *v - shift);
        *s += *v;
    }
    let inv = 1.0 / s.iter().sum::<f32>();
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The scalar twin.
pub fn softmax_ref(x: &mut [f32], scale: f32) {
    softmax_generic(x, scale)
}
