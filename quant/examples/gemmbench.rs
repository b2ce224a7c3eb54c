//! Prefill matmul, one thread: a 1024 × 5120 weight against 64 tokens, with the tier's dots only, its gemm4
//! kernels, and (where the tier has one) its R16 kernel on the interleaved layout; prints GFLOP/s of each (2 flops
//! per weight and token). Then the f32 micro-kernel (`sgemm`) on the shapes the ViT gives it.
use pixtral_quant::kernels::{kernels, Kernels};
use pixtral_quant::{matmul_rows, repack, sgemm, Acts, GgmlType, Isa, Layout};
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
    // sgemm: (m, n, k) as the ViT gives it: a 96-token block against a 1024-row weight's panels (one task of the
    // float matmul, A packed in the timing), and one 64-query tile of one head's attention, computed transposed
    // (Sᵀ = K·Qᵀ, Oᵀ = Vᵀ·Sᵀ: A packed once per layer, outside the timing)
    for (what, m, n, k, panels, prepacked) in [
        ("X·Wt  96x1024x1024 ", 96, 1024, 1024, true, false),
        ("X·Wt  96x1024x4096 ", 96, 1024, 4096, true, false),
        ("K·Qt  4096x64x64   ", 4096, 64, 64, false, true),
        ("Vt·St 64x64x4096   ", 64, 64, 4096, false, true),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 997) as f32 / 498.0 - 1.0).collect();
        let mut c = vec![0f32; m * n];
        for isa in Isa::available().into_iter().filter(|i| kernels(*i).sgemm.is_some()) {
            let s = kernels(isa).sgemm.unwrap();
            let (mut pb, mut pa) = (Vec::new(), Vec::new());
            let bp = sgemm::aligned(&mut pb, b.len());
            bp.copy_from_slice(&b);
            let b = if panels { sgemm::B::Panels { b: bp } } else { sgemm::B::Rows { b: bp, ldb: n } };
            let ap = sgemm::aligned(&mut pa, m.div_ceil(s.mr) * s.mr * k);
            sgemm::pack_a(s.mr, m, k, &a, k, ap);
            let mut run = || match prepacked {
                true => sgemm::sgemm_packed(&s, m, n, k, ap, b, &mut c, n, false),
                false => sgemm::sgemm_with(&s, m, n, k, &a, k, b, &mut c, n),
            };
            run(); // warm
            let reps = 10;
            let t = Instant::now();
            for _ in 0..reps {
                run();
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            println!("sgemm {what} {isa:?}: {:.1} GFLOP/s", 2.0 * (m * n * k) as f64 / dt / 1e9);
        }
    }
    // the column softmax of one Sᵀ tile (4096 keys × 64 queries)
    let (rows, cols) = (4096, 64);
    let x: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 / 100.0).collect();
    for isa in Isa::available() {
        let f = kernels(isa).softmax_cols;
        let mut y = x.clone();
        let reps = 10;
        let t = Instant::now();
        for _ in 0..reps {
            y.copy_from_slice(&x);
            f(&mut y, rows, cols, cols, 0.125, &mut [0f32; 64]);
        }
        let dt = t.elapsed().as_secs_f64() / reps as f64;
        println!("softmax_cols 4096x64 {isa:?}: {:.2} ns/element", dt * 1e9 / (rows * cols) as f64);
    }
}
