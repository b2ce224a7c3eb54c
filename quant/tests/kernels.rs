//! Every SIMD kernel against its scalar twin, on every tier this CPU runs (the checks live in
//! `pixtral_quant::selftest`, shared with `examples/selftest.rs`).

use pixtral_quant::Isa;

#[test]
fn all_kernels_match_their_scalar_twins_on_every_tier() {
    eprintln!("tiers on this CPU: {:?}", Isa::available());
    assert!(pixtral_quant::selftest::kernels_match_ref() > 100);
}

#[test]
fn k_quant_dots_match_their_scalar_twins_on_every_tier() {
    // Q2_K..Q6_K and IQ4_XS on the x86 tiers (6 types x 5 lengths x 2 tiers here)
    let n = pixtral_quant::selftest::kdots_match_ref();
    #[cfg(target_arch = "x86_64")]
    assert!(n >= 60, "{n}");
}

#[test]
fn legacy_and_iq4_dots_match_their_scalar_twins_on_every_tier() {
    // Q4_1, Q5_0, Q5_1, IQ4_NL x 5 lengths on each SIMD tier (IQ4_XS runs in the K-quant test above)
    let n = pixtral_quant::selftest::legacy_dots_match_ref();
    #[cfg(target_arch = "x86_64")]
    assert!(n >= 40, "{n}");
    #[cfg(target_arch = "aarch64")]
    assert!(n >= 20, "{n}");
}

#[test]
fn q4_0_kernels_read_nibbles_in_ggml_order() {
    pixtral_quant::selftest::q4_0_nibble_order();
}

#[test]
fn r16_layout_round_trips_and_its_kernels_match_the_twin_to_the_bit() {
    assert!(pixtral_quant::selftest::r16_matches_ref() > 1000);
}

#[test]
fn sgemm_tiles_match_the_twin_to_the_bit() {
    assert!(pixtral_quant::selftest::sgemm_matches_ref() > 1000);
}

#[test]
fn softmax_matches_the_twin_to_the_bit_and_f64_to_1e6() {
    assert!(pixtral_quant::selftest::softmax_matches_ref() > 100);
}

#[test]
fn online_softmax_matches_the_twin_to_the_bit_and_f64_to_1e6() {
    assert!(pixtral_quant::selftest::softmax_online_matches_ref() > 100);
}

#[test]
fn activation_quantizer_matches_the_twin_to_the_bit() {
    assert!(pixtral_quant::selftest::quantize_q8_0_matches_ref() > 50);
}

#[test]
fn bf16_gemm_matches_the_twin_to_the_bit_and_the_exact_product_within_its_bound() {
    assert!(pixtral_quant::selftest::bgemm_matches_ref() > 1000);
}

#[test]
fn silu_matches_the_twin_to_the_bit_and_f64_to_1e6() {
    assert!(pixtral_quant::selftest::silu_matches_ref() > 100);
}

#[test]
fn pixtral_isa_names_round_trip() {
    for i in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon] {
        assert_eq!(Isa::from_name(i.name()), Some(i));
    }
    assert_eq!(Isa::from_name("sse9"), None);
}

#[test]
fn matmul_rows_matches_the_reference_for_every_type_tier_and_token_count() {
    use pixtral_quant::{kernels::kernels, matmul_rows, matmul_rows_ref, repack, Acts, GgmlType, Layout};
    let mut rng = pixtral_quant::selftest::Rng(3);
    // R16 groups; float weights: a partial panel of the f32 micro-kernel (48 = 32 + 16), k past one `KC` slice
    for (rows, k) in [(32, 96), (48, 544)] {
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0] {
            let w: Vec<f32> = (0..rows * k).map(|_| rng.f32()).collect();
            let mut wb = vec![0u8; ty.row_bytes(rows * k).unwrap()];
            pixtral_quant::quantize_row_ref(ty, &w, &mut wb).unwrap();
            for n in [1, 3, 4, 7, 70, 130, 200] {
                let x: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
                let mut acts = Acts::default();
                acts.prepare(ty, &x, n, k);
                let mut want = vec![0f32; rows * n];
                matmul_rows_ref(ty, Layout::Plain, &wb, &acts, &mut want);
                // the same matrix interleaved, through each tier's R16 kernel (or the twin where it has none)
                let packed = repack::fits(ty, rows, k).then(|| {
                    let mut p = wb.clone();
                    repack::repack_matrix(ty, k, &mut p);
                    p
                });
                for isa in Isa::available() {
                    let runs = [(Layout::Plain, Some(&wb)), (Layout::R16, packed.as_ref())];
                    for (layout, w) in runs.into_iter().filter_map(|(l, w)| Some((l, w?))) {
                        let mut got = vec![0f32; rows * n];
                        matmul_rows(kernels(isa), ty, layout, w, &acts, &mut got);
                        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                                "{isa:?} {ty} {layout:?} n={n} [{i}]: {a} vs {b}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_rows_of_every_community_type_match_the_reference_on_every_tier() {
    use pixtral_quant::{kernels::kernels, matmul_rows, matmul_rows_ref, Acts, GgmlType, Layout};
    let mut rng = pixtral_quant::selftest::Rng(5);
    let (rows, k) = (6, 512);
    for ty in GgmlType::all().filter(|t| t.supported() && !t.is_float()) {
        let mut w = vec![0u8; ty.row_bytes(rows * k).unwrap()];
        pixtral_quant::selftest::random_blocks(ty, &mut w, &mut rng);
        for n in [1, 3, 4, 9] {
            let x: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
            let mut acts = Acts::default();
            acts.prepare(ty, &x, n, k);
            let mut want = vec![0f32; rows * n];
            matmul_rows_ref(ty, Layout::Plain, &w, &acts, &mut want);
            // the reference equals the dequantized product up to activation rounding (independent check)
            let mut wf = vec![0f32; rows * k];
            pixtral_quant::dequantize_row_ref(ty, &w, &mut wf).unwrap();
            for t in 0..n {
                for r in 0..rows {
                    let exact: f64 = (0..k).map(|i| wf[r * k + i] as f64 * x[t * k + i] as f64).sum();
                    let mag: f64 = (0..k).map(|i| (wf[r * k + i] as f64 * x[t * k + i] as f64).abs()).sum();
                    let got = want[t * rows + r] as f64;
                    assert!((got - exact).abs() <= 0.02 * mag + 1e-6, "{ty} t={t} r={r}: {got} vs {exact}");
                }
            }
            for isa in pixtral_quant::Isa::available() {
                let mut got = vec![0f32; rows * n];
                matmul_rows(kernels(isa), ty, Layout::Plain, &w, &acts, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{isa:?} {ty} n={n} output {i}: {g} vs {w}");
                }
            }
        }
    }
}
