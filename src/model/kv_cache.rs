//! KV cache: per layer, `capacity` slots of `n_heads_kv · head_dim` keys and values, stored as f16 (default:
//! half the memory; logits move by ~5e-4 of their range on the tiny model), f32 (exact to the reference), or Q8_0
//! (ggml's block layout, as llama.cpp's `--cache-type-k/v q8_0`: 34 bytes per 32 values, 53 % of f16; each value
//! within half a step `amax/254` of its block, logits ~5e-3 of their range on the tiny model).
//!
//! Keys are stored rotated for their absolute position, so attention needs no re-rotation when slots are
//! reused (RoPE scores depend on position differences only). Two policies when full:
//! - default: refuse — the session stops generating with finish reason "length";
//! - ring (`--context-shift`): keep the first `keep` slots (the attention sink: BOS and the system part) and
//!   overwrite the oldest of the others. A token then attends to the sink plus the last `capacity − keep`
//!   tokens, itself included: exactly a sliding window (tested against an f64 reference).
//!
//! Slot reservation is transactional: [`KvCache::begin`] snapshots the bookkeeping, and every slot overwritten
//! afterwards is saved first, so [`KvCache::rollback`] restores the cache exactly (a failed or cancelled
//! decode leaves no trace).

use half::f16;
use pixtral_quant::BlockQ8_0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
    /// ggml's Q8_0 blocks; rows (a head's part of a slot) must be whole blocks of 32
    Q8_0,
}

impl KvType {
    /// Bytes of `n` values (`n` a multiple of 32 for Q8_0).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            KvType::F16 => 2 * n,
            KvType::F32 => 4 * n,
            KvType::Q8_0 => n / 32 * BlockQ8_0::BYTES,
        }
    }

    /// Whether rows of `n` values (a KV head: `head_dim`) can be stored.
    pub fn fits(self, n: usize) -> bool {
        self != KvType::Q8_0 || n.is_multiple_of(32)
    }
}

/// f16 values are kept as little-endian bytes, the layout the quant kernels read (`dot_f16`, `axpy_f16`); Q8_0 as
/// ggml's 34-byte blocks.
enum Store {
    F16(Vec<u8>),
    F32(Vec<f32>),
    Q8_0(Vec<u8>),
}

/// One cached row (or a head's part of it).
#[derive(Clone, Copy)]
pub enum Row<'a> {
    /// f16 values as little-endian bytes
    F16(&'a [u8]),
    F32(&'a [f32]),
    /// Q8_0 blocks (34 bytes per 32 values)
    Q8_0(&'a [u8]),
}

/// The blocks of a Q8_0 row as (scale, 32 values).
fn q8_blocks(x: &[u8]) -> impl Iterator<Item = (f32, &[u8])> {
    x.chunks_exact(BlockQ8_0::BYTES).map(|b| (f16::from_le_bytes([b[0], b[1]]).to_f32(), &b[2..]))
}

impl<'a> Row<'a> {
    /// Elements `r` of the row.
    pub fn slice(self, r: std::ops::Range<usize>) -> Row<'a> {
        match self {
            Row::F16(x) => Row::F16(&x[2 * r.start..2 * r.end]),
            Row::F32(x) => Row::F32(&x[r]),
            Row::Q8_0(x) => {
                debug_assert!(
                    r.start.is_multiple_of(32) && r.end.is_multiple_of(32),
                    "Q8_0 rows are sliced at block edges"
                );
                Row::Q8_0(&x[r.start / 32 * BlockQ8_0::BYTES..r.end / 32 * BlockQ8_0::BYTES])
            }
        }
    }

    /// `row · q`, with the selected tier's kernels (F16C / NEON widening for f16).
    pub fn dot(self, q: &[f32]) -> f32 {
        match self {
            Row::F16(x) => (pixtral_quant::kernels::selected().dot_f16)(x, q),
            Row::F32(x) => crate::ops::dot_f32(q, x),
            // per block: d · Σ q_i·x_i (the query stays f32, as llama.cpp's flash attention on a Q8_0 cache
            // converts it to the cache type: close, not equal)
            Row::Q8_0(x) => q8_blocks(x)
                .zip(q.chunks_exact(32))
                .map(|((d, qs), q)| d * qs.iter().zip(q).map(|(&v, q)| v as i8 as f32 * q).sum::<f32>())
                .sum(),
        }
    }

    /// `out += w · row`
    pub fn axpy(self, w: f32, out: &mut [f32]) {
        match self {
            Row::F16(x) => (pixtral_quant::kernels::selected().axpy_f16)(w, x, out),
            Row::F32(x) => out.iter_mut().zip(x).for_each(|(o, v)| *o += w * v),
            Row::Q8_0(x) => {
                for ((d, qs), out) in q8_blocks(x).zip(out.chunks_exact_mut(32)) {
                    let wd = w * d;
                    out.iter_mut().zip(qs).for_each(|(o, &v)| *o += wd * v as i8 as f32);
                }
            }
        }
    }

    /// The row in f32 (exact), into `out` (its length).
    pub fn widen(self, out: &mut [f32]) {
        match self {
            Row::F16(x) => (pixtral_quant::kernels::selected().widen_f16)(x, out),
            Row::F32(x) => out.copy_from_slice(x),
            Row::Q8_0(x) => {
                for ((d, qs), out) in q8_blocks(x).zip(out.chunks_exact_mut(32)) {
                    out.iter_mut().zip(qs).for_each(|(o, &v)| *o = v as i8 as f32 * d);
                }
            }
        }
    }

    fn to_vec(self, out: &mut Vec<f32>) {
        match self {
            Row::F16(x) => out.extend(x.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
            Row::F32(x) => out.extend_from_slice(x),
            Row::Q8_0(x) => {
                let at = out.len();
                out.resize(at + x.len() / BlockQ8_0::BYTES * 32, 0.0);
                self.widen(&mut out[at..]);
            }
        }
    }
}

impl Store {
    fn new(ty: KvType, n: usize) -> Store {
        match ty {
            KvType::F16 => Store::F16(vec![0; 2 * n]),
            KvType::F32 => Store::F32(vec![0.0; n]),
            KvType::Q8_0 => Store::Q8_0(vec![0; KvType::Q8_0.row_bytes(n)]),
        }
    }

    fn row(&self, o: usize, n: usize) -> Row<'_> {
        match self {
            Store::F16(x) => Row::F16(&x[2 * o..2 * (o + n)]),
            Store::F32(x) => Row::F32(&x[o..o + n]),
            Store::Q8_0(x) => Row::Q8_0(&x[o / 32 * BlockQ8_0::BYTES..(o + n) / 32 * BlockQ8_0::BYTES]),
        }
    }

    fn set(&mut self, o: usize, src: &[f32]) {
        match self {
            Store::F16(x) => x[2 * o..2 * (o + src.len())]
                .chunks_exact_mut(2)
                .zip(src)
                .for_each(|(d, s)| d.copy_from_slice(&f16::from_f32(*s).to_le_bytes())),
            Store::F32(x) => x[o..o + src.len()].copy_from_slice(src),
            // ggml's reference rounding; re-encoding a decoded block gives it back exactly (rollback relies on it)
            Store::Q8_0(x) => {
                let dst = &mut x[o / 32 * BlockQ8_0::BYTES..(o + src.len()) / 32 * BlockQ8_0::BYTES];
                for (s, d) in src.chunks_exact(32).zip(dst.chunks_exact_mut(BlockQ8_0::BYTES)) {
                    BlockQ8_0::quantize_ref(s.try_into().expect("32 values")).write_to(d);
                }
            }
        }
    }
}

pub struct KvCache {
    pub capacity: usize,
    n_layers: usize,
    kv_dim: usize,
    k: Store, // (layers, capacity, kv_dim)
    v: Store, // (layers, capacity, kv_dim)
    /// absolute position held by each slot
    pos: Vec<usize>,
    /// slots in use (they fill in order; once full, all are)
    pub n_filled: usize,
    /// absolute position of the next token
    pub next_pos: usize,
    /// ring mode: number of sink slots kept
    keep: Option<usize>,
    /// ring mode: next slot to overwrite, in keep..capacity
    head: usize,
    txn: Option<Txn>,
}

struct Txn {
    n_filled: usize,
    next_pos: usize,
    head: usize,
    /// (slot, old pos, old k rows of every layer, old v rows), widened to f32 (exact for f16)
    saved: Vec<(usize, usize, Vec<f32>, Vec<f32>)>,
}

#[derive(Debug, PartialEq)]
pub struct Full;

impl KvCache {
    /// `keep`: `Some(n)` for ring mode with `n` sink slots (`n < capacity`).
    pub fn new(n_layers: usize, kv_dim: usize, capacity: usize, keep: Option<usize>, ty: KvType) -> KvCache {
        let keep = keep.map(|k| k.min(capacity.saturating_sub(1)));
        KvCache {
            capacity,
            n_layers,
            kv_dim,
            k: Store::new(ty, n_layers * capacity * kv_dim),
            v: Store::new(ty, n_layers * capacity * kv_dim),
            pos: vec![0; capacity],
            n_filled: 0,
            next_pos: 0,
            keep,
            head: keep.unwrap_or(0),
            txn: None,
        }
    }

    /// Bytes of the cache for a config: what `--ctx-size` costs.
    /// Bytes of the keys and values (saturating: an absurd capacity gives `usize::MAX`, never an overflow).
    pub fn bytes_for(n_layers: usize, kv_dim: usize, capacity: usize, ty: KvType) -> usize {
        (2 * n_layers * ty.row_bytes(kv_dim)).saturating_mul(capacity)
    }

    pub fn is_ring(&self) -> bool {
        self.keep.is_some()
    }

    /// Tokens that fit before the cache is full (ring mode: before it starts overwriting).
    pub fn free(&self) -> usize {
        self.capacity - self.n_filled
    }

    pub fn begin(&mut self) {
        self.txn = Some(Txn { n_filled: self.n_filled, next_pos: self.next_pos, head: self.head, saved: Vec::new() });
    }

    pub fn commit(&mut self) {
        self.txn = None;
    }

    pub fn rollback(&mut self) {
        let Some(t) = self.txn.take() else { return };
        for (slot, pos, k, v) in t.saved.into_iter().rev() {
            self.pos[slot] = pos;
            for l in 0..self.n_layers {
                let o = self.off(l, slot);
                self.k.set(o, &k[l * self.kv_dim..(l + 1) * self.kv_dim]);
                self.v.set(o, &v[l * self.kv_dim..(l + 1) * self.kv_dim]);
            }
        }
        self.n_filled = t.n_filled;
        self.next_pos = t.next_pos;
        self.head = t.head;
    }

    fn off(&self, layer: usize, slot: usize) -> usize {
        (layer * self.capacity + slot) * self.kv_dim
    }

    /// Take a slot for the next token (position `next_pos`), evicting in ring mode.
    pub fn reserve(&mut self) -> Result<usize, Full> {
        let slot = if self.n_filled < self.capacity {
            self.n_filled += 1;
            self.n_filled - 1
        } else if let Some(keep) = self.keep {
            let slot = self.head;
            self.head = if self.head + 1 == self.capacity { keep } else { self.head + 1 };
            if let Some(t) = self.txn.as_mut() {
                if slot < t.n_filled && !t.saved.iter().any(|s| s.0 == slot) {
                    let (mut k, mut v) = (Vec::with_capacity(self.n_layers * self.kv_dim), Vec::new());
                    for l in 0..self.n_layers {
                        let o = (l * self.capacity + slot) * self.kv_dim;
                        self.k.row(o, self.kv_dim).to_vec(&mut k);
                        self.v.row(o, self.kv_dim).to_vec(&mut v);
                    }
                    t.saved.push((slot, self.pos[slot], k, v));
                }
            }
            slot
        } else {
            return Err(Full);
        };
        self.pos[slot] = self.next_pos;
        self.next_pos += 1;
        Ok(slot)
    }

    pub fn write(&mut self, layer: usize, slot: usize, k: &[f32], v: &[f32]) {
        let o = self.off(layer, slot);
        self.k.set(o, k);
        self.v.set(o, v);
    }

    /// Keys of every slot of layer `layer`, `(capacity, kv_dim)` row-major (the filled ones first).
    pub fn k_layer(&self, layer: usize) -> Row<'_> {
        self.k.row(self.off(layer, 0), self.capacity * self.kv_dim)
    }

    pub fn v_layer(&self, layer: usize) -> Row<'_> {
        self.v.row(self.off(layer, 0), self.capacity * self.kv_dim)
    }

    /// Keys of slot `slot` in layer `layer`, all kv heads.
    pub fn k_at(&self, layer: usize, slot: usize) -> Row<'_> {
        self.k.row(self.off(layer, slot), self.kv_dim)
    }

    pub fn v_at(&self, layer: usize, slot: usize) -> Row<'_> {
        self.v.row(self.off(layer, slot), self.kv_dim)
    }

    /// Slot `i` holds position `i` for every filled slot: nothing was evicted (a ring cache that never wrapped).
    pub fn in_order(&self) -> bool {
        self.next_pos == self.n_filled
    }

    pub fn pos_of(&self, slot: usize) -> usize {
        self.pos[slot]
    }

    /// Keep the first `n` positions and forget the rest (a conversation rewound to a common prefix).
    /// Possible while nothing was evicted (positions 0..next_pos sit in slots 0..next_pos); `false` after a
    /// ring cache wrapped, when the caller must start over.
    pub fn truncate(&mut self, n: usize) -> bool {
        if n > self.next_pos || self.next_pos != self.n_filled {
            return false;
        }
        self.n_filled = n;
        self.next_pos = n;
        self.head = self.keep.unwrap_or(0);
        self.txn = None;
        true
    }

    /// Forget everything (a new conversation).
    pub fn clear(&mut self) {
        self.n_filled = 0;
        self.next_pos = 0;
        self.head = self.keep.unwrap_or(0);
        self.txn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(kv: &KvCache) -> Vec<f32> {
        let mut out = Vec::new();
        for l in 0..kv.n_layers {
            for s in 0..kv.capacity {
                kv.k_at(l, s).to_vec(&mut out);
                kv.v_at(l, s).to_vec(&mut out);
            }
        }
        out
    }

    /// A ring cache of every type: a transaction that overwrote slots rolls back to the same values, to the bit
    /// (Q8_0: re-encoding a decoded block gives the block back), and Q8_0 holds each value within half a step.
    #[test]
    fn rollback_restores_every_type_exactly_and_q8_0_is_within_half_a_step() {
        let (layers, dim, cap) = (2, 64, 8);
        let val = |l: usize, p: usize, i: usize| ((l * 7 + p * 13 + i * 5) % 23) as f32 * 0.37 - 4.0 + p as f32;
        for ty in [KvType::F16, KvType::F32, KvType::Q8_0] {
            let mut kv = KvCache::new(layers, dim, cap, Some(2), ty);
            let row = |l, p| (0..dim).map(|i| val(l, p, i)).collect::<Vec<f32>>();
            for p in 0..11 {
                let slot = kv.reserve().unwrap();
                for l in 0..layers {
                    kv.write(l, slot, &row(l, p), &row(l + 5, p));
                }
            }
            if ty == KvType::Q8_0 {
                // slot 2 holds position 8 (two sink slots, then the ring wrapped once)
                let (mut got, want) = (vec![0f32; dim], row(1, 8));
                kv.k_at(1, 2).widen(&mut got);
                for blk in 0..dim / 32 {
                    let amax = want[32 * blk..32 * blk + 32].iter().fold(0f32, |m, x| m.max(x.abs()));
                    for i in 32 * blk..32 * blk + 32 {
                        assert!((got[i] - want[i]).abs() <= amax / 254.0 * 1.01, "{i}: {} vs {}", got[i], want[i]);
                    }
                }
            }
            let before = rows(&kv);
            kv.begin();
            for p in 11..15 {
                let slot = kv.reserve().unwrap();
                for l in 0..layers {
                    kv.write(l, slot, &row(l, p + 100), &row(l, p + 200));
                }
            }
            assert_ne!(rows(&kv), before, "{ty:?}: the transaction wrote nothing");
            kv.rollback();
            let after = rows(&kv);
            assert!(after.iter().zip(&before).all(|(a, b)| a.to_bits() == b.to_bits()), "{ty:?}: rollback not exact");
        }
    }
}
