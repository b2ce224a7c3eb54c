//! KV cache: per layer, `capacity` slots of `n_heads_kv · head_dim` keys and values, stored as f16 (default:
//! half the memory; logits move by ~5e-4 of their range on the tiny model) or f32 (exact to the reference).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvType {
    F16,
    F32,
}

impl KvType {
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
}

/// f16 values are kept as little-endian bytes, the layout the quant kernels read (`dot_f16`, `axpy_f16`).
enum Store {
    F16(Vec<u8>),
    F32(Vec<f32>),
}

/// One cached row (or a head's part of it).
#[derive(Clone, Copy)]
pub enum Row<'a> {
    /// f16 values as little-endian bytes
    F16(&'a [u8]),
    F32(&'a [f32]),
}

impl<'a> Row<'a> {
    /// Elements `r` of the row.
    pub fn slice(self, r: std::ops::Range<usize>) -> Row<'a> {
        match self {
            Row::F16(x) => Row::F16(&x[2 * r.start..2 * r.end]),
            Row::F32(x) => Row::F32(&x[r]),
        }
    }

    /// `row · q`, with the selected tier's kernels (F16C / NEON widening for f16).
    pub fn dot(self, q: &[f32]) -> f32 {
        match self {
            Row::F16(x) => (pixtral_quant::kernels::selected().dot_f16)(x, q),
            Row::F32(x) => crate::ops::dot_f32(q, x),
        }
    }

    /// `out += w · row`
    pub fn axpy(self, w: f32, out: &mut [f32]) {
        match self {
            Row::F16(x) => (pixtral_quant::kernels::selected().axpy_f16)(w, x, out),
            Row::F32(x) => out.iter_mut().zip(x).for_each(|(o, v)| *o += w * v),
        }
    }

    /// The row in f32 (exact), into `out` (its length).
    pub fn widen(self, out: &mut [f32]) {
        match self {
            Row::F16(x) => (pixtral_quant::kernels::selected().widen_f16)(x, out),
            Row::F32(x) => out.copy_from_slice(x),
        }
    }

    fn to_vec(self, out: &mut Vec<f32>) {
        match self {
            Row::F16(x) => out.extend(x.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
            Row::F32(x) => out.extend_from_slice(x),
        }
    }
}

impl Store {
    fn new(ty: KvType, n: usize) -> Store {
        match ty {
            KvType::F16 => Store::F16(vec![0; 2 * n]),
            KvType::F32 => Store::F32(vec![0.0; n]),
        }
    }

    fn row(&self, o: usize, n: usize) -> Row<'_> {
        match self {
            Store::F16(x) => Row::F16(&x[2 * o..2 * (o + n)]),
            Store::F32(x) => Row::F32(&x[o..o + n]),
        }
    }

    fn set(&mut self, o: usize, src: &[f32]) {
        match self {
            Store::F16(x) => x[2 * o..2 * (o + src.len())]
                .chunks_exact_mut(2)
                .zip(src)
                .for_each(|(d, s)| d.copy_from_slice(&f16::from_f32(*s).to_le_bytes())),
            Store::F32(x) => x[o..o + src.len()].copy_from_slice(src),
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
        (2 * n_layers * kv_dim * ty.bytes()).saturating_mul(capacity)
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
