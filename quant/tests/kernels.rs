//! Every SIMD kernel against its scalar twin, on every tier this CPU runs (the checks live in
//! `pixtral_quant::selftest`, shared with `examples/selftest.rs`).

use pixtral_quant::Isa;

#[test]
fn all_kernels_match_their_scalar_twins_on_every_tier() {
    eprintln!("tiers on this CPU: {:?}", Isa::available());
    assert!(pixtral_quant::selftest::kernels_match_ref() > 100);
}

#[test]
fn q4_0_kernels_read_nibbles_in_ggml_order() {
    pixtral_quant::selftest::q4_0_nibble_order();
}

#[test]
fn pixtral_isa_names_round_trip() {
    for i in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
        assert_eq!(Isa::from_name(i.name()), Some(i));
    }
    assert_eq!(Isa::from_name("sse9"), None);
}
