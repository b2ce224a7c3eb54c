//! The decoder's causal grouped-query attention of a chunk of `n` tokens (queries at positions `pos0..pos0 + n`)
//! over the KV cache of one layer: a query at position `p` sees every filled slot holding a position `≤ p` (its
//! own included), softmax in f32 with scale `head_dim^−½`.
//!
//! - Decode (`n = 1`), [`attend_rows`]: per query head, the scores over the layer's strided f16 rows in one
//!   `dots_f16` call, a softmax, and the weighted sum in one `axpys_f16` call (a call per slot on an f32 cache, or
//!   for a token that must not see every slot). Bound by reading the cache: `2 · slots · kv_dim` f16 per layer,
//!   once per query head (4.5 ms a layer at 4168 slots for Pixtral-12B on 2 cores).
//! - Prefill (`n > 1`), [`attend_tiled`]: flash-attention style (Dao et al. 2022) through the f32 micro-kernel
//!   ([`pixtral_quant::sgemm`]). The layer's keys and values are widened to f32 once per call, per KV head and
//!   block of [`KEYS`] slots (keys packed for the micro-kernel, values as rows), shared by every task. A task
//!   is one KV head and a tile of queries: its [`COLS`] columns are tokens × the query heads of the group (GQA:
//!   the 4 heads of a Pixtral KV head share each loaded key/value block). Per key block: `S = K · Qᵀ` (keys ×
//!   columns), masked scores set to −∞, an online softmax down the columns
//!   ([`pixtral_quant::softmax::softmax_online_generic`]: running max and sum; earlier sums rescaled by
//!   `alpha`), then `O (+)= Sᵀ · V`. Scratch per task: a `KEYS × COLS` score tile (128 KB, L2) and its packed
//!   transpose, whatever the context length. Cost: `4 · n · keys · head_dim` flops per query head; causal:
//!   a tile reads only the slots up to its last position when the cache holds positions in slot order.
//!
//! The two agree within float rounding (the exp is [`pixtral_quant::softmax::exp_neg`], relative error < 2e-7,
//! against libm's; sums in another order): tested to 2e-5 of the values' range on f16 and f32 caches, in order
//! and after a ring cache wrapped. Every output element is computed by one task in a fixed order: results are
//! the same bits for any thread count.

use std::cell::RefCell;
use std::sync::Mutex;

use pixtral_quant::sgemm::{aligned, pack_a, pack_a_strided, sgemm_packed, Sgemm, B};
use pixtral_quant::softmax::Running;

use super::kv_cache::{KvCache, Row};
use crate::ops::{for_each_chunk, serial};

/// Query columns per task (tokens × the query heads of one KV head): 16 tokens of Pixtral's groups of 4.
pub const COLS: usize = 64;
/// Keys per block, rounded down to whole groups of the micro-kernel's rows: a `KEYS × COLS` score tile is 128 KB.
pub const KEYS: usize = 512;

/// The heads of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub n_heads: usize,
    pub n_heads_kv: usize,
    pub head_dim: usize,
}

impl Heads {
    /// Query heads per KV head.
    fn group(&self) -> usize {
        self.n_heads / self.n_heads_kv
    }
}

/// [`attend_tiled`]'s scratch, kept in the decoder state: the layer's keys and values in f32, per KV head and key
/// block (`2 · KEYS · head_dim` f32 each; 52 MB at 6400 slots for Pixtral-12B), the output per KV head before it
/// is interleaved into the token rows, and one [`Tile`] per worker thread. All of it is sized before the parallel
/// part, so how tasks land on threads never changes what is allocated.
#[derive(Default)]
pub struct AttnScratch {
    blocks: Vec<f32>,
    out: Vec<f32>,
    tiles: Vec<Mutex<Tile>>,
}

/// One worker's buffers: Qᵀ (head_dim × COLS), scores S (KEYS × COLS), packed Sᵀ (COLS × KEYS), a group of keys
/// being widened, and the online softmax's state.
struct Tile {
    qt: Vec<f32>,
    st: Vec<f32>,
    sp: Vec<f32>,
    rows: Vec<f32>,
    run: Running,
}

std::thread_local! {
    /// [`attend_rows`]'s scores of one (token, head): (slot, score), grown once per thread to the cache capacity.
    static SCORES: RefCell<Vec<(usize, f32)>> = const { RefCell::new(Vec::new()) };
    /// The same when every filled slot is visible: the scores, then the weights, in slot order.
    static DOTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Attention of `n` tokens' queries `q` (`(n, n_heads · head_dim)`, rotated) at positions `pos0..` over layer
/// `layer` of `kv` (which already holds their keys and values) into `out` (same shape): [`attend_rows`] for one
/// token, [`attend_tiled`] for more.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kv: &KvCache,
    layer: usize,
    h: Heads,
    q: &[f32],
    n: usize,
    pos0: usize,
    out: &mut [f32],
    s: &mut AttnScratch,
) {
    if n == 1 {
        attend_rows(kv, layer, h, q, pos0, out)
    } else {
        attend_tiled(kv, layer, h, q, n, pos0, out, s)
    }
}

/// Per (token, query head), in parallel: a dot product with every visible key, the softmax (libm `exp`), and the
/// values' weighted sum. The reference for [`attend_tiled`], and decode's path: there (the newest token of an f16
/// cache sees every filled slot) one `dots_f16` and one `axpys_f16` call cover a head's rows, the same arithmetic
/// as a call per row.
pub fn attend_rows(kv: &KvCache, layer: usize, h: Heads, q: &[f32], pos0: usize, out: &mut [f32]) {
    let (hd, group, qd) = (h.head_dim, h.group(), h.n_heads * h.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    let kern = pixtral_quant::kernels::selected();
    for_each_chunk(out, hd, |i, out| {
        let (t, head) = (i / h.n_heads, i % h.n_heads);
        let p = pos0 + t;
        let kvh = head / group;
        let qv = &q[t * qd + head * hd..t * qd + (head + 1) * hd];
        if let (true, Row::F16(k), Row::F16(v)) = (p + 1 >= kv.next_pos, kv.k_layer(layer), kv.v_layer(layer)) {
            // every filled slot is visible: the head's rows of the layer, one call each way
            let (off, stride) = (2 * kvh * hd, k.len() / kv.capacity); // bytes
            return DOTS.with(|d| {
                let mut w = d.borrow_mut();
                w.reserve(kv.capacity); // once per thread: no growth while the context fills
                w.clear();
                w.resize(kv.n_filled, 0.0);
                (kern.dots_f16)(&k[off..], stride, qv, &mut w);
                w.iter_mut().for_each(|x| *x *= scale);
                let max = w.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
                let mut sum = 0f32;
                for x in w.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                w.iter_mut().for_each(|x| *x /= sum);
                out.fill(0.0);
                (kern.axpys_f16)(&v[off..], stride, &w, out);
            });
        }
        SCORES.with(|sc| {
            let mut sc = sc.borrow_mut();
            sc.clear();
            sc.reserve(kv.capacity); // once per thread: no growth while the context fills
            for slot in 0..kv.n_filled {
                if kv.pos_of(slot) <= p {
                    let dot = kv.k_at(layer, slot).slice(kvh * hd..(kvh + 1) * hd).dot(qv);
                    sc.push((slot, dot * scale));
                }
            }
            let max = sc.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1));
            let mut sum = 0f32;
            for x in sc.iter_mut() {
                x.1 = (x.1 - max).exp();
                sum += x.1;
            }
            out.fill(0.0);
            for &(slot, p) in sc.iter() {
                kv.v_at(layer, slot).slice(kvh * hd..(kvh + 1) * hd).axpy(p / sum, out);
            }
        });
    });
}

/// Flash-attention-style prefill (see the module notes); same arguments as [`attend`].
#[allow(clippy::too_many_arguments)]
pub fn attend_tiled(
    kv: &KvCache,
    layer: usize,
    h: Heads,
    q: &[f32],
    n: usize,
    pos0: usize,
    out: &mut [f32],
    s: &mut AttnScratch,
) {
    let kern = pixtral_quant::kernels::selected();
    let sg = kern.sgemm.unwrap_or(Sgemm::REF);
    let (hd, nkv, group, mr) = (h.head_dim, h.n_heads_kv, h.group(), sg.mr);
    let qd = h.n_heads * hd;
    let scale = 1.0 / (hd as f32).sqrt();
    let slots = kv.n_filled;
    let kb_max = (KEYS / mr).max(1) * mr; // whole row groups, so a block's packed keys start a group
    let nblk = slots.div_ceil(kb_max);

    // ---- one scratch tile per worker, sized here ----
    let tpt = (COLS / group).max(1); // tokens per tile
    let c_ld = tpt * group; // columns of a full tile: the row stride of Qᵀ and S
    let threads = if serial() { 1 } else { rayon::current_num_threads() };
    if s.tiles.len() < threads {
        s.tiles.resize_with(threads, || {
            let v = Vec::new;
            Mutex::new(Tile { qt: v(), st: v(), sp: v(), rows: v(), run: Running::new(0) })
        });
    }
    for t in &mut s.tiles {
        let t = t.get_mut().unwrap_or_else(|e| e.into_inner());
        // + 16: room for `aligned` to start on a cache line without growing
        for (v, len) in [
            (&mut t.qt, hd * c_ld),
            (&mut t.st, kb_max * c_ld),
            (&mut t.sp, c_ld.div_ceil(mr) * mr * kb_max),
            (&mut t.rows, mr * hd),
        ] {
            v.resize(v.len().max(len + 16), 0.0);
        }
        t.run.reset(c_ld);
    }
    let tiles = &s.tiles;
    // this worker's tile (uncontended: one task at a time per thread)
    let tile = || {
        let i = rayon::current_thread_index().unwrap_or(0).min(tiles.len() - 1);
        tiles[i].lock().unwrap_or_else(|e| e.into_inner())
    };

    // ---- keys and values of every (KV head, key block) in f32: [keys packed (KEYS, head_dim) | values rows] ----
    let chunk = 2 * kb_max * hd;
    let blocks = aligned(&mut s.blocks, nkv * nblk * chunk);
    for_each_chunk(blocks, chunk, |i, blk| {
        let (kvh, k0) = (i / nblk, (i % nblk) * kb_max);
        let kb = kb_max.min(slots - k0);
        let (kp, vb) = blk.split_at_mut(kb_max * hd);
        let cols = kvh * hd..(kvh + 1) * hd;
        for (r, v) in vb.chunks_exact_mut(hd).take(kb).enumerate() {
            kv.v_at(layer, k0 + r).slice(cols.clone()).widen(v);
        }
        // keys: one group of mr rows at a time widened, then packed p-major
        let mut t = tile();
        let rows = &mut t.rows[..mr * hd];
        for g in 0..kb.div_ceil(mr) {
            let m = mr.min(kb - g * mr);
            for (r, k) in rows.chunks_exact_mut(hd).take(m).enumerate() {
                kv.k_at(layer, k0 + g * mr + r).slice(cols.clone()).widen(k);
            }
            pack_a(mr, m, hd, rows, hd, &mut kp[g * mr * hd..]);
        }
    });
    let blocks = &*blocks;

    // ---- tasks: (KV head, tile of tokens), each writing its (tokens, group · head_dim) piece of `s.out` ----
    let ntile = n.div_ceil(tpt);
    let piece = tpt * group * hd;
    let in_order = kv.in_order();
    let ob = &mut s.out;
    ob.resize(nkv * ntile * piece, 0.0);
    for_each_chunk(&mut ob[..], piece, |i, o| {
        let (kvh, t0) = (i / ntile, (i % ntile) * tpt);
        let m = tpt.min(n - t0);
        let cols = m * group;
        let (pmin, pmax) = (pos0 + t0, pos0 + t0 + m - 1);
        // in slot order, slots past the tile's last position hold nothing it may see
        let kend = if in_order { (pmax + 1).min(slots) } else { slots };
        {
            let mut t = tile();
            let Tile { qt, st, sp, run, .. } = &mut *t;
            let qt = aligned(qt, hd * c_ld);
            let st = aligned(st, kb_max * c_ld);
            let sp = aligned(sp, cols.div_ceil(mr) * mr * kb_max);
            // Qᵀ: column c = token c / group, query head kvh · group + c % group
            for (c, qcol) in (0..cols).map(|c| (c, (t0 + c / group) * qd + (kvh * group + c % group) * hd)) {
                for (d, x) in q[qcol..qcol + hd].iter().enumerate() {
                    qt[d * c_ld + c] = *x;
                }
            }
            run.reset(cols);
            for b in 0..kend.div_ceil(kb_max) {
                let k0 = b * kb_max;
                let kb = kb_max.min(kend - k0);
                let (kp, vb) = blocks[(kvh * nblk + b) * chunk..][..chunk].split_at(kb_max * hd);
                sgemm_packed(&sg, kb, cols, hd, kp, B::Rows { b: qt, ldb: c_ld }, st, c_ld, false);
                for r in 0..kb {
                    let p = kv.pos_of(k0 + r);
                    if p > pmin {
                        for (c, x) in st[r * c_ld..r * c_ld + cols].iter_mut().enumerate() {
                            if p > pmin + c / group {
                                *x = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                (kern.softmax_online)(st, kb, cols, c_ld, scale, run);
                pack_a_strided(mr, cols, kb, st, (1, c_ld), sp);
                if b > 0 {
                    for (row, a) in o.chunks_exact_mut(hd).zip(&run.alpha) {
                        row.iter_mut().for_each(|x| *x *= a);
                    }
                }
                sgemm_packed(&sg, cols, hd, kb, sp, B::Rows { b: vb, ldb: hd }, o, hd, b > 0);
            }
            for (row, sum) in o.chunks_exact_mut(hd).zip(&run.sum) {
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }
    });

    // ---- interleave: token t's heads of KV head kvh are one run of group · head_dim ----
    let run = group * hd;
    for (t, row) in out[..n * qd].chunks_exact_mut(qd).enumerate() {
        for (kvh, dst) in row.chunks_exact_mut(run).enumerate() {
            dst.copy_from_slice(&ob[kvh * ntile * piece + t * run..][..run]);
        }
    }
}
