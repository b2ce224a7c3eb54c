//! Reference kernels against f64 arithmetic and the format bounds, on seeded random data.

use pixtral_quant::kernels::scalar;
use pixtral_quant::{dequantize_row_ref, quantize_row_ref, roundtrip_bound, BlockQ4_0, BlockQ8_0, GgmlType};

use pixtral_quant::selftest::Rng;

/// Roughly normal: sum of 4 uniforms in [-1, 1), centred.
fn normal(rng: &mut Rng) -> f32 {
    (0..4).map(|_| rng.f32()).sum::<f32>() / 2.0
}

const SIZES: [usize; 14] = [1, 2, 3, 5, 7, 8, 15, 17, 31, 33, 63, 127, 129, 1023];

#[test]
fn roundtrip_error_is_within_the_format_bound() {
    let mut rng = Rng(7);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0] {
        for scale in [1e-6f32, 1.0, 300.0] {
            let x: Vec<f32> = (0..32 * 129).map(|_| normal(&mut rng) * scale).collect();
            let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
            quantize_row_ref(ty, &x, &mut q).unwrap();
            let mut y = vec![0f32; x.len()];
            dequantize_row_ref(ty, &q, &mut y).unwrap();
            for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                let bound = roundtrip_bound(ty, xb);
                for (i, (a, c)) in xb.iter().zip(yb).enumerate() {
                    assert!((a - c).abs() <= bound, "{ty} scale {scale} block {b} elem {i}: {a} -> {c}, bound {bound}");
                }
            }
        }
    }
}

fn blocks_q8(x: &[f32]) -> Vec<BlockQ8_0> {
    x.chunks_exact(32).map(|c| BlockQ8_0::quantize_ref(c.try_into().unwrap())).collect()
}

#[test]
fn reference_dots_equal_f64_dots_of_the_dequantized_values() {
    let mut rng = Rng(11);
    for n_blocks in SIZES {
        let n = n_blocks * 32;
        let a: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
        let b: Vec<f32> = (0..n).map(|_| normal(&mut rng)).collect();
        let f64dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
        // f32 accumulation: relative to the sum of |products|
        let tol = |x: &[f32], y: &[f32]| {
            x.iter().zip(y).map(|(p, q)| (*p as f64 * *q as f64).abs()).sum::<f64>() * n as f64 * f32::EPSILON as f64
        };

        // the scalar twins (`kernels::scalar`) on encoded weight rows, against f64 dots of the decoded values
        let qb = blocks_q8(&b);
        let db: Vec<f32> = qb
            .iter()
            .flat_map(|blk| {
                let mut o = [0f32; 32];
                blk.dequantize_ref(&mut o);
                o
            })
            .collect();
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0] {
            let mut w = vec![0u8; ty.row_bytes(n).unwrap()];
            quantize_row_ref(ty, &a, &mut w).unwrap();
            let mut wd = vec![0f32; n];
            dequantize_row_ref(ty, &w, &mut wd).unwrap();
            let (got, x) = match ty {
                GgmlType::F32 => (scalar::dot_f32_ref(&w, &b), &b),
                GgmlType::F16 => (scalar::dot_f16_ref(&w, &b), &b),
                GgmlType::BF16 => (scalar::dot_bf16_ref(&w, &b), &b),
                GgmlType::Q8_0 => (scalar::dot_q8_0_ref(&w, &qb), &db),
                _ => (scalar::dot_q4_0_ref(&w, &qb), &db),
            };
            let want = f64dot(&wd, x);
            assert!((got as f64 - want).abs() <= tol(&wd, x), "{ty} n_blocks={n_blocks}: {got} vs {want}");
        }
    }
}

#[test]
fn q4_0_nibble_layout_is_low_j_high_j_plus_16() {
    // hand-built block: d = 1, element j -> nibble j (low) and element j+16 -> 15-j (high)
    let mut qs = [0u8; 16];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = j as u8 | ((15 - j as u8) << 4);
    }
    let b = BlockQ4_0 { d: half::f16::from_f32(1.0), qs };
    let mut out = [0f32; 32];
    b.dequantize_ref(&mut out);
    for j in 0..16 {
        assert_eq!(out[j], j as f32 - 8.0);
        assert_eq!(out[j + 16], 7.0 - j as f32);
    }
}

#[test]
fn row_entry_points_refuse_partial_blocks_and_unsupported_types() {
    let x = vec![0f32; 48];
    let mut out = vec![0u8; 100];
    assert!(quantize_row_ref(GgmlType::Q8_0, &x, &mut out).is_err());
    assert!(quantize_row_ref(GgmlType::Q4_K, &x[..48], &mut out).is_err());
    let mut out = vec![0u8; 35];
    assert!(quantize_row_ref(GgmlType::Q8_0, &x[..32], &mut out).is_err(), "wrong output length");
}
