//! Quick per-kernel timing: one row of 5120 elements, repeated; prints ns per block and GB/s of weights.
use pixtral_quant::kernels::kernels;
use pixtral_quant::{BlockQ8_0, GgmlType, Isa};
use std::time::Instant;

fn main() {
    let n = 5120 * 64; // 64 rows of 5120, to defeat nothing but the loop overhead
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let xq: Vec<BlockQ8_0> = x.chunks_exact(32).map(|c| BlockQ8_0::quantize_ref(c.try_into().unwrap())).collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::F16] {
        let mut wb = vec![0u8; ty.row_bytes(n).unwrap()];
        pixtral_quant::quantize_row_ref(ty, &x, &mut wb).unwrap();
        for isa in Isa::available() {
            let k = kernels(isa);
            let reps = 200;
            let t = Instant::now();
            let mut s = 0f32;
            for _ in 0..reps {
                s += match ty {
                    GgmlType::Q4_0 => (k.dot_q4_0)(&wb, &xq),
                    GgmlType::Q8_0 => (k.dot_q8_0)(&wb, &xq),
                    _ => (k.dot_f16)(&wb, &x),
                };
            }
            let dt = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "{ty} {isa:?}: {:.2} ns/block, {:.1} GB/s of weights (checksum {s:.1})",
                dt * 1e9 / (n / 32) as f64,
                wb.len() as f64 / dt / 1e9
            );
        }
    }
}
