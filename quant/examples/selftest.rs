//! The kernel self-test on the main thread, for emulators that cannot create threads (see `selftest.rs`).
fn main() {
    let tiers = pixtral_quant::Isa::available();
    let n = pixtral_quant::selftest::kernels_match_ref();
    pixtral_quant::selftest::q4_0_nibble_order();
    println!("kernel self-test on {tiers:?}: {n} comparisons");
    println!("2 passed, 0 failed");
}
