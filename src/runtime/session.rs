//! A conversation with a model: the KV cache, the activations, the token history.
//!
//! `eval` feeds tokens (prefill in chunks of `batch`, or one at a time once a ring cache is full) and
//! returns logits; `generate` samples until EOS, `max_tokens`, a full context, the callback saying stop, or
//! cancellation. A call that fails or is cancelled leaves the cache and history exactly as they were.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::gguf::config::TextConfig;
use crate::model::kv_cache::{KvCache, KvType};
use crate::model::text::Model;
use crate::model::text::{forward, DecoderState, ImageRows};
use crate::model::tokenizer::StreamDecoder;
use crate::runtime::request::{FinishReason, TokenLogprobs, MAX_TOP_LOGPROBS};
use crate::runtime::sampler::Sampler;

#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// KV cache capacity in tokens (`--ctx-size`).
    pub ctx_size: usize,
    /// Ring cache instead of stopping when full (`--context-shift`).
    pub context_shift: bool,
    /// Sink tokens kept by the ring (`--keep`); `None`: the first prompt's BOS + system part, at least 1.
    pub keep: Option<usize>,
    /// Prefill chunk (tokens per forward).
    pub batch: usize,
    /// KV cache storage (`--kv-type`).
    pub kv_type: KvType,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { ctx_size: 4096, context_shift: false, keep: None, batch: 64, kv_type: KvType::F16 }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
    /// true when generation stopped because the context was full
    pub context_full: bool,
    pub prompt_tokens: usize,
    pub prompt_seconds: f64,
    pub gen_seconds: f64,
    /// Per generated token, when asked for (`top_logprobs` > 0).
    pub logprobs: Vec<TokenLogprobs>,
}

pub struct Session<'m> {
    pub model: &'m Model,
    kv: KvCache,
    state: DecoderState,
    /// every token of the conversation, in order
    history: Vec<u32>,
    /// tokens in `history` not yet in the cache (the sampled token that ended a generation)
    pending: Vec<u32>,
    slots: Vec<usize>,
    /// pending + new tokens of the current `eval`, reused
    input: Vec<u32>,
    /// decoded text of the current token, reused
    piece: String,
    last_row: usize,
    /// the `[IMG]` token id (Pixtral: 10)
    img_id: u32,
    opts: SessionOptions,
    progress: Option<Box<dyn FnMut(usize, usize) + Send + 'm>>,
}

impl<'m> Session<'m> {
    /// Bytes a session with `opts` allocates: the KV cache, the activations of a prefill chunk, and prefill
    /// attention's f32 copy of one layer's keys and values ([`crate::model::attention`]).
    pub fn bytes_needed(model: &Model, opts: &SessionOptions) -> u64 {
        Self::bytes_for(&model.cfg, opts)
    }

    /// [`Session::bytes_needed`] from the config alone (before the weights are loaded).
    pub fn bytes_for(c: &TextConfig, opts: &SessionOptions) -> u64 {
        // saturating: an absurd context is u64::MAX bytes, refused, never an overflow
        let kv = KvCache::bytes_for(c.n_layers, c.n_heads_kv * c.head_dim, opts.ctx_size, opts.kv_type) as u64;
        let batch = opts.batch.clamp(1, opts.ctx_size.max(1)) as u64;
        // x, residual, q, k, v, attention out, gate, up, logits: f32 per token of the chunk
        let per_token = 4 * (6 * c.dim + 2 * c.ffn_dim + c.n_heads * c.head_dim + c.vocab_size) as u64;
        // one layer's keys and values widened to f32, per key block (whole blocks: up to one block more)
        let slots = opts.ctx_size.saturating_add(crate::model::attention::KEYS) as u64;
        let attention = slots.saturating_mul(2 * (c.n_heads_kv * c.head_dim) as u64 * 4);
        kv.saturating_add(batch.saturating_mul(per_token)).saturating_add(attention)
    }

    /// Refuse, with both numbers, a session the memory cannot hold (MemAvailable and the cgroup limit), instead
    /// of the kernel's OOM killer deciding later. Needs only the config, so a front end can ask before loading.
    pub fn check_memory(c: &TextConfig, opts: &SessionOptions) -> Result<()> {
        if !opts.kv_type.fits(c.head_dim) {
            return Err(Error::Invalid(format!(
                "--kv-type q8_0 needs a head size that is a multiple of 32 (the block size); this model's is {}",
                c.head_dim
            )));
        }
        let need = Self::bytes_for(c, opts);
        if let Some(available) = crate::gguf::os::available_memory() {
            if need > available {
                return Err(Error::Memory {
                    what: format!("a context of {} tokens ({:?} KV cache)", opts.ctx_size, opts.kv_type),
                    need,
                    available,
                    kv_f32: opts.kv_type == KvType::F32,
                });
            }
        }
        Ok(())
    }

    /// [`Session::new`], refused with both numbers when the memory cannot hold it ([`Session::check_memory`]).
    pub fn try_new(model: &'m Model, opts: SessionOptions) -> Result<Session<'m>> {
        if opts.ctx_size == 0 {
            return Err(Error::Request("a context of 0 tokens holds nothing".into()));
        }
        if Self::bytes_for(&model.cfg, &opts) == u64::MAX {
            return Err(Error::Request(format!(
                "a context of {} tokens needs more bytes than this machine can address",
                opts.ctx_size
            )));
        }
        Self::check_memory(&model.cfg, &opts)?;
        Ok(Session::new(model, opts))
    }

    pub fn new(model: &'m Model, opts: SessionOptions) -> Session<'m> {
        let c = &model.cfg;
        let batch = opts.batch.clamp(1, opts.ctx_size.max(1));
        let keep = opts.context_shift.then(|| opts.keep.unwrap_or(1).max(1));
        Session {
            model,
            kv: KvCache::new(c.n_layers, c.n_heads_kv * c.head_dim, opts.ctx_size, keep, opts.kv_type),
            state: DecoderState::new(model, batch),
            history: Vec::with_capacity(opts.ctx_size),
            pending: Vec::new(),
            slots: Vec::with_capacity(batch),
            input: Vec::with_capacity(batch),
            piece: String::with_capacity(64),
            last_row: 0,
            img_id: model.tokenizer.control_id("[IMG]").unwrap_or(u32::MAX),
            opts: SessionOptions { batch, ..opts },
            progress: None,
        }
    }

    /// Call `f(tokens done, tokens)` after each prefill chunk of an evaluation longer than one chunk
    /// (a progress bar for long prompts); not called while decoding.
    pub fn set_prefill_progress(&mut self, f: Option<Box<dyn FnMut(usize, usize) + Send + 'm>>) {
        self.progress = f;
    }

    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// Tokens in the cache / its capacity.
    pub fn context_used(&self) -> (usize, usize) {
        (self.kv.n_filled, self.kv.capacity)
    }

    /// Keep the first `n` tokens of the conversation and forget the rest, so a new ending can follow a
    /// shared prefix without recomputing it. `false` (nothing changed) when `n` is beyond the history or a
    /// ring cache has already overwritten part of it; [`Session::reset`] is then the way back.
    pub fn rewind(&mut self, n: usize) -> bool {
        let cached = self.history.len() - self.pending.len();
        if n > self.history.len() || !self.kv.truncate(n.min(cached)) {
            return false;
        }
        // tokens between the cache's end and n stay pending: the next eval feeds them first
        self.pending = self.history[n.min(cached)..n].to_vec();
        self.history.truncate(n);
        true
    }

    pub fn reset(&mut self) {
        self.kv.clear();
        self.history.clear();
        self.pending.clear();
    }

    /// Logits of the last evaluated token, `(vocab)`.
    pub fn logits(&self) -> &[f32] {
        let v = self.model.cfg.vocab_size;
        &self.state.logits[self.last_row * v..(self.last_row + 1) * v]
    }

    /// Feed `tokens`; with `all`, also collect every position's logits `(n, vocab)` into it.
    pub fn eval(&mut self, tokens: &[u32], all: Option<&mut Vec<f32>>, cancel: Option<&AtomicBool>) -> Result<&[f32]> {
        self.eval_with_images(tokens, &[], all, cancel)
    }

    /// [`Session::eval`] with image features `(n_img, dim)` for the `[IMG]` tokens of `tokens`, in order
    /// (from [`crate::model::vision::VisionModel::encode`]).
    pub fn eval_with_images(
        &mut self,
        tokens: &[u32],
        images: &[f32],
        all: Option<&mut Vec<f32>>,
        cancel: Option<&AtomicBool>,
    ) -> Result<&[f32]> {
        let dim = self.model.cfg.dim;
        let n_img = tokens.iter().filter(|&&t| t == self.img_id).count();
        if images.len() != n_img * dim {
            return Err(Error::Invalid(format!(
                "{n_img} [IMG] tokens but {} values of image features ({} rows of {dim})",
                images.len(),
                images.len() / dim
            )));
        }
        // no allocation per decoded token: `input` keeps its capacity across calls
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        input.extend_from_slice(&self.pending);
        let n_pending = input.len();
        input.extend_from_slice(tokens);
        let result = self.eval_input(&input, n_pending, tokens, images, all, cancel);
        self.input = input;
        result?;
        Ok(self.logits())
    }

    fn eval_input(
        &mut self,
        input: &[u32],
        n_pending: usize,
        tokens: &[u32],
        images: &[f32],
        mut all: Option<&mut Vec<f32>>,
        cancel: Option<&AtomicBool>,
    ) -> Result<()> {
        let dim = self.model.cfg.dim;
        let mut img_used = 0;
        if input.is_empty() {
            return Err(Error::Invalid("nothing to evaluate".into()));
        }
        if !self.kv.is_ring() && input.len() > self.kv.free() {
            return Err(Error::ContextFull { prompt: input.len(), ctx: self.kv.capacity, used: self.kv.n_filled });
        }
        let v = self.model.cfg.vocab_size;
        if let Some(a) = all.as_deref_mut() {
            a.clear();
        }
        self.kv.begin();
        let mut i = 0;
        while i < input.len() {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                self.kv.rollback();
                return Err(Error::Cancelled);
            }
            let free = self.kv.free();
            // a ring cache never evicts inside a chunk: a token must see the window ending at itself
            let room = if self.kv.is_ring() && free == 0 {
                1
            } else if self.kv.is_ring() {
                free
            } else {
                usize::MAX
            };
            let n = self.opts.batch.min(room).min(input.len() - i);
            let pos0 = self.kv.next_pos;
            self.slots.clear();
            for _ in 0..n {
                self.slots.push(self.kv.reserve().expect("room checked above"));
            }
            let want_all = all.is_some();
            let chunk = &input[i..i + n];
            let img = ImageRows { img_id: self.img_id, rows: &images[img_used * dim..] };
            forward(self.model, &mut self.state, &mut self.kv, chunk, &img, &self.slots, pos0, want_all);
            img_used += chunk.iter().filter(|&&t| t == self.img_id).count();
            if let Some(a) = all.as_deref_mut() {
                // positions of pending tokens are not the caller's
                let skip = n_pending.saturating_sub(i).min(n);
                a.extend_from_slice(&self.state.logits[skip * v..n * v]);
            }
            self.last_row = if want_all { n - 1 } else { 0 };
            i += n;
            if input.len() > self.opts.batch {
                if let Some(p) = self.progress.as_mut() {
                    p(i, input.len());
                }
            }
        }
        self.kv.commit();
        self.pending.clear();
        self.history.extend_from_slice(tokens);
        Ok(())
    }

    /// Prefill `prompt` (appended to the conversation), then sample until a stop. `on_text` receives each
    /// piece of decoded text (never half a UTF-8 character) and returns false to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        sampler: &mut Sampler,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.generate_with_images(prompt, &[], sampler, max_tokens, cancel, on_text)
    }

    /// [`Session::generate`] for a prompt with image features for its `[IMG]` tokens.
    pub fn generate_with_images(
        &mut self,
        prompt: &[u32],
        images: &[f32],
        sampler: &mut Sampler,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        self.generate_with(prompt, images, sampler, max_tokens, 0, cancel, |_, piece, _| on_text(piece))
    }

    /// [`Session::generate_with_images`] with the `top_logprobs` likeliest tokens' log-probabilities at each step
    /// (at most [`MAX_TOP_LOGPROBS`]; see [`crate::GenerateOptions::top_logprobs`]); `on_token(id, text, logprobs)`.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        images: &[f32],
        sampler: &mut Sampler,
        max_tokens: usize,
        top_logprobs: usize,
        cancel: Option<&AtomicBool>,
        mut on_token: impl FnMut(u32, &str, Option<&TokenLogprobs>) -> bool,
    ) -> Result<Generation> {
        let tok = &self.model.tokenizer;
        let top_n = top_logprobs.min(MAX_TOP_LOGPROBS);
        let t0 = std::time::Instant::now();
        self.eval_with_images(prompt, images, None, cancel)?;
        let prompt_seconds = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        // sized up front so decoding never reallocates them
        let cap = max_tokens.min(self.kv.capacity + 1);
        self.history.reserve(cap);
        let mut out = Generation {
            tokens: Vec::with_capacity(cap),
            text: String::with_capacity(cap * 8),
            finish: FinishReason::Length,
            context_full: false,
            prompt_tokens: prompt.len(),
            prompt_seconds,
            gen_seconds: 0.0,
            logprobs: Vec::new(),
        };
        let mut detok = StreamDecoder::default();
        for step in 0..max_tokens {
            let id = sampler
                .sample(self.logits(), &self.history)
                .map_err(|_| Error::NonFinite { step, pos: self.kv.next_pos.saturating_sub(1) })?;
            if top_n > 0 {
                out.logprobs.push(logprobs(self.logits(), id, top_n));
            }
            out.tokens.push(id);
            self.history.push(id);
            if id == tok.eos {
                self.pending.push(id);
                out.finish = FinishReason::Stop;
                break;
            }
            self.piece.clear();
            detok.push_into(tok, id, &mut self.piece);
            out.text.push_str(&self.piece);
            if !on_token(id, &self.piece, out.logprobs.last()) || cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                self.pending.push(id);
                out.finish = FinishReason::Cancelled;
                break;
            }
            if step + 1 == max_tokens {
                self.pending.push(id);
                break;
            }
            if !self.kv.is_ring() && self.kv.free() == 0 {
                self.pending.push(id);
                out.context_full = true;
                break;
            }
            // the token joins the cache; `history` already has it
            self.history.pop();
            self.eval(&[id], None, cancel)?;
        }
        let rest = detok.finish();
        if !rest.is_empty() {
            let last = out.tokens.last().copied().unwrap_or(tok.eos);
            on_token(last, &rest, None);
            out.text.push_str(&rest);
        }
        out.gen_seconds = t1.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// Log-softmax of `logits` at `id` and the `n` likeliest ids (ties: the lower id first), in f64 sums.
pub fn logprobs(logits: &[f32], id: u32, n: usize) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    let lp = |i: u32| (logits[i as usize] as f64 - lse) as f32;
    let better =
        |a: u32, b: u32| logits[a as usize] > logits[b as usize] || (logits[a as usize] == logits[b as usize] && a < b);
    let mut top: Vec<u32> = Vec::with_capacity(n + 1);
    for i in 0..logits.len() as u32 {
        // insertion into the n best so far: O(vocab · n), n ≤ 20
        if top.len() == n && !top.last().is_some_and(|&w| better(i, w)) {
            continue;
        }
        let at = top.iter().position(|&t| better(i, t)).unwrap_or(top.len());
        top.insert(at, i);
        top.truncate(n);
    }
    TokenLogprobs { id, logprob: lp(id), top: top.into_iter().map(|t| (t, lp(t))).collect() }
}
