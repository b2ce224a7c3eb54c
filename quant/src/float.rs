//! F16 / BF16 scalar conversions. F16 uses `half` (round to nearest even, as numpy's `astype(float16)`).
//! BF16 follows ggml's `ggml_compute_fp32_to_bf16` exactly (quiet NaN, round to nearest even), which the
//! `gguf` Python package reproduces.

/// f32 → bf16 bits, ggml's reference rounding.
pub fn bf16_from_f32_ref(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        // NaN: keep sign and top mantissa bits, force quiet
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

/// bf16 bits → f32 (exact).
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is exactly half way between 1 and 1 + 2^-7: ties to the even mantissa (1.0)
        assert_eq!(bf16_from_f32_ref(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3*2^-8 is half way between 1+2^-7 (odd) and 1+2^-6: ties up to even
        assert_eq!(bf16_from_f32_ref(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_from_f32_ref(f32::INFINITY), 0x7f80);
        assert!(bf16_to_f32(bf16_from_f32_ref(f32::NAN)).is_nan());
    }
}
