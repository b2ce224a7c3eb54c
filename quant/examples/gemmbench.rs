//! Prefill matmul, one thread: a 1024 × 5120 weight against 64 tokens, with the tier's dots only, its gemm4
//! kernels, and (where the tier has one) its R16 kernel on the interleaved layout; prints GFLOP/s of each (2 flops
//! per weight and token). Then the f32 micro-kernel (`sgemm`) on the shapes the ViT gives it.
use pixtral_quant::kernels::{kernels, Kernels};
use pixtral_quant::{matmul_rows, repack, Acts, GgmlType, Isa, Layout};
use std::time::Instant;

fn main() {
    let (rows, k, n) = (1024, 5120, 64);
    let w: Vec<f32> = (0..rows * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let x: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 997) as f32 / 498.0 - 1.0).collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let mut wb = vec![0u8; ty.row_bytes(rows * k).unwrap()];
        pixtral_quant::quantize_row_ref(ty, &w, &mut wb).unwrap();
        let mut r16 = wb.clone();
        repack::repack_matrix(ty, k, &mut r16);
        let mut acts = Acts::default();
        acts.prepare(ty, &x, n, k);
        for isa in Isa::available().into_iter().filter(|i| *i != Isa::Scalar) {
            let with = kernels(isa);
            let without = Kernels { gemm4_q8_0: None, gemm4_q4_0: None, ..*with };
            let mut runs = vec![("dots ", &without, Layout::Plain, &wb), ("gemm4", with, Layout::Plain, &wb)];
            if with.gemm_r16(ty).is_some() {
                runs.push(("r16  ", with, Layout::R16, &r16));
            }
            for (what, kt, layout, wb) in runs {
                let mut out = vec![0f32; rows * n];
                matmul_rows(kt, ty, layout, wb, &acts, &mut out); // warm
                let reps = 5;
                let t = Instant::now();
                for _ in 0..reps {
                    matmul_rows(kt, ty, layout, wb, &acts, &mut out);
                }
                let dt = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{ty} {isa:?} {what}: {:.1} GFLOP/s ({:.1} ms)",
                    2.0 * (rows * k * n) as f64 / dt / 1e9,
                    dt * 1e3
                );
            }
        }
    }
    // sgemm: (m, n, k, lda, ldb) as in prefill with float weights (X · Wᵀ panel) and the ViT's attention
    for (what, m, n, k, lda, ldb) in [
        ("X·Wt  4096x32x1024", 4096, 32, 1024, 1024, 32),
        ("Q·Kt  64x4096x64  ", 64, 4096, 64, 1024, 4096 + 16),
        ("P·V   64x64x4096  ", 64, 64, 4096, 4096, 64),
    ] {
        let a: Vec<f32> = (0..m * lda).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * ldb).map(|i| ((i * 104729) % 997) as f32 / 498.0 - 1.0).collect();
        let mut c = vec![0f32; m * n];
        for isa in Isa::available().into_iter().filter(|i| kernels(*i).sgemm.is_some()) {
            let kt = kernels(isa);
            pixtral_quant::sgemm::sgemm(kt, m, n, k, &a, lda, &b, ldb, &mut c, n); // warm
            let reps = 5;
            let t = Instant::now();
            for _ in 0..reps {
                pixtral_quant::sgemm::sgemm(kt, m, n, k, &a, lda, &b, ldb, &mut c, n);
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            println!("sgemm {what} {isa:?}: {:.1} GFLOP/s", 2.0 * (m * n * k) as f64 / dt / 1e9);
        }
    }
}
