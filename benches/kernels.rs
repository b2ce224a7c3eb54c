//! Kernel benchmarks (criterion): `cargo bench --bench kernels`.
//!
//! First a probe measures this machine's ceilings once — read bandwidth (one thread and all threads, a 512 MB
//! buffer) and FP32 FMA peak per core (16 independent 8-lane FMA chains) — and prints them; then each kernel
//! reports GB/s of weights (decode: one weight row after another, streamed from memory) or GFLOP/s (prefill
//! matmul over 64 tokens), with its share of the measured ceiling printed next to criterion's numbers.
//! The printed share comes from a first, cold run; criterion then repeats the same 21–42 MB matrix, which a large
//! last-level cache (this VM reports 480 MB of L3) serves from cache, so its decode GiB/s are cache figures there.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pixtral::quant::kernels::kernels;
use pixtral::quant::{matmul_rows, repack, Acts, GgmlType, Isa, Layout};

struct Peaks {
    read_gbs_1t: f64,
    read_gbs_all: f64,
    fma_gflops_1t: f64,
}

fn read_gbs(buf: &[u64], threads: usize) -> f64 {
    let chunk = buf.len().div_ceil(threads);
    let t0 = Instant::now();
    let mut total = 0u64;
    for _ in 0..3 {
        total = total.wrapping_add(std::thread::scope(|s| {
            let hs: Vec<_> =
                buf.chunks(chunk).map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).fold(0u64, |a, x| a.wrapping_add(x))
        }));
    }
    black_box(total);
    3.0 * (buf.len() * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.0); 16];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..n {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut s = [0f32; 8];
    _mm256_storeu_ps(s.as_mut_ptr(), acc.iter().fold(_mm256_setzero_ps(), |x, y| _mm256_add_ps(x, *y)));
    s.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop512(n: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.0); 16];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..n {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |x, y| _mm512_add_ps(x, *y)))
}

/// FP32 FMA peak of one core in GFLOP/s with the widest vectors the CPU has (AVX-512, else AVX2 + FMA; 0 where
/// the probe cannot run).
fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx512.supported() {
        let n = 10_000_000;
        let t0 = Instant::now();
        // SAFETY: AVX-512 F was detected just above.
        black_box(unsafe { fma_loop512(n) });
        return (n * 16 * 16 * 2) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    }
    #[cfg(target_arch = "x86_64")]
    if Isa::Avx2.supported() {
        let n = 20_000_000;
        let t0 = Instant::now();
        // SAFETY: AVX2 and FMA were detected just above.
        black_box(unsafe { fma_loop(n) });
        return (n * 16 * 8 * 2) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    }
    0.0
}

fn probe() -> Peaks {
    let buf: Vec<u64> = (0..64u64 << 20).collect(); // 512 MB
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let p = Peaks { read_gbs_1t: read_gbs(&buf, 1), read_gbs_all: read_gbs(&buf, threads), fma_gflops_1t: fma_peak() };
    // all threads at once: on a VM whose vCPUs share physical cores this is less than threads × one
    let all: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(fma_peak)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!(
        "machine: read {:.1} GB/s (1 thread), {:.1} GB/s ({threads} threads); FP32 FMA peak {:.1} GFLOP/s (1 thread), \
         {all:.1} GFLOP/s ({threads} threads)",
        p.read_gbs_1t, p.read_gbs_all, p.fma_gflops_1t
    );
    p
}

/// The layouts a tier runs `ty` in: plain, and R16 (interleaved copy of `w`) where the tier has a kernel for it.
fn layouts(kt: &pixtral::quant::Kernels, ty: GgmlType, cols: usize, w: &[u8]) -> Vec<(&'static str, Layout, Vec<u8>)> {
    let mut v = vec![("", Layout::Plain, w.to_vec())];
    if kt.gemm_r16(ty).is_some() {
        let mut p = w.to_vec();
        repack::repack_matrix(ty, cols, &mut p);
        v.push(("-r16", Layout::R16, p));
    }
    v
}

/// A row of `n` weights of `ty`: quantized from a fixed pattern, or random blocks for the types we do not write
/// (IQ4_NL, IQ4_XS: speed does not depend on the values).
fn quantized(ty: GgmlType, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let mut wb = vec![0u8; ty.row_bytes(n).unwrap()];
    if pixtral::quant::quantize_row_ref(ty, &x, &mut wb).is_err() {
        pixtral::quant::selftest::random_blocks(ty, &mut wb, &mut pixtral::quant::selftest::Rng(1));
    }
    wb
}

/// Decode's weight types: ours, then the community files' K-quants, legacy and IQ4 types.
const DECODE_TYPES: [GgmlType; 13] = {
    use GgmlType::*;
    [Q4_0, Q8_0, F16, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, Q4_1, Q5_0, Q5_1, IQ4_NL]
};

fn benches(c: &mut Criterion) {
    let peaks = probe();
    let k_dim = 5120;
    // decode: 2048 rows of 5120 (21–42 MB, beyond the caches) · one token
    let rows = 2048;
    for ty in DECODE_TYPES {
        let w = quantized(ty, rows * k_dim);
        let x: Vec<f32> = (0..k_dim).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let mut acts = Acts::default();
        acts.prepare(ty, &x, 1, k_dim);
        let mut g = c.benchmark_group(format!("decode_{ty}"));
        g.throughput(Throughput::Bytes(w.len() as u64));
        for isa in Isa::available() {
            let kt = kernels(isa);
            for (tag, layout, w) in layouts(kt, ty, k_dim, &w) {
                let mut out = vec![0f32; rows];
                let t0 = Instant::now();
                matmul_rows(kt, ty, layout, &w, &acts, &mut out);
                let gbs = w.len() as f64 / t0.elapsed().as_secs_f64() / 1e9;
                println!(
                    "decode {ty} {isa:?}{tag}: ~{gbs:.1} GB/s = {:.0}% of one thread's read bandwidth",
                    100.0 * gbs / peaks.read_gbs_1t
                );
                g.bench_function(format!("{isa:?}{tag}"), |b| {
                    b.iter(|| matmul_rows(kt, ty, layout, black_box(&w), &acts, &mut out))
                });
            }
        }
        g.finish();
    }
    // prefill: 256 rows of 5120 · 64 tokens (2 flops per weight and token)
    let (rows, n) = (256, 64);
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::F16, GgmlType::Q4_K, GgmlType::Q6_K] {
        let w = quantized(ty, rows * k_dim);
        let x: Vec<f32> = (0..n * k_dim).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        let mut acts = Acts::default();
        acts.prepare(ty, &x, n, k_dim);
        let flops = 2 * rows * k_dim * n;
        let mut g = c.benchmark_group(format!("prefill64_{ty}"));
        g.throughput(Throughput::Elements(flops as u64)); // elements = flops: criterion's Gelem/s is GFLOP/s
        for isa in Isa::available() {
            let kt = kernels(isa);
            for (tag, layout, w) in layouts(kt, ty, k_dim, &w) {
                let mut out = vec![0f32; rows * n];
                let t0 = Instant::now();
                matmul_rows(kt, ty, layout, &w, &acts, &mut out);
                let gf = flops as f64 / t0.elapsed().as_secs_f64() / 1e9;
                if peaks.fma_gflops_1t > 0.0 {
                    println!(
                        "prefill {ty} {isa:?}{tag}: ~{gf:.1} GFLOP/s = {:.0}% of the FP32 FMA peak",
                        100.0 * gf / peaks.fma_gflops_1t
                    );
                }
                g.bench_function(format!("{isa:?}{tag}"), |b| {
                    b.iter(|| matmul_rows(kt, ty, layout, black_box(&w), &acts, &mut out))
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = kernels_group;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = benches
}
criterion_main!(kernels_group);
