//! The text model: a memory-mapped text GGUF (Mistral-Nemo decoder, `general.architecture = llama`), its config
//! ([`TextConfig`], read by [`TextConfig::from_gguf`]), its weights (views into the map, or the arena once re-laid
//! out), its tokenizer, and the forward pass. [`Model`] is immutable after `load` and `Sync`: any number of
//! [`crate::Session`]s on any threads can share one; each brings its [`DecoderState`] and [`KvCache`].
//!
//! Forward: one code path for prefill (a chunk of tokens as a matrix) and decode (a chunk of one). Per block:
//! RMSNorm → q, k, v → RoPE (interleaved pairs, θ from the file) → causal GQA attention over the KV cache
//! ([`super::attention`]) → o → residual → RMSNorm → SwiGLU `down(silu(gate x) · up x)` → residual. Then the final
//! RMSNorm and the output head.

use std::path::Path;

use pixtral_quant::GgmlType;

use super::attention::{attend, AttnScratch, Heads};
use super::kv_cache::KvCache;
use super::tokenizer::Tokenizer;
use super::{checked_tensor, dequantized, repack, Arena, Block, LoadOptions, Repacked};
use crate::error::{Error, Result};
use crate::gguf::config::TextConfig;
use crate::gguf::{keys, manifest, GgufFile};
use crate::ops::{matmul, rmsnorm, rope, rope_inv_freq, Mat, MatmulScratch, Weight};

pub struct TextWeights {
    pub token_embd: Mat,
    pub layers: Vec<Block>,
    pub output_norm: Vec<f32>,
    pub output: Mat,
}

pub struct Model {
    /// The mapped file (as on disk: R16 matrices live in `arena`).
    pub file: GgufFile,
    arena: Arena,
    pub cfg: TextConfig,
    pub weights: TextWeights,
    pub tokenizer: Tokenizer,
    /// the ggml type of most 2-D weights (`general.file_type` aside), for display
    pub weight_type: GgmlType,
    /// the weights re-laid out at load
    pub repacked: Repacked,
}

impl Model {
    /// The weights' name for display: the llama.cpp mix of `general.file_type` ("Q4_K_M", "IQ4_XS"), else the
    /// type of most 2-D weights.
    pub fn weights_label(&self) -> String {
        let h = &self.file.header;
        h.get_u32(crate::gguf::keys::GENERAL_FILE_TYPE)
            .ok()
            .and_then(crate::gguf::llama_ftype_name)
            .map_or_else(|| self.weight_type.name().to_string(), str::to_string)
    }

    /// Map a text GGUF (ours or llama.cpp's) and check it completely: config, every tensor's presence, shape
    /// and type, the tokenizer. Nothing large is allocated: weights stay in the map.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// [`Model::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        Self::from_file(GgufFile::open(path.as_ref())?, opts)
    }

    /// [`Model::load_with`] for a file already opened (its header read, e.g. to plan a request before the
    /// weights are touched).
    pub fn from_file(file: GgufFile, opts: &LoadOptions) -> Result<Model> {
        let h = &file.header;
        let cfg = TextConfig::from_gguf(h)?;
        let mat = |e: &manifest::Entry| -> Result<Mat> {
            let t = checked_tensor(h, &e.name, &e.ne())?;
            Ok(Mat::of(h, t, e.shape[0], e.shape[1]))
        };
        let vec = |e: &manifest::Entry| dequantized(&file, checked_tensor(h, &e.name, &e.ne())?);
        let entries = manifest::text_tensors(&cfg);
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).expect("manifest entry");
        let token_embd = mat(by_name("token_embd.weight"))?;
        // a tied head (no output.weight) reuses the embedding
        let output = if h.tensor("output.weight").is_some() { mat(by_name("output.weight"))? } else { token_embd };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let name = |p: &str| format!("blk.{l}.{p}.weight");
            layers.push(Block::load(&manifest::TEXT_BLOCK, name, |n| mat(by_name(n)), |n| vec(by_name(n)))?);
        }
        let mut weights = TextWeights { token_embd, output_norm: vec(by_name("output_norm.weight"))?, output, layers };
        let tokenizer = Tokenizer::from_gguf(h)?;
        if tokenizer.n_vocab() != cfg.vocab_size {
            return Err(Error::Model {
                what: keys::TOKENIZER_TOKENS.into(),
                msg: format!("{} tokens, vocab_size {}", tokenizer.n_vocab(), cfg.vocab_size),
            });
        }
        let weight_type = weights.layers.first().map(|l| l.w_up.ty).unwrap_or(token_embd.ty);
        // the embedding stays plain (rows are looked up by token); so does a head tied to it
        let tied = weights.output.start == weights.token_embd.start;
        let TextWeights { output, layers, .. } = &mut weights;
        let mut mats: Vec<&mut Mat> = layers.iter_mut().flat_map(Block::mats_mut).collect();
        if !tied {
            mats.push(output);
        }
        let (arena, repacked) = repack(&file, &mut mats, opts)?;
        Ok(Model { file, arena, cfg, weights, tokenizer, weight_type, repacked })
    }

    /// A weight matrix of this model with its bytes, for [`matmul`].
    pub fn view<'m>(&'m self, m: &'m Mat) -> Weight<'m> {
        self.arena.view(&self.file, m)
    }
}

/// Activations for chunks of up to `n_max` tokens, allocated once per session.
pub struct DecoderState {
    pub n_max: usize,
    x: Vec<f32>,          // (n, dim) residual stream
    xb: Vec<f32>,         // (n, dim) normed
    q: Vec<f32>,          // (n, n_heads · head_dim)
    k: Vec<f32>,          // (n, n_heads_kv · head_dim)
    v: Vec<f32>,          // (n, n_heads_kv · head_dim)
    att: Vec<f32>,        // (n, n_heads · head_dim) attention output
    o: Vec<f32>,          // (n, dim) projection / FFN output
    gate: Vec<f32>,       // (n, ffn)
    up: Vec<f32>,         // (n, ffn)
    pub logits: Vec<f32>, // (n, vocab) — only the rows asked for are written
    mm: MatmulScratch,
    attn: AttnScratch,
    inv_freq: Vec<f32>, // (head_dim / 2)
}

impl DecoderState {
    pub fn new(model: &Model, n_max: usize) -> DecoderState {
        let c = &model.cfg;
        let (qd, kvd) = (c.n_heads * c.head_dim, c.n_heads_kv * c.head_dim);
        DecoderState {
            n_max,
            x: vec![0.0; n_max * c.dim],
            xb: vec![0.0; n_max * c.dim],
            q: vec![0.0; n_max * qd],
            k: vec![0.0; n_max * kvd],
            v: vec![0.0; n_max * kvd],
            att: vec![0.0; n_max * qd],
            o: vec![0.0; n_max * c.dim],
            gate: vec![0.0; n_max * c.ffn_dim],
            up: vec![0.0; n_max * c.ffn_dim],
            logits: vec![0.0; n_max * c.vocab_size],
            mm: MatmulScratch::default(),
            attn: AttnScratch::default(),
            inv_freq: rope_inv_freq(c.rope_theta, c.head_dim),
        }
    }
}

/// Image features for the `[IMG]` tokens of a chunk: the token id and `(count, dim)` rows, used in order.
pub struct ImageRows<'a> {
    pub img_id: u32,
    pub rows: &'a [f32],
}

/// Run `tokens` (at most `n_max`), already given cache `slots` and positions `pos0..`, through the model;
/// write logits for every token (`all`) or the last one into `s.logits` rows `0..`. `[IMG]` tokens take the
/// next row of `img` instead of their embedding.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    model: &Model,
    s: &mut DecoderState,
    kv: &mut KvCache,
    tokens: &[u32],
    img: &ImageRows,
    slots: &[usize],
    pos0: usize,
    all: bool,
) {
    let mut seqs = [Seq { kv, tokens, img: ImageRows { img_id: img.img_id, rows: img.rows }, slots, pos0, all }];
    forward_batch(model, s, &mut seqs);
}

/// One sequence's part of a [`forward_batch`]: its KV cache, its tokens (already given cache `slots` and the
/// positions `pos0..`), the image rows for its `[IMG]` tokens, and whether it wants logits for every token.
pub struct Seq<'a> {
    pub kv: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub img: ImageRows<'a>,
    pub slots: &'a [usize],
    pub pos0: usize,
    pub all: bool,
}

/// Several sequences through the model in one pass over the weights (continuous batching: a server's decode
/// steps of every active stream, and a chunk of a new prompt, as one matrix). The token rows of all sequences
/// (at most `n_max` in all) go through every matmul together; RoPE, the KV writes and attention are per
/// sequence, against its own cache. Logits: per sequence in order, every token's row (`all`) or its last one,
/// packed from `s.logits` row 0. Decode is bound by reading the weights (7 GB a token at Pixtral-12B Q4_0), so
/// `k` streams in one pass cost little more than one.
pub fn forward_batch(model: &Model, s: &mut DecoderState, seqs: &mut [Seq]) {
    let c = &model.cfg;
    let w = &model.weights;
    let n: usize = seqs.iter().map(|q| q.tokens.len()).sum();
    debug_assert!(n <= s.n_max && seqs.iter().all(|q| q.tokens.len() == q.slots.len() && !q.tokens.is_empty()));
    let (dim, hd, qd, kvd) = (c.dim, c.head_dim, c.n_heads * c.head_dim, c.n_heads_kv * c.head_dim);

    // ---- token embeddings (one dequantized row each), image features at [IMG] positions ----
    let emb = model.view(&w.token_embd).bytes;
    let rb = w.token_embd.row_bytes();
    let mut t = 0;
    for q in seqs.iter() {
        let mut next_img = q.img.rows.chunks_exact(dim);
        for &id in q.tokens {
            let x = &mut s.x[t * dim..(t + 1) * dim];
            match if id == q.img.img_id { next_img.next() } else { None } {
                Some(row) => x.copy_from_slice(row),
                None => {
                    let row = &emb[id as usize * rb..(id as usize + 1) * rb];
                    pixtral_quant::dequantize_row_ref(w.token_embd.ty, row, x).expect("checked at load")
                }
            }
            t += 1;
        }
    }

    for (l, layer) in w.layers.iter().enumerate() {
        // ---- attention ----
        rmsnorm(&mut s.xb[..n * dim], &s.x[..n * dim], &layer.attn_norm, c.norm_eps);
        matmul(model.view(&layer.wq), &s.xb[..n * dim], n, &mut s.q[..n * qd], &mut s.mm);
        matmul(model.view(&layer.wk), &s.xb[..n * dim], n, &mut s.k[..n * kvd], &mut s.mm);
        matmul(model.view(&layer.wv), &s.xb[..n * dim], n, &mut s.v[..n * kvd], &mut s.mm);
        let heads = Heads { n_heads: c.n_heads, n_heads_kv: c.n_heads_kv, head_dim: hd };
        let mut t0 = 0;
        for q in seqs.iter_mut() {
            let m = q.tokens.len();
            for (i, &slot) in q.slots.iter().enumerate() {
                let t = t0 + i;
                rope(&mut s.q[t * qd..(t + 1) * qd], hd, q.pos0 + i, &s.inv_freq);
                rope(&mut s.k[t * kvd..(t + 1) * kvd], hd, q.pos0 + i, &s.inv_freq);
                q.kv.write(l, slot, &s.k[t * kvd..(t + 1) * kvd], &s.v[t * kvd..(t + 1) * kvd]);
            }
            let (qs, att) = (&s.q[t0 * qd..(t0 + m) * qd], &mut s.att[t0 * qd..(t0 + m) * qd]);
            attend(q.kv, l, heads, qs, m, q.pos0, att, &mut s.attn);
            t0 += m;
        }
        matmul(model.view(&layer.wo), &s.att[..n * qd], n, &mut s.o[..n * dim], &mut s.mm);
        for (x, o) in s.x[..n * dim].iter_mut().zip(&s.o[..n * dim]) {
            *x += o;
        }

        // ---- SwiGLU feed-forward ----
        let f = c.ffn_dim;
        rmsnorm(&mut s.xb[..n * dim], &s.x[..n * dim], &layer.ffn_norm, c.norm_eps);
        matmul(model.view(&layer.w_gate), &s.xb[..n * dim], n, &mut s.gate[..n * f], &mut s.mm);
        matmul(model.view(&layer.w_up), &s.xb[..n * dim], n, &mut s.up[..n * f], &mut s.mm);
        (pixtral_quant::kernels::selected().silu_mul)(&mut s.gate[..n * f], &s.up[..n * f]);
        matmul(model.view(&layer.w_down), &s.gate[..n * f], n, &mut s.o[..n * dim], &mut s.mm);
        for (x, o) in s.x[..n * dim].iter_mut().zip(&s.o[..n * dim]) {
            *x += o;
        }
    }

    // ---- output head, for the rows asked for: per sequence, all its rows or its last ----
    let mut m = 0;
    let mut t0 = 0;
    for q in seqs.iter() {
        let len = q.tokens.len();
        let (first, rows) = if q.all { (t0, len) } else { (t0 + len - 1, 1) };
        rmsnorm(
            &mut s.xb[m * dim..(m + rows) * dim],
            &s.x[first * dim..(first + rows) * dim],
            &w.output_norm,
            c.norm_eps,
        );
        m += rows;
        t0 += len;
    }
    let v = c.vocab_size;
    matmul(model.view(&w.output), &s.xb[..m * dim], m, &mut s.logits[..m * v], &mut s.mm);
}
