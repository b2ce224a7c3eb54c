//! The decoder's prefill attention (flash-style tiles through the f32 micro-kernel) against the per-row
//! reference (dot products, libm softmax, weighted sums), on caches in slot order and after a ring cache wrapped,
//! f16 and f32, shapes around the tile and key-block edges; and the same bits for any thread count.

use pixtral::model::attention::{attend_rows, attend_tiled, AttnScratch, Heads, COLS, KEYS};
use pixtral::model::kv_cache::{KvCache, KvType};
use pixtral::quant::selftest::Rng;

const LAYERS: usize = 2;

/// A cache of `history + n` tokens with random keys and values in [−1, 1] (ring mode when `keep` is given), and
/// the chunk's queries (`n` tokens, scaled so the softmax is peaked as a trained model's).
fn filled(h: Heads, ty: KvType, capacity: usize, keep: Option<usize>, total: usize, n: usize) -> (KvCache, Vec<f32>) {
    let kvd = h.n_heads_kv * h.head_dim;
    let mut rng = Rng(total as u64 * 31 + n as u64);
    let mut kv = KvCache::new(LAYERS, kvd, capacity, keep, ty);
    for _ in 0..total {
        let slot = kv.reserve().expect("room");
        for l in 0..LAYERS {
            let k: Vec<f32> = (0..kvd).map(|_| rng.f32()).collect();
            let v: Vec<f32> = (0..kvd).map(|_| rng.f32()).collect();
            kv.write(l, slot, &k, &v);
        }
    }
    let q = (0..n * h.n_heads * h.head_dim).map(|_| 4.0 * rng.f32()).collect();
    (kv, q)
}

fn tiled(kv: &KvCache, h: Heads, q: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; q.len()];
    attend_tiled(kv, 1, h, q, n, kv.next_pos - n, &mut out, &mut AttnScratch::default());
    out
}

#[test]
fn tiled_prefill_attention_matches_the_row_reference() {
    let pixtral = Heads { n_heads: 8, n_heads_kv: 2, head_dim: 128 }; // Pixtral's group of 4 and head_dim
    let mha = Heads { n_heads: 3, n_heads_kv: 3, head_dim: 16 }; // group 1: 64 tokens a tile
    let odd = Heads { n_heads: 6, n_heads_kv: 2, head_dim: 20 }; // group 3: 21 tokens, 63 columns a tile
    let mut cases = 0;
    for ty in [KvType::F16, KvType::F32, KvType::Q8_0] {
        for (h, capacity, keep, total, n) in [
            (pixtral, 64, None, 37, 37),    // a first prompt, less than one tile of 16 tokens … 3 tiles
            (pixtral, 2048, None, 600, 70), // history crossing a key block, a partial last tile
            (pixtral, 2048, None, KEYS + 1, 2), // one slot into a second key block
            (mha, 256, None, 200, COLS + 1), // a tile of 64 tokens and one more
            (odd, 1200, None, 1100, 45),    // three key blocks, tiles of 21 tokens
            (odd, 300, Some(4), 700, 20),   // a ring cache that wrapped: slots out of position order
            (pixtral, 600, Some(2), 1500, 16), // …with the chunk itself wrapping around the end
        ] {
            if !ty.fits(h.head_dim) {
                continue; // Q8_0 rows are whole blocks of 32
            }
            let (kv, q) = filled(h, ty, capacity, keep, total, n);
            assert_eq!(kv.in_order(), keep.is_none() || total <= capacity);
            let mut want = vec![0f32; q.len()];
            attend_rows(&kv, 1, h, &q, kv.next_pos - n, &mut want);
            let got = tiled(&kv, h, &q, n);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // values in [-1, 1]: outputs too; the two differ by exp's and the sums' rounding only
                assert!((g - w).abs() <= 2e-5, "{ty:?} {h:?} cap {capacity} total {total} n {n} [{i}]: {g} vs {w}");
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 14 + 4); // Q8_0: the four cases with Pixtral's head_dim
}

#[test]
fn tiled_prefill_attention_gives_the_same_bits_for_any_thread_count() {
    let h = Heads { n_heads: 8, n_heads_kv: 2, head_dim: 128 };
    let (kv, q) = filled(h, KvType::F16, 1024, None, 700, 50);
    let runs: Vec<Vec<u32>> = [1, 2, 3, 5]
        .into_iter()
        .map(|threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| tiled(&kv, h, &q, 50)).into_iter().map(f32::to_bits).collect()
        })
        .collect();
    assert!(runs.iter().all(|r| r == &runs[0]));
}
