//! The kernel self-test on the main thread, for emulators that cannot create threads (see `selftest.rs`).
fn main() {
    let tiers = pixtral_quant::Isa::available();
    let n = pixtral_quant::selftest::kernels_match_ref();
    pixtral_quant::selftest::q4_0_nibble_order();
    let r = pixtral_quant::selftest::r16_matches_ref();
    let g = pixtral_quant::selftest::sgemm_matches_ref();
    let s = pixtral_quant::selftest::softmax_matches_ref();
    let o = pixtral_quant::selftest::softmax_online_matches_ref();
    let a = pixtral_quant::selftest::silu_matches_ref();
    let z = pixtral_quant::selftest::quantize_q8_0_matches_ref();
    let b = pixtral_quant::selftest::bgemm_matches_ref();
    let k = pixtral_quant::selftest::kdots_match_ref();
    let l = pixtral_quant::selftest::legacy_dots_match_ref();
    #[cfg(target_arch = "aarch64")]
    println!("aarch64 dotprod: {}", pixtral_quant::kernels::neon::dotprod());
    #[cfg(target_arch = "aarch64")]
    println!("aarch64 i8mm: {}", pixtral_quant::kernels::neon::i8mm());
    println!(
        "kernel self-test on {tiers:?}: {n} comparisons, R16 layout: {r}, sgemm: {g}, softmax: {s}, online softmax: {o}, \
         silu: {a}, quantize_q8_0: {z}, bf16 gemm: {b}, K-quant dots: {k}, legacy/IQ4_NL dots: {l}"
    );
    println!("11 passed, 0 failed");
}
