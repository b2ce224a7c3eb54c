//! The scheduler: `--parallel N` slots sharing one model, driven by one thread (continuous batching, as
//! llama-server and vLLM do it).
//!
//! A slot is a KV cache and the keys of what it holds (an `[IMG]` position keyed by its image's content hash, as in
//! [`crate::Conversation`]). A job (a request, its images already encoded) goes to the free slot whose cache it
//! continues (sharing at least half of what the slot holds; an empty slot always qualifies) with the longest prefix,
//! else to the least recently used slot; the cache is cut back to the shared prefix and only the rest is prefilled.
//!
//! Each step builds one batch for [`forward_batch`]: the next token of every slot that is decoding (one row each),
//! then chunks of prompts being prefilled, up to `batch` rows in all. One pass over the weights thus serves every
//! stream (decode is bound by reading them: at Pixtral-12B Q4_0, 7 GB a token), and a long prompt (an image is
//! thousands of tokens) is read a chunk per step, so running streams keep producing tokens meanwhile. The logits of
//! a slot's last row are sampled at once (grammar mask, sampler, logprobs, stop strings) and the piece of text is
//! sent to the request's channel.
//!
//! A request whose client went away (its cancel flag raised by the HTTP side's guard) is dropped before the next
//! step and its slot is free at once; what its cache holds stays for a later request to reuse.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::model::kv_cache::{KvCache, KvType};
use crate::model::text::{forward_batch, DecoderState, ImageRows, Seq};
use crate::model::tokenizer::StreamDecoder;
use crate::runtime::conversation::{Encoded, Key};
use crate::runtime::images::EncodedImage;
use crate::runtime::request::{FinishReason, Timings, TokenLogprobs, Usage};
use crate::runtime::sampler::{Sampler, SamplerParams};
use crate::runtime::session::logprobs;
use crate::runtime::stop::StopStrings;
use crate::server::metrics::Metrics;
use crate::Engine;

/// How to answer one job (the OpenAI fields, checked by the API layer).
pub struct Params {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampling: SamplerParams,
    pub top_logprobs: usize,
    /// `logprobs: true`: the sampled token's log-probability at each step (with `top_logprobs` alternatives).
    pub logprobs: bool,
    /// Structured output: tokens outside the grammar are never sampled.
    pub grammar: Option<llguidance::Matcher>,
}

/// One request for the scheduler: the prompt's ids, its images (in order of appearance) and how to answer.
pub struct Job {
    pub ids: Vec<u32>,
    pub images: Vec<Arc<EncodedImage>>,
    pub params: Params,
    /// Raised by the HTTP side when the client goes away: the job is dropped before the next step.
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<Event>,
    /// Image encode seconds and counts, for the usage of the answer.
    pub image_encode_s: f64,
    pub images_encoded: usize,
    pub images_cached: usize,
}

/// What the scheduler tells a request, in order: `Token`s, then one `Done` or `Failed`.
pub enum Event {
    /// A generated token: text safe to show (may be empty: half a character, or a possible stop string held
    /// back), and its log-probabilities when asked for.
    Token {
        id: u32,
        text: String,
        logprobs: Option<TokenLogprobs>,
    },
    Done(Summary),
    Failed(String),
}

/// How an answer ended.
#[derive(Debug, Clone)]
pub struct Summary {
    pub finish_reason: FinishReason,
    pub stop_string: Option<String>,
    pub context_full: bool,
    pub usage: Usage,
    pub timings: Timings,
}

/// Messages to the scheduler thread.
pub enum Msg {
    Job(Box<Job>),
    /// Stop when the running jobs are done (or cancelled): the thread then returns.
    Shutdown,
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Slots (`--parallel`).
    pub parallel: usize,
    /// KV cache tokens per slot (`--ctx-size` / `--parallel`).
    pub ctx_per_slot: usize,
    /// Rows per forward pass (`--batch-size`): decode rows first, prompt chunks fill the rest.
    pub batch: usize,
    pub kv_type: KvType,
}

struct Slot {
    kv: KvCache,
    /// keys of the tokens in `kv`, in order (`kv.n_filled` of them)
    fed: Vec<Key>,
    job: Option<Active>,
    /// when it last took a job (a counter): when no free slot's cache is continued by a new prompt, the least
    /// recently used gives its cache up, so a conversation's cache survives unrelated requests as long as it can
    used: u64,
}

/// A job in a slot.
struct Active {
    job: Job,
    enc: Encoded,
    /// next prompt position to feed; `enc.ids.len()` once the prompt is in
    next: usize,
    cached: usize,
    /// the sampled token not yet in the cache (decoding)
    last: Option<u32>,
    sampler: Sampler,
    stops: StopStrings,
    detok: StreamDecoder,
    generated: Vec<u32>,
    /// the grammar's mask as logits: allowed tokens keep theirs, the others are f32::MIN
    masked: Vec<f32>,
    started: Instant,
    first_token: Option<Instant>,
}

impl Active {
    /// The end of the answer's text: the half character the decoder holds, then what the stop strings held back as
    /// a possible match; `true` when a stop string completed in it (the text is then what comes before it).
    fn flush(&mut self) -> (String, bool) {
        let (mut text, hit) = self.stops.push(&self.detok.finish());
        if !hit {
            text.push_str(&self.stops.finish());
        }
        (text, hit)
    }
}

/// What one row group of a batch is for.
struct Planned {
    slot: usize,
    tokens: Vec<u32>,
    kv_slots: Vec<usize>,
    pos0: usize,
    images: Vec<f32>,
    /// the chunk ends the prompt (or is a decode step): sample from its last row
    sample: bool,
}

/// Run the scheduler on the calling thread until [`Msg::Shutdown`] and every job is done, or the channel closes.
pub fn run(engine: Arc<Engine>, cfg: Config, rx: mpsc::Receiver<Msg>, metrics: Arc<Metrics>) {
    let model = &engine.model;
    let c = &model.cfg;
    let kv_dim = c.n_heads_kv * c.head_dim;
    let batch = cfg.batch.max(cfg.parallel);
    let mut state = DecoderState::new(model, batch);
    let mut slots: Vec<Slot> = (0..cfg.parallel)
        .map(|_| Slot {
            kv: KvCache::new(c.n_layers, kv_dim, cfg.ctx_per_slot, None, cfg.kv_type),
            fed: Vec::new(),
            job: None,
            used: 0,
        })
        .collect();
    let img_id = model.tokenizer.control_id("[IMG]").unwrap_or(u32::MAX);
    let mut queue: VecDeque<Box<Job>> = VecDeque::new();
    let mut shutdown = false;
    let mut uses = 0u64;
    loop {
        // ---- intake: block only when there is nothing to do ----
        let busy = slots.iter().any(|s| s.job.is_some()) || !queue.is_empty();
        if !busy {
            if shutdown {
                return;
            }
            match rx.recv() {
                Ok(Msg::Job(j)) => queue.push_back(j),
                Ok(Msg::Shutdown) | Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => queue.push_back(j),
                Ok(Msg::Shutdown) => shutdown = true,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    shutdown = true;
                    break;
                }
            }
        }

        // ---- drop what nobody waits for ----
        queue.retain(|j| {
            let gone = j.cancel.load(Ordering::Relaxed);
            if gone {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            !gone
        });
        for s in slots.iter_mut() {
            if s.job.as_ref().is_some_and(|a| a.job.cancel.load(Ordering::Relaxed)) {
                s.job = None;
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }

        // ---- free slots take queued jobs: the one sharing the longest prefix (then the least recently used) ----
        while slots.iter().any(|s| s.job.is_none()) {
            let Some(mut job) = queue.pop_front() else { break };
            let enc = match Encoded::new(&model.tokenizer, std::mem::take(&mut job.ids), &job.images) {
                Ok(e) => e,
                Err(e) => {
                    let _ = job.events.send(Event::Failed(e.to_string()));
                    continue;
                }
            };
            // a free slot whose cache this prompt continues (at least half of what it holds is reused: an empty slot
            // always qualifies), the longest prefix first; otherwise the least recently used gives its cache up
            let common = |s: &Slot| s.fed.iter().zip(&enc.keys).take_while(|(a, b)| a == b).count();
            let free: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].job.is_none()).collect();
            let reusing = free.iter().copied().filter(|&i| 2 * common(&slots[i]) >= slots[i].fed.len());
            let i = reusing
                .max_by_key(|&i| (common(&slots[i]), std::cmp::Reverse(slots[i].used)))
                .or_else(|| free.iter().copied().min_by_key(|&i| slots[i].used))
                .expect("a free slot");
            uses += 1;
            let s = &mut slots[i];
            s.used = uses;
            // the last prompt token is always evaluated: its logits start the answer
            let lcp = common(s).min(enc.ids.len() - 1);
            if !s.kv.truncate(lcp) {
                s.kv.clear();
            }
            s.fed.truncate(s.kv.n_filled);
            let cached = s.kv.n_filled;
            metrics.prompt_tokens.fetch_add(enc.ids.len() as u64, Ordering::Relaxed);
            metrics.cached_tokens.fetch_add(cached as u64, Ordering::Relaxed);
            let p = &job.params;
            s.job = Some(Active {
                sampler: Sampler::new(p.sampling.clone()),
                stops: StopStrings::new(&p.stop),
                detok: StreamDecoder::default(),
                generated: Vec::new(),
                masked: Vec::new(),
                next: cached,
                cached,
                last: None,
                started: Instant::now(),
                first_token: None,
                enc,
                job: *job,
            });
        }
        gauges(&metrics, &queue, &slots);

        // ---- the batch: decode rows first, then prompt chunks ----
        let mut plan: Vec<Planned> = Vec::new();
        let mut rows = 0;
        for (i, s) in slots.iter_mut().enumerate() {
            if let Some(id) = s.job.as_ref().and_then(|a| a.last) {
                let pos0 = s.kv.next_pos;
                let slot = s.kv.reserve().expect("room checked when the token was sampled");
                plan.push(Planned {
                    slot: i,
                    tokens: vec![id],
                    kv_slots: vec![slot],
                    pos0,
                    images: Vec::new(),
                    sample: true,
                });
                rows += 1;
            }
        }
        let (decode_rows, dim) = (rows, c.dim);
        for (i, s) in slots.iter_mut().enumerate() {
            let Some(a) = s.job.as_mut().filter(|a| a.last.is_none()) else { continue };
            let n = (a.enc.ids.len() - a.next).min(batch - rows);
            if n == 0 {
                continue;
            }
            let range = a.next..a.next + n;
            let pos0 = s.kv.next_pos;
            let kv_slots: Vec<usize> = (0..n).map(|_| s.kv.reserve().expect("the prompt fits the slot")).collect();
            let first_img = a.enc.keys[..a.next].iter().filter(|k| matches!(k, Key::Image(_))).count();
            let n_img = a.enc.keys[range.clone()].iter().filter(|k| matches!(k, Key::Image(_))).count();
            let mut images = Vec::with_capacity(n_img * dim);
            for &(image, patch) in &a.enc.rows[first_img..first_img + n_img] {
                images.extend_from_slice(&a.job.images[image].embeds[patch * dim..(patch + 1) * dim]);
            }
            a.next += n;
            let sample = a.next == a.enc.ids.len();
            plan.push(Planned { slot: i, tokens: a.enc.ids[range].to_vec(), kv_slots, pos0, images, sample });
            rows += n;
            if rows == batch {
                break;
            }
        }
        if plan.is_empty() {
            continue;
        }
        plan.sort_by_key(|p| p.slot);

        // ---- one pass over the weights ----
        let t0 = Instant::now();
        {
            let mut seqs: Vec<Seq> = Vec::with_capacity(plan.len());
            let mut next = plan.iter().peekable();
            for (i, s) in slots.iter_mut().enumerate() {
                if let Some(p) = next.next_if(|p| p.slot == i) {
                    seqs.push(Seq {
                        kv: &mut s.kv,
                        tokens: &p.tokens,
                        img: ImageRows { img_id, rows: &p.images },
                        slots: &p.kv_slots,
                        pos0: p.pos0,
                        all: false,
                    });
                }
            }
            forward_batch(model, &mut state, &mut seqs);
        }
        let secs = t0.elapsed().as_secs_f64();
        metrics.record_step(decode_rows, rows - decode_rows, secs);

        // ---- sample: one logits row per planned group, in order ----
        let v = c.vocab_size;
        for (r, p) in plan.iter().enumerate() {
            let s = &mut slots[p.slot];
            let a = s.job.as_mut().expect("planned slots hold a job");
            s.fed.extend(match a.last.take() {
                Some(id) => vec![Key::Token(id)],
                None => a.enc.keys[a.next - p.tokens.len()..a.next].to_vec(),
            });
            if !p.sample {
                continue;
            }
            let logits = &state.logits[r * v..(r + 1) * v];
            if let Some(done) = step(&engine, a, logits, s.kv.free(), &metrics) {
                let _ = a.job.events.send(done);
                s.job = None;
            }
        }
        gauges(&metrics, &queue, &slots);
    }
}

fn gauges(metrics: &Metrics, queue: &VecDeque<Box<Job>>, slots: &[Slot]) {
    metrics.queued.store(queue.len() as u64, Ordering::Relaxed);
    metrics.slots_busy.store(slots.iter().filter(|s| s.job.is_some()).count() as u64, Ordering::Relaxed);
}

/// Sample the next token of `a` from `logits` and tell its request; `Some(last event)` when the answer ended.
fn step(engine: &Engine, a: &mut Active, logits: &[f32], free: usize, metrics: &Metrics) -> Option<Event> {
    let tok = &engine.model.tokenizer;
    let p = &mut a.job.params;
    let now = Instant::now();
    a.first_token.get_or_insert(now);
    // the grammar's mask: tokens it forbids are never drawn (the logits are finite, so f32::MIN is weight 0)
    let use_logits: &[f32] = match p.grammar.as_mut() {
        Some(m) => match m.compute_mask_or_eos() {
            // the grammar is complete: only EOS may follow (whatever `ignore_eos` says)
            Ok(mask) if mask.num_set() == 1 && mask.is_allowed(tok.eos) => {
                let (rest, _) = a.flush();
                if !rest.is_empty() {
                    let _ = a.job.events.send(Event::Token { id: tok.eos, text: rest, logprobs: None });
                }
                return Some(done(a, FinishReason::Stop, false, now));
            }
            Ok(mask) => {
                a.masked.clear();
                a.masked.extend(
                    logits.iter().enumerate().map(|(i, &l)| if mask.is_allowed(i as u32) { l } else { f32::MIN }),
                );
                &a.masked
            }
            Err(e) => return Some(Event::Failed(format!("structured output: {e}"))),
        },
        None => logits,
    };
    let id = match a.sampler.sample(use_logits, &a.generated) {
        Ok(id) => id,
        Err(_) => return Some(Event::Failed(format!("non-finite logits at decode step {}", a.generated.len()))),
    };
    // EOS ends the answer and has no text: no entry (OpenAI's `logprobs.content` covers the content's tokens)
    let lp = (id != tok.eos && (p.logprobs || p.top_logprobs > 0)).then(|| logprobs(logits, id, p.top_logprobs));
    if let Some(m) = p.grammar.as_mut() {
        if id != tok.eos {
            if let Err(e) = m.consume_token(id) {
                return Some(Event::Failed(format!("structured output: {e}")));
            }
        }
    }
    a.generated.push(id);
    metrics.completion_tokens.fetch_add(1, Ordering::Relaxed);
    let mut finish = None;
    let mut text = String::new();
    if id == tok.eos {
        finish = Some(FinishReason::Stop);
    } else {
        let piece = a.detok.push(tok, id);
        let (shown, hit) = a.stops.push(&piece);
        text = shown;
        if hit {
            finish = Some(FinishReason::Stop);
        }
    }
    let grammar_done = p.grammar.as_ref().is_some_and(|m| m.is_stopped());
    if finish.is_none() && grammar_done {
        finish = Some(FinishReason::Stop);
    }
    let context_full = finish.is_none() && free == 0;
    if finish.is_none() && (a.generated.len() >= p.max_tokens || context_full) {
        finish = Some(FinishReason::Length);
    }
    if finish.is_some() && a.stops.matched().is_none() {
        // the end of the text: half a character, then what was held back as a possible stop string
        let (rest, hit) = a.flush();
        text.push_str(&rest);
        if hit {
            finish = Some(FinishReason::Stop);
        }
    }
    let _ = a.job.events.send(Event::Token { id, text, logprobs: lp });
    let Some(finish_reason) = finish else {
        a.last = Some(id);
        return None;
    };
    Some(done(a, finish_reason, context_full, now))
}

/// The last event of an answer that ended for `finish_reason`.
fn done(a: &Active, finish_reason: FinishReason, context_full: bool, now: Instant) -> Event {
    let first = a.first_token.unwrap_or(now);
    Event::Done(Summary {
        finish_reason,
        stop_string: a.stops.matched().map(str::to_string),
        context_full,
        usage: Usage {
            prompt_tokens: a.enc.ids.len(),
            cached_tokens: a.cached,
            completion_tokens: a.generated.len(),
            images_encoded: a.job.images_encoded,
            images_cached: a.job.images_cached,
        },
        timings: Timings {
            image_encode_s: a.job.image_encode_s,
            prompt_s: (first - a.started).as_secs_f64(),
            generation_s: (Instant::now() - first).as_secs_f64(),
        },
    })
}
