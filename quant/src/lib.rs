//! ggml block formats and their kernels.
//!
//! This crate knows bytes and numbers only: no I/O, no model. Every format has a `quantize_ref` /
//! `dequantize_ref` pair, and the reference dot products (`kernels::scalar`) are plain loops; they are the spec the
//! converter uses (so its output is the same on every machine) and the scalar twins that every SIMD
//! kernel is tested against.
//!
//! Layouts are ggml's, byte for byte (`ggml-common.h`), and are checked bit-exact against the `gguf`
//! Python package (`gguf.quants`) on committed vectors (`tests/`).
//!
//! Rows: a weight matrix of ggml shape `ne = [n_cols, n_rows]` is stored row-major, `ne[0]` fastest; a row
//! of a block format is `n_cols / block_size` consecutive blocks.

pub mod act;
pub mod bgemm;
pub mod float;
pub mod isa;
pub mod kernels;
pub mod kquants;
pub mod kquants_ref;
pub mod matmul;
pub mod q4_0;
pub mod q8_0;
pub mod repack;
pub mod repack_k;
#[doc(hidden)]
pub mod selftest;
pub mod sgemm;
pub mod softmax;
mod types;

pub use float::{bf16_from_f32_ref, bf16_to_f32};
pub use isa::Isa;
pub use kernels::Kernels;
pub use kquants::BlockQ8_K;
pub use matmul::{dot_row_ref, matmul_rows, matmul_rows_ref, Acts};
pub use q4_0::BlockQ4_0;
pub use q8_0::BlockQ8_0;
pub use repack::Layout;
pub use types::{GgmlType, TypeInfo};

/// Errors of the row-level entry points: the only checks are lengths against the type's block size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantError {
    /// `n` values cannot be cut into whole blocks of the type.
    NotBlockMultiple { ty: GgmlType, n: usize },
    /// The type has no reference quantizer/dequantizer in this crate (e.g. Q4_K read from a foreign file).
    Unsupported(GgmlType),
    /// Source and destination lengths disagree.
    Length { ty: GgmlType, values: usize, bytes: usize },
}

impl std::fmt::Display for QuantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantError::NotBlockMultiple { ty, n } => {
                write!(f, "{n} values are not a whole number of {ty} blocks of {}", ty.block_size())
            }
            QuantError::Unsupported(ty) => write!(f, "type {ty} has no kernels in pixtral"),
            QuantError::Length { ty, values, bytes } => {
                write!(f, "{values} values of {ty} need {:?} bytes, got {bytes}", ty.row_bytes(*values))
            }
        }
    }
}

impl std::error::Error for QuantError {}

fn check_lengths(ty: GgmlType, values: usize, bytes: usize) -> Result<(), QuantError> {
    if !ty.supported() {
        return Err(QuantError::Unsupported(ty));
    }
    if !values.is_multiple_of(ty.block_size()) {
        return Err(QuantError::NotBlockMultiple { ty, n: values });
    }
    if ty.row_bytes(values) != Some(bytes) {
        return Err(QuantError::Length { ty, values, bytes });
    }
    Ok(())
}

/// Encode `src` as `ty` into `dst` (exactly `ty.row_bytes(src.len())` bytes) with the reference code.
pub fn quantize_row_ref(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => {
            for (x, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (x, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
                d.copy_from_slice(&half::f16::from_f32(*x).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (x, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
                d.copy_from_slice(&bf16_from_f32_ref(*x).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            for (x, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(BlockQ8_0::BYTES)) {
                BlockQ8_0::quantize_ref(x.try_into().expect("chunk of 32")).write_to(d);
            }
        }
        GgmlType::Q4_0 => {
            for (x, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(BlockQ4_0::BYTES)) {
                BlockQ4_0::quantize_ref(x.try_into().expect("chunk of 32")).write_to(d);
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            for (x, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(ty.type_size())) {
                kquants::quantize_block_legacy(ty, x.try_into().expect("chunk of 32"), d);
            }
        }
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            for (x, d) in src.chunks_exact(kquants::QK_K).zip(dst.chunks_exact_mut(ty.type_size())) {
                kquants_ref::quantize_block_k(ty, x, d);
            }
        }
        GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
            for (x, d) in src.chunks_exact(ty.block_size()).zip(dst.chunks_exact_mut(ty.type_size())) {
                kquants_ref::quantize_block_iq4(ty, x, d);
            }
        }
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Decode `src` (a row of `ty`) into `dst` with the reference code.
pub fn dequantize_row_ref(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(ty, dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => {
            for (s, d) in src.chunks_exact(4).zip(dst.iter_mut()) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
                *d = half::f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (s, d) in src.chunks_exact(2).zip(dst.iter_mut()) {
                *d = bf16_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        GgmlType::Q8_0 => {
            for (s, d) in src.chunks_exact(BlockQ8_0::BYTES).zip(dst.chunks_exact_mut(32)) {
                BlockQ8_0::read_from(s).dequantize_ref(d.try_into().expect("chunk of 32"));
            }
        }
        GgmlType::Q4_0 => {
            for (s, d) in src.chunks_exact(BlockQ4_0::BYTES).zip(dst.chunks_exact_mut(32)) {
                BlockQ4_0::read_from(s).dequantize_ref(d.try_into().expect("chunk of 32"));
            }
        }
        t if kquants::is_unpacked_type(t) => kquants::dequantize_row(t, src, dst),
        other => return Err(QuantError::Unsupported(other)),
    }
    Ok(())
}

/// Worst-case |dequantize(quantize(x)) - x| for one block, the bound the converter tests hold each format to.
///
/// Derived from the formats, not measured. f32 is exact; f16/bf16 round to nearest: half an ulp (relative
/// 2^-11 / 2^-8) or, for f16, half the subnormal step 2^-24. Q8_0: `q = round(x / d)` with `d = amax/127` is
/// off by at most d/2, and storing `d` as f16 moves each of up to 127 steps by the f16 rounding of `d`. Q4_0:
/// `d = amax/8`; round to nearest is off by d/2 except that the value opposite the peak (q = 16) is clipped
/// to 15, a full step, and up to 8 steps move with the f16 rounding of `d`.
pub fn roundtrip_bound(ty: GgmlType, block: &[f32]) -> f32 {
    let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
    let f16_err = |v: f32| (v * (1.0 / 2048.0)).max(1.0 / (1u32 << 25) as f32);
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => f16_err(amax),
        GgmlType::BF16 => amax * (1.0 / 256.0),
        GgmlType::Q8_0 => {
            let d = amax / 127.0;
            (0.5 * d + 127.0 * f16_err(d)) * (1.0 + 1e-6)
        }
        GgmlType::Q4_0 => {
            let d = amax / 8.0;
            (d + 8.0 * f16_err(d)) * (1.0 + 1e-6)
        }
        _ => f32::INFINITY,
    }
}
