//! Kernel self-test: every kernel of every tier this CPU runs against its scalar twin. Shared by `cargo test`
//! (`tests/kernels.rs`) and `examples/selftest.rs`, which runs it on the main thread (qemu-user in our container
//! hangs on thread creation, and the test harness runs each test on a thread).
//! Integer block sums are exact on every tier; only the f32 accumulation order differs, so the bound is
//! `n · ε · Σ|products|` (an a-priori bound for any summation order).

use crate::kernels::{kernels, scalar};
use crate::{BlockQ4_0, BlockQ8_0, GgmlType, Isa};

const BLOCKS: [usize; 14] = [1, 2, 3, 5, 7, 8, 15, 17, 31, 33, 63, 127, 129, 1023];

/// splitmix64: seeded test data without a dependency.
pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Random blocks of `ty` filling `dst`: random bytes, each f16 scale (and min) field overwritten with a finite
/// value in ±[2^-12, 2^-4] (random bytes there would give inf/NaN scales no quantizer writes).
pub fn random_blocks(ty: GgmlType, dst: &mut [u8], rng: &mut Rng) {
    use GgmlType::*;
    let f16_fields: &[usize] = match ty {
        Q4_0 | Q8_0 | Q5_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    };
    for b in dst.chunks_exact_mut(ty.type_size()) {
        for v in b.iter_mut() {
            *v = rng.next_u64() as u8;
        }
        for &at in f16_fields {
            let mag = (2f32).powf(-12.0 + 8.0 * (rng.f32() * 0.5 + 0.5));
            let v = if rng.next_u64() & 1 == 0 { mag } else { -mag };
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        }
    }
}

fn q8_blocks(x: &[f32]) -> Vec<BlockQ8_0> {
    x.chunks_exact(32).map(|c| BlockQ8_0::quantize_ref(c.try_into().unwrap())).collect()
}

fn bytes_of(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut b = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    crate::quantize_row_ref(ty, x, &mut b).unwrap();
    b
}

fn bound(w: &[f32], x: &[f32]) -> f32 {
    let s: f32 = w.iter().zip(x).map(|(a, b)| (a * b).abs()).sum();
    s * w.len() as f32 * f32::EPSILON + 1e-30
}

fn dequant(ty: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    crate::dequantize_row_ref(ty, b, &mut out).unwrap();
    out
}

/// Every kernel against its twin over awkward sizes; returns the number of comparisons.
pub fn kernels_match_ref() -> usize {
    let mut checked = 0;

    let tiers = Isa::available();
    assert!(tiers.contains(&Isa::Scalar));
    eprintln!("tiers on this CPU: {tiers:?}");
    let mut rng = Rng(42);
    for isa in tiers {
        let k = kernels(isa);
        assert_eq!(k.isa, isa);
        for nb in BLOCKS {
            let n = nb * 32;
            // weights with an outlier per row, activations of mixed scale
            let mut w: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
            w[rng.next_u64() as usize % n] = 9.0;
            let x: Vec<f32> = (0..n).map(|i| rng.f32() * if i % 7 == 0 { 10.0 } else { 1.0 }).collect();
            let xq = q8_blocks(&x);
            let xd = q8_values(&xq);

            for (ty, f, reff) in [
                (GgmlType::Q8_0, k.dot_q8_0, scalar::dot_q8_0_ref as fn(&[u8], &[BlockQ8_0]) -> f32),
                (GgmlType::Q4_0, k.dot_q4_0, scalar::dot_q4_0_ref),
            ] {
                let wb = bytes_of(ty, &w);
                let (got, want) = (f(&wb, &xq), reff(&wb, &xq));
                let tol = bound(&dequant(ty, &wb, n), &xd);
                checked += 1;
                assert!((got - want).abs() <= tol, "{isa:?} {ty} blocks={nb}: {got} vs {want} (tol {tol})");
            }
            // widen_f16: exact, odd lengths too
            for len in [n, n - 1, n.saturating_sub(13).max(1)] {
                let wb = bytes_of(GgmlType::F16, &w[..len]);
                let (mut got, mut want) = (vec![0f32; len], vec![0f32; len]);
                (k.widen_f16)(&wb, &mut got);
                scalar::widen_f16_ref(&wb, &mut want);
                checked += 1;
                assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{isa:?} widen_f16 len={len}");
            }
            // axpy_f16: out += a·row, odd lengths too (head_dim 128 in practice)
            for len in [n, n - 1, n.saturating_sub(13).max(1)] {
                let wb = bytes_of(GgmlType::F16, &w[..len]);
                let (mut got, mut want) = (x[..len].to_vec(), x[..len].to_vec());
                (k.axpy_f16)(-0.37, &wb, &mut got);
                scalar::axpy_f16_ref(-0.37, &wb, &mut want);
                checked += 1;
                for (g, w) in got.iter().zip(&want) {
                    // one FMA (one rounding) against a multiply and an add: within an ulp or two
                    assert!((g - w).abs() <= 1e-6 * (1.0 + w.abs()), "{isa:?} axpy_f16 len={len}: {g} vs {w}");
                }
            }
            // dots_f16 / axpys_f16: strided rows (a cache layer's head) = the tier's row kernels row by row, to the bit
            for (hd, rows) in [(n.min(128), 5), (n.clamp(1, 40), 3)] {
                let stride = 2 * (hd + 7); // bytes between rows: the head's slice of a wider row
                let wb = bytes_of(GgmlType::F16, &w.iter().cycle().take(rows * (hd + 7)).copied().collect::<Vec<_>>());
                let (mut got, mut want) = (vec![0f32; rows], vec![0f32; rows]);
                (k.dots_f16)(&wb, stride, &x[..hd], &mut got);
                for (j, w) in want.iter_mut().enumerate() {
                    *w = (k.dot_f16)(&wb[j * stride..][..2 * hd], &x[..hd]);
                }
                let weights: Vec<f32> = (0..rows).map(|j| 0.3 - 0.1 * j as f32).collect();
                let (mut acc, mut want_acc) = (x[..hd].to_vec(), x[..hd].to_vec());
                (k.axpys_f16)(&wb, stride, &weights, &mut acc);
                for (j, a) in weights.iter().enumerate() {
                    (k.axpy_f16)(*a, &wb[j * stride..][..2 * hd], &mut want_acc);
                }
                checked += 1;
                let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same(&got, &want) && same(&acc, &want_acc), "{isa:?} dots/axpys_f16 head {hd}");
            }
            // gemm4: one row against four tokens = four scalar dots
            let ys: Vec<Vec<BlockQ8_0>> = (0..4)
                .map(|j| {
                    q8_blocks(
                        &x.iter()
                            .enumerate()
                            .map(|(i, v)| v * (1.0 + j as f32) - (i % 3) as f32 * 0.1)
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let ds: Vec<Vec<f32>> = ys.iter().map(|y| y.iter().map(|b| b.d.to_f32()).collect()).collect();
            for (ty, g, reff) in [
                (GgmlType::Q8_0, k.gemm4_q8_0, scalar::dot_q8_0_ref as fn(&[u8], &[BlockQ8_0]) -> f32),
                (GgmlType::Q4_0, k.gemm4_q4_0, scalar::dot_q4_0_ref),
            ] {
                let Some(g) = g else { continue };
                let wb = bytes_of(ty, &w);
                let mut got = [0f32; 4];
                g(&wb, [&ys[0], &ys[1], &ys[2], &ys[3]], [&ds[0], &ds[1], &ds[2], &ds[3]], &mut got);
                for j in 0..4 {
                    let want = reff(&wb, &ys[j]);
                    let tol = bound(&dequant(ty, &wb, n), &q8_values(&ys[j]));
                    checked += 1;
                    assert!(
                        (got[j] - want).abs() <= tol,
                        "{isa:?} gemm4 {ty} blocks={nb} token {j}: {} vs {want}",
                        got[j]
                    );
                }
            }
            for (ty, f, reff) in [
                (GgmlType::F16, k.dot_f16, scalar::dot_f16_ref as fn(&[u8], &[f32]) -> f32),
                (GgmlType::BF16, k.dot_bf16, scalar::dot_bf16_ref),
                (GgmlType::F32, k.dot_f32, scalar::dot_f32_ref),
            ] {
                // float rows need not be whole blocks: also odd lengths
                for len in [n, n - 1, n.saturating_sub(13).max(1)] {
                    let wb = bytes_of(ty, &w[..len]);
                    let (got, want) = (f(&wb, &x[..len]), reff(&wb, &x[..len]));
                    let tol = bound(&dequant(ty, &wb, len), &x[..len]);
                    checked += 1;
                    assert!((got - want).abs() <= tol, "{isa:?} {ty} len={len}: {got} vs {want} (tol {tol})");
                }
            }
        }
    }

    checked
}

/// Every tier's K-quant dots ([`crate::Kernels::dot_q8_k`]) against the twin [`crate::kquants::dot_q8_k_ref`], on
/// random blocks (random bytes, finite scales of both signs) and activations with an outlier, 1 to 9 super-blocks;
/// within the f32 bound of the exact product. Returns the number of comparisons.
pub fn kdots_match_ref() -> usize {
    use crate::kquants::{dot_q8_k_ref, quantize_row_q8_k_ref, QK_K};
    let mut checked = 0;
    let mut rng = Rng(11);
    for isa in Isa::available() {
        let k = kernels(isa);
        for ty in GgmlType::all().filter(|t| t.vec_dot_type() == GgmlType::Q8_K) {
            let Some(f) = (k.dot_q8_k)(ty) else { continue };
            for nb in [1, 2, 3, 5, 9] {
                let n = nb * QK_K;
                let mut w = vec![0u8; ty.row_bytes(n).unwrap()];
                random_blocks(ty, &mut w, &mut rng);
                let mut x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
                x[rng.next_u64() as usize % n] = -20.0;
                let mut y = vec![crate::BlockQ8_K::default(); nb];
                quantize_row_q8_k_ref(&x, &mut y);
                let yv: Vec<f32> = y.iter().flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d)).collect();
                let (got, want) = (f(&w, &y), dot_q8_k_ref(ty, &w, &y));
                let wv = dequant(ty, &w, n);
                let tol = bound(&wv, &yv);
                checked += 1;
                assert!((got - want).abs() <= tol, "{isa:?} {ty} super-blocks={nb}: {got} vs {want} (tol {tol})");
                // the four-token kernel: token j is this row's activations scaled by j + 1 (other Q8_K blocks)
                let Some(g) = (k.gemm4_q8_k)(ty) else { continue };
                let ys: Vec<Vec<crate::BlockQ8_K>> = (0..4)
                    .map(|j| {
                        let xs: Vec<f32> =
                            x.iter().enumerate().map(|(i, v)| v * (j + 1) as f32 - (i % 7) as f32 * 0.1).collect();
                        let mut b = vec![crate::BlockQ8_K::default(); nb];
                        quantize_row_q8_k_ref(&xs, &mut b);
                        b
                    })
                    .collect();
                let mut o4 = [0f32; 4];
                g(&w, [&ys[0], &ys[1], &ys[2], &ys[3]], &mut o4);
                for (j, yj) in ys.iter().enumerate() {
                    let want = dot_q8_k_ref(ty, &w, yj);
                    let yv: Vec<f32> = yj.iter().flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d)).collect();
                    checked += 1;
                    assert!(
                        (o4[j] - want).abs() <= bound(&wv, &yv),
                        "{isa:?} gemm4 {ty} token {j}: {} vs {want}",
                        o4[j]
                    );
                }
            }
        }
    }
    checked
}

/// Every tier's Q4_1 / Q5_0 / Q5_1 / IQ4_NL dots ([`crate::Kernels::dot_legacy`]) against the twin
/// [`crate::kquants::dot_q8_legacy_ref`], on random blocks and activations with an outlier, 1 to 37 blocks: within
/// the f32 bound of the exact product on x86, to the bit on NEON (same float steps). Returns the comparisons made.
pub fn legacy_dots_match_ref() -> usize {
    use crate::kquants::{dot_q8_legacy_ref, q8_1_sum};
    let mut checked = 0;
    let mut rng = Rng(13);
    for isa in Isa::available() {
        let k = kernels(isa);
        for ty in [GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::IQ4_NL] {
            let Some(f) = (k.dot_legacy)(ty) else { continue };
            for nb in [1, 2, 3, 8, 37] {
                let n = 32 * nb;
                let mut w = vec![0u8; ty.row_bytes(n).unwrap()];
                random_blocks(ty, &mut w, &mut rng);
                let mut x: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
                x[rng.next_u64() as usize % n] = 20.0;
                let y = q8_blocks(&x);
                let ys: Vec<f32> = match ty {
                    GgmlType::Q4_1 | GgmlType::Q5_1 => {
                        x.chunks_exact(32).zip(&y).map(|(c, b)| q8_1_sum(c.try_into().unwrap(), &b.qs)).collect()
                    }
                    _ => vec![],
                };
                let (got, want) = (f(&w, &y, &ys), dot_q8_legacy_ref(ty, &w, &y, &ys));
                // the Q8_1 sums' term is the same f32 products in both: bound the rest
                let tol = if isa == Isa::Neon { 0.0 } else { bound(&dequant(ty, &w, n), &q8_values(&y)) };
                checked += 1;
                assert!((got - want).abs() <= tol, "{isa:?} {ty} blocks={nb}: {got} vs {want} (tol {tol})");
            }
        }
    }
    checked
}

/// The values Q8_0 blocks stand for.
fn q8_values(blocks: &[BlockQ8_0]) -> Vec<f32> {
    blocks
        .iter()
        .flat_map(|b| {
            let mut o = [0f32; 32];
            b.dequantize_ref(&mut o);
            o
        })
        .collect()
}

/// Q4_0 nibble order on every tier: one-hot activations pick single weights.
pub fn q4_0_nibble_order() {
    // hand-built block: element j = j - 8 (low nibble), element j+16 = 7 - j (high nibble), d = 1;
    // activations = one-hot per position, so each dot picks one weight
    let mut qs = [0u8; 16];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = j as u8 | ((15 - j as u8) << 4);
    }
    let mut wb = vec![0u8; 18];
    BlockQ4_0 { d: half::f16::from_f32(1.0), qs }.write_to(&mut wb);
    for isa in Isa::available() {
        for pos in 0..32 {
            let mut x = [0f32; 32];
            x[pos] = 1.0;
            let xq = q8_blocks(&x);
            let q = if pos < 16 { pos as f32 - 8.0 } else { 7.0 - (pos - 16) as f32 };
            // the one-hot activation is stored as 127 with scale f16(1/127)
            let want = (q * 127.0) * (1.0 * xq[0].d.to_f32());
            assert_eq!((kernels(isa).dot_q4_0)(&wb, &xq), want, "{isa:?} position {pos}");
        }
    }
}

/// The R16 layout: repack / unpack round trip; the scalar twin against the plain reference dots (exact integer
/// sums, so within the summation-order bound); every tier's R16 kernel against the twin, to the bit, over
/// awkward block counts and token ranges (tiles of 8, 4, 3, 2 and 1). Returns the number of comparisons.
pub fn r16_matches_ref() -> usize {
    use crate::repack::{self, R16};
    let mut checked = 0;
    let mut rng = Rng(16);
    for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        for nb in [1, 2, 3, 7, 17, 33] {
            let k: usize = nb * ty.block_size(); // 32 or 256 columns per block
            let plain = if ty.block_size() == 32 {
                let w: Vec<f32> = (0..R16 * k).map(|i| rng.f32() * if i % 11 == 0 { 5.0 } else { 1.0 }).collect();
                bytes_of(ty, &w)
            } else {
                let mut b = vec![0u8; ty.row_bytes(R16 * k).unwrap()];
                random_blocks(ty, &mut b, &mut rng);
                b
            };
            let mut packed = plain.clone();
            repack::repack_matrix(ty, k, &mut packed);
            assert_ne!(packed, plain, "{ty} nb={nb}: repacking changed nothing");
            let mut back = vec![0u8; plain.len()];
            repack::unpack_group(ty, k, &packed, &mut back);
            assert_eq!(back, plain, "{ty} nb={nb}: unpack(repack(w)) != w");

            let n = 19;
            let x: Vec<f32> = (0..n * k).map(|i| rng.f32() * if i % 5 == 0 { 8.0 } else { 1.0 }).collect();
            let mut acts = crate::Acts::default();
            acts.prepare(ty, &x, n, k);
            let ldo = R16 + 3; // padding columns must stay untouched
            let mut want = vec![0f32; ldo * n];
            repack::gemm_r16_ref(ty, &packed, &acts, 0, n, &mut want, ldo);
            let rb = ty.row_bytes(k).unwrap();
            for r in 0..R16 {
                let row = &plain[r * rb..(r + 1) * rb];
                for t in 0..n {
                    let d = scalar::KERNELS.dot(ty, row, &acts, t);
                    let xv = if ty.block_size() == 32 {
                        q8_values(acts.q8_row(t))
                    } else {
                        acts.q8k_row(t).iter().flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d)).collect()
                    };
                    let tol = bound(&dequant(ty, row, k), &xv);
                    checked += 1;
                    assert!(
                        (want[t * ldo + r] - d).abs() <= tol,
                        "{ty} nb={nb} row {r} token {t}: {} vs {d}",
                        want[t * ldo + r]
                    );
                }
            }
            for isa in Isa::available() {
                let Some(f) = kernels(isa).gemm_r16(ty) else { continue };
                for (t0, t1) in [(0, n), (0, 1), (3, 12), (5, 9), (2, 19), (7, 9), (4, 7), (1, 15), (0, 7), (10, 15)] {
                    let mut got = vec![f32::NAN; ldo * n];
                    f(&packed, &acts, t0, t1, &mut got, ldo);
                    for r in 0..ldo {
                        for t in 0..n {
                            let (g, w) = (got[t * ldo + r], want[t * ldo + r]);
                            checked += 1;
                            if (t0..t1).contains(&t) && r < R16 {
                                assert_eq!(
                                    g.to_bits(),
                                    w.to_bits(),
                                    "{isa:?} r16 {ty} nb={nb} row {r} token {t}: {g} vs {w}"
                                );
                            } else {
                                assert!(g.is_nan(), "{isa:?} r16 {ty}: token {t} row {r} outside {t0}..{t1} written");
                            }
                        }
                    }
                }
            }
        }
    }
    checked
}

/// Every tier's f32 matrix product against [`crate::sgemm::sgemm_ref`], to the bit, over awkward shapes and
/// strides (tile, `KC` and `MC` edges, both loop orders of [`crate::sgemm::sgemm_packed`]); the padding between
/// rows of C must stay untouched. Also A packed from its transpose ([`crate::sgemm::pack_a_strided`], as the
/// ViT's values are), and the scalar twin run as a micro-kernel ([`Sgemm::REF`], the tiers without one).
/// Returns the comparisons.
pub fn sgemm_matches_ref() -> usize {
    use crate::sgemm::{aligned, pack_a_strided, sgemm, sgemm_packed, sgemm_ref, Sgemm, B};
    let mut checked = 0;
    let mut rng = Rng(7);
    let shapes = [
        (1, 1, 1),
        (5, 7, 3),
        (8, 32, 64),
        (13, 17, 255),
        (17, 33, 257),
        (6, 16, 600),
        (9, 100, 64),
        (3, 64, 512),
        (200, 40, 30),
        (25, 70, 1100),
    ];
    for &(m, n, k) in &shapes {
        let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
        let a: Vec<f32> = (0..m * lda).map(|_| rng.f32()).collect();
        let b: Vec<f32> = (0..k * ldb).map(|_| rng.f32()).collect();
        let mut want = vec![f32::NAN; m * ldc];
        sgemm_ref(m, n, k, &a, lda, &b, ldb, &mut want, ldc);
        // the same A stored transposed (k × m, row stride m + 1), packed through its strides
        let at: Vec<f32> = (0..k * (m + 1))
            .map(|i| if i % (m + 1) < m { a[(i % (m + 1)) * lda + i / (m + 1)] } else { 0.0 })
            .collect();
        let mut check = |what: &str, got: &[f32]| {
            for i in 0..m {
                for j in 0..ldc {
                    let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
                    checked += 1;
                    if j < n {
                        assert_eq!(g.to_bits(), w.to_bits(), "{what} sgemm {m}x{n}x{k} [{i}][{j}]: {g} vs {w}");
                    } else {
                        assert!(g.is_nan(), "{what} sgemm {m}x{n}x{k}: padding [{i}][{j}] written");
                    }
                }
            }
        };
        let tiers: Vec<(String, Option<Sgemm>)> = Isa::available()
            .into_iter()
            .map(|isa| (format!("{isa:?}"), kernels(isa).sgemm))
            .chain([("twin as micro-kernel".to_string(), Some(Sgemm::REF))])
            .collect();
        for (what, s) in tiers {
            // a tier without a micro-kernel: `sgemm` falls back to the twin
            let kern = crate::Kernels { sgemm: s, ..*kernels(Isa::Scalar) };
            let mut got = vec![f32::NAN; m * ldc];
            sgemm(&kern, m, n, k, &a, lda, &b, ldb, &mut got, ldc);
            check(&what, &got);
            if let Some(s) = s.filter(|_| k > 0) {
                let mut p = Vec::new();
                let ap = aligned(&mut p, m.div_ceil(s.mr) * s.mr * k);
                pack_a_strided(s.mr, m, k, &at, (1, m + 1), ap);
                let mut got = vec![f32::NAN; m * ldc];
                sgemm_packed(&s, m, n, k, ap, B::Rows { b: &b, ldb }, &mut got, ldc, false);
                check(&format!("{what} (A transposed)"), &got);
                // accumulate: A·B added onto A·B continues each chain, = [A A]·[B; B] by the definition
                let a2: Vec<f32> = (0..m * 2 * k).map(|i| a[(i / (2 * k)) * lda + (i % (2 * k)) % k]).collect();
                let b2: Vec<f32> = b.iter().chain(&b[..k * ldb]).copied().collect();
                let mut want2 = vec![f32::NAN; m * ldc];
                sgemm_ref(m, n, 2 * k, &a2, 2 * k, &b2, ldb, &mut want2, ldc);
                sgemm_packed(&s, m, n, k, ap, B::Rows { b: &b, ldb }, &mut got, ldc, true);
                for i in 0..m {
                    for j in 0..n {
                        let (g, w) = (got[i * ldc + j], want2[i * ldc + j]);
                        assert_eq!(g.to_bits(), w.to_bits(), "{what} sgemm accumulate {m}x{n}x{k} [{i}][{j}]");
                    }
                }
            }
        }
    }
    checked
}

/// Every tier's column softmax: equal to the twin to the bit (numerators and `1/Σ`), and numerator × `1/Σ`
/// within 1e-6 (relative, per element) of an f64 softmax, over column counts around the 16-lane blocks, lengths
/// around the 8 partial sums, and scores down to where exp underflows; the padding between rows stays untouched.
pub fn softmax_matches_ref() -> usize {
    let mut checked = 0;
    let mut rng = Rng(5);
    for (rows, cols) in [(1, 1), (2, 3), (15, 16), (17, 17), (33, 1), (100, 40), (1024, 16), (4097, 2), (64, 70)] {
        let ld = cols + 3;
        let x: Vec<f32> = (0..rows * ld).map(|i| rng.f32() * if i % 9 == 0 { 60.0 } else { 8.0 }).collect();
        let scale = 0.125;
        let (mut want, mut want_inv) = (x.clone(), vec![0f32; cols]);
        crate::softmax::softmax_cols_ref(&mut want, rows, cols, ld, scale, &mut want_inv);
        for j in 0..ld {
            let col = |v: &[f32]| -> Vec<f32> { (0..rows).map(|r| v[r * ld + j]).collect() };
            let (xc, wc) = (col(&x), col(&want));
            if j >= cols {
                assert_eq!(xc, wc, "softmax {rows}x{cols}: padding column {j} written");
                continue;
            }
            let max = xc.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64 * scale as f64));
            let e: Vec<f64> = xc.iter().map(|v| (*v as f64 * scale as f64 - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for (w, e) in wc.iter().zip(&e) {
                let (got, exact) = (*w as f64 * want_inv[j] as f64, e / sum);
                checked += 1;
                assert!((got - exact).abs() <= 1e-6 * exact + 1e-37, "softmax {rows}x{cols}: {got} vs {exact}");
            }
        }
        for isa in Isa::available() {
            let (mut got, mut inv) = (x.clone(), vec![0f32; cols]);
            (kernels(isa).softmax_cols)(&mut got, rows, cols, ld, scale, &mut inv);
            checked += 1;
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(g, w)| g.to_bits() == w.to_bits());
            assert!(same(&got, &want) && same(&inv, &want_inv), "{isa:?} softmax {rows}x{cols} differs from the twin");
        }
    }
    checked
}

/// Every tier's online (block by block) column softmax: equal to the twin to the bit (numerators and state) on
/// every block, masked scores (−∞) included, blocks that mask a whole column before its first score too; and
/// the weighted sum it yields (`acc ← acc·alpha + Σ x·v`, then `/ sum`) within 1e-6 (relative to max |v|) of an
/// f64 softmax-weighted sum over the whole column.
pub fn softmax_online_matches_ref() -> usize {
    use crate::softmax::{softmax_online_ref, Running};
    let mut checked = 0;
    let mut rng = Rng(17);
    for (rows, cols, block) in [(1, 1, 1), (5, 3, 2), (40, 17, 16), (100, 64, 33), (513, 70, 128), (64, 2, 64)] {
        let ld = cols + 5;
        let mut x: Vec<f32> = (0..rows * ld).map(|i| rng.f32() * if i % 7 == 0 { 50.0 } else { 6.0 }).collect();
        // a causal-style mask: column j sees rows r ≥ j mod 3 … only (rows before are −∞, a whole first block
        // for some columns when the block is short), and a scattered −∞
        for r in 0..rows {
            for j in 0..cols {
                if r < j % 3 || (r * 31 + j) % 11 == 0 && r != rows - 1 {
                    x[r * ld + j] = f32::NEG_INFINITY;
                }
            }
        }
        let v: Vec<f32> = (0..rows).map(|_| rng.f32()).collect();
        let scale = 0.09;
        let run_tier = |f: fn(&mut [f32], usize, usize, usize, f32, &mut Running)| {
            let mut run = Running::new(cols);
            let (mut acc, mut blocks) = (vec![0f64; cols], Vec::new());
            for r0 in (0..rows).step_by(block) {
                let n = block.min(rows - r0);
                let mut xb = x[r0 * ld..(r0 + n) * ld].to_vec();
                f(&mut xb, n, cols, ld, scale, &mut run);
                for j in 0..cols {
                    acc[j] = acc[j] * run.alpha[j] as f64
                        + (0..n).map(|r| xb[r * ld + j] as f64 * v[r0 + r] as f64).sum::<f64>();
                }
                blocks.push((xb, run.max.clone(), run.sum.clone(), run.alpha.clone()));
            }
            (blocks, acc, run.sum)
        };
        let (want, acc, sum) = run_tier(softmax_online_ref);
        for j in 0..cols {
            let col: Vec<f64> = (0..rows).map(|r| x[r * ld + j] as f64 * scale as f64).collect();
            let max = col.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
            let e: Vec<f64> = col.iter().map(|c| (c - max).exp()).collect();
            let exact = e.iter().zip(&v).map(|(e, v)| e * *v as f64).sum::<f64>() / e.iter().sum::<f64>();
            let got = acc[j] / sum[j] as f64;
            checked += 1;
            assert!((got - exact).abs() <= 1e-6, "online softmax {rows}x{cols}/{block} col {j}: {got} vs {exact}");
        }
        for isa in Isa::available() {
            let (got, _, _) = run_tier(kernels(isa).softmax_online);
            let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(g, w)| g.to_bits() == w.to_bits());
            for (g, w) in got.iter().zip(&want) {
                checked += 1;
                assert!(
                    same(&g.0, &w.0) && same(&g.1, &w.1) && same(&g.2, &w.2) && same(&g.3, &w.3),
                    "{isa:?} online softmax {rows}x{cols}/{block} differs from the twin"
                );
            }
        }
    }
    checked
}

/// Every tier's BF16 micro-kernel (where this CPU has one): equal to the twin to the bit through
/// [`crate::bgemm::bgemm_panels`] over shapes around the tile edges, odd `k` and `k` past one slice, F32 and F16
/// weights; the twin within `k · 2⁻²³ · Σ|a·b|` of the exact f64 product of the rounded operands; and one pair
/// whose sum depends on the order (`c + a₁b₁` first, then `+ a₀b₀`, as `vdpbf16ps` is defined).
pub fn bgemm_matches_ref() -> usize {
    use crate::bgemm::{bgemm_panels, dot_pair_ref, pair, widen_panels_bf16, Bgemm, TileBf16};
    let mut checked = 0;
    // (1e8 − 1e8) + 1 = 1 in this order; (1e8 + 1) − 1e8 = 0 in the other
    let t =
        TileBf16 { m: 1, n: 1, pairs: 1, a: &[pair(1.0, -1e8)], mr: 1, b: &[pair(1.0, 1.0)], ldb: 1, accumulate: true };
    let tiers: Vec<(Isa, Bgemm)> =
        Isa::available().into_iter().filter_map(|i| (kernels(i).bgemm)().map(|b| (i, b))).collect();
    let big = crate::bf16_to_f32(crate::bf16_from_f32_ref(1e8));
    for (isa, bg) in tiers.iter().map(|(i, b)| (format!("{i:?}"), *b)).chain([("twin".to_string(), Bgemm::REF)]) {
        let (mut c, mut a, mut b) = (vec![big], vec![0u32; bg.mr], vec![0u32; bg.nr]);
        a[0] = t.a[0];
        b[0] = t.b[0];
        (bg.tile)(&TileBf16 { mr: bg.mr, a: &a, b: &b, ldb: bg.nr, ..t }, &mut c, 1);
        checked += 1;
        assert_eq!(c[0], 1.0, "{isa}: vdpbf16ps order (odd product first)");
    }
    assert_eq!(dot_pair_ref(big, t.a[0], t.b[0]), 1.0);
    let mut rng = Rng(29);
    for (m, n, k) in [(1usize, 1usize, 1usize), (3, 5, 7), (14, 32, 64), (15, 33, 513), (29, 70, 1030), (200, 40, 96)] {
        let a: Vec<f32> = (0..m * k).map(|i| rng.f32() * if i % 13 == 0 { 40.0 } else { 1.0 }).collect();
        let wf: Vec<f32> = (0..n * k).map(|_| rng.f32()).collect();
        for ty in [crate::GgmlType::F32, crate::GgmlType::F16] {
            let w: Vec<u8> = match ty {
                crate::GgmlType::F32 => wf.iter().flat_map(|v| v.to_le_bytes()).collect(),
                _ => wf.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
            };
            let run = |bg: &Bgemm| {
                let kp = k.div_ceil(2);
                let mut panels = vec![0u32; n.div_ceil(bg.nr) * bg.nr * kp];
                widen_panels_bf16(kernels(Isa::Scalar), ty, &w, k, bg.nr, &mut panels);
                let mut c = vec![f32::NAN; m * n];
                bgemm_panels(bg, m, n, k, &a, k, &panels, &mut c, n);
                c
            };
            let want = run(&Bgemm::REF);
            let rd = |x: f32| crate::bf16_to_f32(crate::bf16_from_f32_ref(x)) as f64;
            for i in 0..m {
                for j in 0..n {
                    let wv = |p: usize| rd(crate::matmul::float_row_value(ty, &w, j * k + p));
                    let terms: Vec<f64> = (0..k).map(|p| rd(a[i * k + p]) * wv(p)).collect();
                    let exact: f64 = terms.iter().sum();
                    let bound = k as f64 * 2f64.powi(-23) * terms.iter().map(|t| t.abs()).sum::<f64>() + 1e-30;
                    checked += 1;
                    let got = want[i * n + j] as f64;
                    assert!((got - exact).abs() <= bound, "bf16 twin {m}x{n}x{k} {ty}: {got} vs {exact}");
                }
            }
            for (isa, bg) in &tiers {
                let got = run(bg);
                checked += 1;
                assert!(
                    got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()),
                    "{isa:?} bf16 gemm {m}x{n}x{k} {ty} differs from the twin"
                );
            }
        }
    }
    checked
}

/// Every tier's activation quantizer: equal to `quantize_row_q8_0_ref` to the bit, on random rows, rows of exact
/// halves after scaling (ties round away from zero), zeros, one huge value, infinities and NaN.
pub fn quantize_q8_0_matches_ref() -> usize {
    let mut checked = 0;
    let mut rng = Rng(23);
    let mut rows: Vec<Vec<f32>> = (0..20).map(|i| (0..32 * (i % 5 + 1)).map(|_| rng.f32() * 10.0).collect()).collect();
    // amax 127 makes id 1: values k + 0.5 are exact ties
    rows.push((0..64).map(|i| if i == 0 { 127.0 } else { (i as f32 - 32.0) + 0.5 }).collect());
    rows.push(vec![0.0; 32]);
    rows.push((0..32).map(|i| if i == 7 { 3e38 } else { i as f32 }).collect());
    rows.push((0..32).map(|i| if i == 3 { f32::INFINITY } else { -(i as f32) }).collect());
    rows.push((0..32).map(|i| if i == 9 { f32::NAN } else { i as f32 * 0.3 }).collect());
    for x in &rows {
        let blank = crate::BlockQ8_0 { d: half::f16::ZERO, qs: [0; 32] };
        let mut want = vec![blank; x.len() / 32];
        crate::q8_0::quantize_row_q8_0_ref(x, &mut want);
        for isa in Isa::available() {
            let mut got = vec![blank; x.len() / 32];
            (kernels(isa).quantize_q8_0)(x, &mut got);
            for (g, w) in got.iter().zip(&want) {
                checked += 1;
                assert!(g.d.to_bits() == w.d.to_bits() && g.qs == w.qs, "{isa:?} quantize_q8_0 {x:?}: {g:?} vs {w:?}");
            }
        }
    }
    checked
}

/// Every tier's SwiGLU activation: equal to the twin to the bit, and within 1e-6 (relative, plus 1e-30) of
/// `x · u / (1 + e^(−x))` in f64, from −100 (where the exp underflows) to 100, over lengths around the vectors.
pub fn silu_matches_ref() -> usize {
    let mut checked = 0;
    let mut rng = Rng(11);
    for len in [1, 7, 16, 17, 64, 1000] {
        let g: Vec<f32> = (0..len).map(|i| rng.f32() * if i % 5 == 0 { 100.0 } else { 6.0 }).collect();
        let u: Vec<f32> = (0..len).map(|_| rng.f32()).collect();
        let mut want = g.clone();
        crate::act::silu_mul_ref(&mut want, &u);
        for ((w, x), u) in want.iter().zip(&g).zip(&u) {
            let (x, u) = (*x as f64, *u as f64);
            let exact = x * u / (1.0 + (-x).exp());
            checked += 1;
            assert!((*w as f64 - exact).abs() <= 1e-6 * exact.abs() + 1e-30, "silu({x})·{u}: {w} vs {exact}");
        }
        for isa in Isa::available() {
            let mut got = g.clone();
            (kernels(isa).silu_mul)(&mut got, &u);
            checked += 1;
            assert!(
                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa:?} silu len={len} differs from the twin"
            );
        }
    }
    checked
}
