//! The Q4_0/Q8_0 row dots streaming 1 GB of weights from DRAM (one thread): GB/s against memcpy-like reading.
use pixtral_quant::kernels::kernels;
use pixtral_quant::{BlockQ8_0, GgmlType, Isa};
use std::time::Instant;

fn main() {
    let k = 5120;
    let x: Vec<f32> = (0..k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let xq: Vec<BlockQ8_0> = x.chunks_exact(32).map(|c| BlockQ8_0::quantize_ref(c.try_into().unwrap())).collect();
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let rb = ty.row_bytes(k).unwrap();
        let rows = (1usize << 30) / rb;
        let mut row = vec![0u8; rb];
        pixtral_quant::quantize_row_ref(ty, &x, &mut row).unwrap();
        let w: Vec<u8> = row.iter().copied().cycle().take(rows * rb).collect();
        let t = Instant::now();
        let s: u64 = w.chunks(4096).map(|c| c[0] as u64).sum();
        let plain = w.len() as f64 / t.elapsed().as_secs_f64() / 1e9;
        for isa in Isa::available() {
            let kk = kernels(isa);
            let t = Instant::now();
            let mut acc = 0f32;
            for r in w.chunks_exact(rb) {
                acc += if ty == GgmlType::Q4_0 { (kk.dot_q4_0)(r, &xq) } else { (kk.dot_q8_0)(r, &xq) };
            }
            let dt = t.elapsed().as_secs_f64();
            println!(
                "{ty} {isa:?}: {:.1} GB/s from DRAM ({acc:.0}; touch-every-page {plain:.1} GB/s, {s})",
                w.len() as f64 / dt / 1e9
            );
        }
    }
}
