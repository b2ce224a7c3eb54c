//! Kernel tables: one per ISA tier, each entry with a scalar twin in [`scalar`] that defines it.
//! Weights are raw GGUF row bytes; activations are f32 or Q8_0 blocks (the `vec_dot_type`).

use crate::{BlockQ8_0, GgmlType, Isa};

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_legacy;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_k;
#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "aarch64")]
pub mod neon_k;
#[cfg(target_arch = "aarch64")]
mod neon_legacy;
pub mod scalar;

/// One weight row times four activation rows (tokens): the Q8_0 blocks and their scales as f32, per token.
pub type Gemm4 = fn(&[u8], [&[BlockQ8_0]; 4], [&[f32]; 4], &mut [f32; 4]);

/// R16: one interleaved group of 16 weight rows ([`crate::repack`]) against tokens `t0..t1` of the Q8_0
/// activations, into `out[t * ldo + r]` (the last argument is `ldo`). Defined by
/// [`crate::repack::gemm_r16_ref`], to the bit.
pub type GemmR16 = fn(&[u8], &crate::Acts, usize, usize, &mut [f32], usize);

/// A weight row of a K-quant or IQ4_XS type (its raw blocks) · Q8_K activations; defined by
/// [`crate::kquants::dot_q8_k_ref`].
pub type DotQ8K = fn(&[u8], &[crate::BlockQ8_K]) -> f32;

/// A weight row of Q4_1, Q5_0, Q5_1 or IQ4_NL (its raw blocks) · Q8_0 activations `y` and, for Q4_1/Q5_1, Q8_1's
/// block sums `ys` (empty otherwise); defined by [`crate::kquants::dot_q8_legacy_ref`].
pub type DotLegacy = fn(&[u8], &[BlockQ8_0], &[f32]) -> f32;

/// One K-quant / IQ4_XS weight row against four tokens' Q8_K activations (prefill: each super-block unpacked
/// once for the four); defined as four [`DotQ8K`]s.
pub type GemmQ8K = fn(&[u8], [&[crate::BlockQ8_K]; 4], &mut [f32; 4]);

/// Row dot products of one tier.
pub struct Kernels {
    pub isa: Isa,
    /// Q8_0 weight row · Q8_0 activations.
    pub dot_q8_0: fn(&[u8], &[BlockQ8_0]) -> f32,
    /// Q4_0 weight row · Q8_0 activations.
    pub dot_q4_0: fn(&[u8], &[BlockQ8_0]) -> f32,
    /// F16 weight row · f32.
    pub dot_f16: fn(&[u8], &[f32]) -> f32,
    /// BF16 weight row · f32.
    pub dot_bf16: fn(&[u8], &[f32]) -> f32,
    /// F32 weight row · f32.
    pub dot_f32: fn(&[u8], &[f32]) -> f32,
    /// Prefill: a Q8_0 / Q4_0 weight row against four tokens at once, each weight block unpacked once and its
    /// scale converted once for the four (defined as four `dot_q8_0` / `dot_q4_0`; `None`: the tier uses the dots).
    pub gemm4_q8_0: Option<Gemm4>,
    pub gemm4_q4_0: Option<Gemm4>,
    /// The tier's dot for a K-quant / IQ4_XS weight type, if it has one (`None`: the scalar twin).
    pub dot_q8_k: fn(GgmlType) -> Option<DotQ8K>,
    /// The tier's dot for a Q4_1 / Q5_0 / Q5_1 / IQ4_NL weight type, if it has one (`None`: the scalar twin).
    pub dot_legacy: fn(GgmlType) -> Option<DotLegacy>,
    /// The tier's four-token kernel for a K-quant / IQ4_XS type, if it has one (`None`: its dots, one per token).
    pub gemm4_q8_k: fn(GgmlType) -> Option<GemmQ8K>,
    /// The tier's R16 kernel for a weight type, if it has one (asked at run time: it may depend on a CPU
    /// feature within the tier). Loaders repack a matrix only when this is `Some`.
    pub r16: fn(GgmlType) -> Option<GemmR16>,
    /// An F16 row widened to f32 (exact on every tier).
    pub widen_f16: fn(&[u8], &mut [f32]),
    /// `out += a · row` for an F16 row (attention's weighted sum over an f16 KV cache).
    pub axpy_f16: fn(f32, &[u8], &mut [f32]),
    /// `out[j] = row_j · q` for the F16 rows `row_j = rows[j·stride..][..2·q.len()]` (bytes), `j < out.len()`:
    /// decode attention's scores over one head of a cache layer, in one call. Each is the tier's `dot_f16`, to
    /// the bit.
    pub dots_f16: fn(&[u8], usize, &[f32], &mut [f32]),
    /// `out += w[j] · row_j` for `j = 0, 1, …` in order (rows as in `dots_f16`): decode attention's weighted sum.
    /// Each step is the tier's `axpy_f16`, to the bit.
    pub axpys_f16: fn(&[u8], usize, &[f32], &mut [f32]),
    /// The f32 matrix micro-kernel ([`crate::sgemm`]); `None`: the scalar twin does the products.
    pub sgemm: Option<crate::sgemm::Sgemm>,
    /// The BF16 micro-kernel ([`crate::bgemm`]), if this CPU has one (asked at run time: AVX512-BF16 within the
    /// avx512 tier); `None`: BF16 products are not offered (the twin is for tests).
    pub bgemm: fn() -> Option<crate::bgemm::Bgemm>,
    /// `softmax(scale · column)` for each column of a `(rows, cols)` block with row stride `ld`, in place but
    /// for the normalisation: each column's `1/Σ` goes to `inv` ([`crate::softmax`]; equal to its twin to the bit).
    pub softmax_cols: fn(&mut [f32], usize, usize, usize, f32, &mut [f32]),
    /// One block of rows of a column softmax taken block by block (flash attention): `(x, rows, cols, ld, scale,
    /// state)` ([`crate::softmax::softmax_online_generic`]; equal to its twin to the bit).
    pub softmax_online: fn(&mut [f32], usize, usize, usize, f32, &mut crate::softmax::Running),
    /// Activations to Q8_0 blocks, the `vec_dot_type` of Q4_0/Q8_0 weights (equal to
    /// [`crate::q8_0::quantize_row_q8_0_ref`] to the bit).
    pub quantize_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    /// `g = silu(g) · u` element-wise ([`crate::act`]; equal to its twin to the bit).
    pub silu_mul: fn(&mut [f32], &[f32]),
}

/// Element-wise bodies written for the compiler to vectorise (`#[inline(always)]` generics), each compiled as an
/// `unsafe fn` with a tier's target features: `compiled_for! { "avx2,fma": fn name(args) = path::generic; … }`.
/// The tiers then see the same IEEE operations as the scalar twin (which calls the generic plainly).
#[allow(unused_macros)]
macro_rules! compiled_for {
    ($features:literal: $(fn $name:ident($($a:ident: $t:ty),* $(,)?) = $generic:path;)*) => {
        $(
            #[doc = concat!("[`", stringify!($generic), "`] compiled for this tier.")]
            #[target_feature(enable = $features)]
            unsafe fn $name($($a: $t),*) {
                $generic($($a),*)
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use compiled_for;

/// A tier's [`Kernels::dots_f16`] and [`Kernels::axpys_f16`] (`dots_f16`, `axpys_f16`) from its `dot_f16` and
/// `axpy_f16`, row after row inside one function with the tier's features (so the row kernel is inlined: decode
/// attention made one call per cached row before, ~270 k per layer at a 4k context).
#[allow(unused_macros)]
macro_rules! strided_f16 {
    ($features:literal, $dot:path, $axpy:path) => {
        #[target_feature(enable = $features)]
        unsafe fn dots_f16(rows: &[u8], stride: usize, q: &[f32], out: &mut [f32]) {
            let n = 2 * q.len();
            for (j, o) in out.iter_mut().enumerate() {
                *o = $dot(&rows[j * stride..][..n], q);
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn axpys_f16(rows: &[u8], stride: usize, w: &[f32], out: &mut [f32]) {
            let n = 2 * out.len();
            for (j, w) in w.iter().enumerate() {
                $axpy(*w, &rows[j * stride..][..n], out);
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use strided_f16;

pub(crate) fn has(isa: Isa) -> bool {
    match isa {
        Isa::Scalar => true,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => true,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => true,
        _ => false,
    }
}

/// The table of `isa` (which must be in [`Isa::available`]).
pub fn kernels(isa: Isa) -> &'static Kernels {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if Isa::Avx2.supported() => &avx2::KERNELS,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if Isa::Avx512.supported() => &avx512::KERNELS,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if Isa::Neon.supported() => &neon::KERNELS,
        _ => &scalar::KERNELS,
    }
}

/// The table of the selected tier.
/// Cached: callers in hot loops (attention calls it per KV row) pay one atomic load, not the feature checks
/// of [`kernels`].
pub fn selected() -> &'static Kernels {
    static SEL: std::sync::OnceLock<&'static Kernels> = std::sync::OnceLock::new();
    SEL.get_or_init(|| kernels(crate::isa::selected()))
}

impl Kernels {
    /// See [`Kernels::r16`].
    pub fn gemm_r16(&self, ty: GgmlType) -> Option<GemmR16> {
        (self.r16)(ty)
    }

    /// Dot of one weight row of type `ty` with activation row `t` (see [`crate::Acts`]).
    pub fn dot(&self, ty: GgmlType, w: &[u8], acts: &crate::Acts, t: usize) -> f32 {
        match ty {
            GgmlType::Q8_0 => (self.dot_q8_0)(w, acts.q8_row(t)),
            GgmlType::Q4_0 => (self.dot_q4_0)(w, acts.q8_row(t)),
            GgmlType::F16 => (self.dot_f16)(w, acts.f32_row(t)),
            GgmlType::BF16 => (self.dot_bf16)(w, acts.f32_row(t)),
            GgmlType::F32 => (self.dot_f32)(w, acts.f32_row(t)),
            ty if ty.vec_dot_type() == GgmlType::Q8_K => match (self.dot_q8_k)(ty) {
                Some(f) => f(w, acts.q8k_row(t)),
                None => crate::kquants::dot_q8_k_ref(ty, w, acts.q8k_row(t)),
            },
            ty if crate::kquants::is_unpacked_type(ty) => {
                let (y, ys) = (acts.q8_row(t), acts.q8_1_sums(t));
                match (self.dot_legacy)(ty) {
                    Some(f) => f(w, y, ys),
                    None => crate::kquants::dot_q8_legacy_ref(ty, w, y, ys),
                }
            }
            other => unreachable!("{other} weights are refused at load"),
        }
    }
}
