//! What a caller asks for, and what it gets back: the library's one request path, shared by `pixtral run`,
//! `pixtral chat`, the C ABI and the server.
//!
//! A [`Request`] is a list of messages (system, user, assistant) whose content interleaves text and images
//! ([`Part`]); an image is a file, encoded bytes, or raw RGB8 pixels ([`ImageSource`]). [`GenerateOptions`] says
//! how to answer (OpenAI's `max_tokens`, `stop`, sampling, `top_logprobs`, plus a token callback and a
//! cancellation flag); a [`Completion`] is the answer with its finish reason, counts and timings.
//!
//! The steps (see [`crate::Engine`]): [`crate::runtime::engine::Prepared::new`] checks everything that needs no
//! pixels (image headers, token counts, marker counts) → [`crate::Engine::encode`] decodes and encodes the
//! images (cached by content) → [`crate::Conversation::respond`] prefills what the KV cache lacks and answers.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::error::{Error, Result};
use crate::runtime::sampler::SamplerParams;

/// Where an image comes from. Every kind is checked from its header (or its stated size) before any pixel is
/// decoded, within [`crate::image::ImageLimits`].
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A PNG, JPEG, WebP or GIF file (also a pipe or FIFO: it is read once, whole).
    Path(PathBuf),
    /// An encoded image in memory (PNG, JPEG, WebP, GIF); `name` names it in errors (e.g. `<stdin>`, a URL).
    Encoded { name: String, bytes: Vec<u8> },
    /// Raw pixels: `(height, width, 3)` bytes, row-major, RGB, no padding.
    Rgb8 { width: usize, height: usize, pixels: Vec<u8> },
}

impl ImageSource {
    /// How errors name it: the path, the given name, or `<rgb8 WxH>`.
    pub fn name(&self) -> PathBuf {
        match self {
            ImageSource::Path(p) => p.clone(),
            ImageSource::Encoded { name, .. } => PathBuf::from(name),
            ImageSource::Rgb8 { width, height, .. } => PathBuf::from(format!("<rgb8 {width}x{height}>")),
        }
    }
}

/// A piece of a message's content.
#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    Image(ImageSource),
}

/// Who speaks. System messages are joined (two newlines apart) and placed as Mistral's v3 template places a
/// system prompt: before the last user message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone)]
pub struct RequestMessage {
    pub role: Role,
    pub content: Vec<Part>,
}

impl RequestMessage {
    pub fn system(text: impl Into<String>) -> RequestMessage {
        RequestMessage { role: Role::System, content: vec![Part::Text(text.into())] }
    }
    pub fn user(content: Vec<Part>) -> RequestMessage {
        RequestMessage { role: Role::User, content }
    }
    pub fn user_text(text: impl Into<String>) -> RequestMessage {
        RequestMessage::user(vec![Part::Text(text.into())])
    }
    pub fn assistant(text: impl Into<String>) -> RequestMessage {
        RequestMessage { role: Role::Assistant, content: vec![Part::Text(text.into())] }
    }
}

/// One request: the conversation to answer (it must end with a user message) and its image budget.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub messages: Vec<RequestMessage>,
    /// Longest image side before patching, at least the patch size; `None`: the model's (1024 for Pixtral-12B).
    /// Fewer pixels are fewer tokens: the tokens grow with the area.
    pub image_max_side: Option<usize>,
    /// BOS and the parts of the messages as they are, without the chat template (llama.cpp's completion mode).
    pub raw: bool,
}

impl Request {
    /// A request of one user message.
    pub fn user(content: Vec<Part>) -> Request {
        Request { messages: vec![RequestMessage::user(content)], ..Default::default() }
    }

    /// Number of images in the request.
    pub fn n_images(&self) -> usize {
        self.messages.iter().flat_map(|m| &m.content).filter(|p| matches!(p, Part::Image(_))).count()
    }
}

/// A message's content from text with `<image>` markers and the images they stand for, in order (the CLI's
/// `-p "… <image> …" --image a.png`). Without markers the images go first, then the text (mistral-common's order).
/// Errors ([`Error::Request`]) when there are markers but not one per image.
pub fn content_with_markers(text: &str, images: Vec<ImageSource>) -> Result<Vec<Part>> {
    let parts: Vec<&str> = text.split("<image>").collect();
    let markers = parts.len() - 1;
    if markers == 0 {
        let mut content: Vec<Part> = images.into_iter().map(Part::Image).collect();
        content.push(Part::Text(text.to_string()));
        return Ok(content);
    }
    if markers != images.len() {
        return Err(Error::Request(format!(
            "the prompt has {markers} <image> markers but {} images were given",
            images.len()
        )));
    }
    let mut content = Vec::with_capacity(2 * parts.len());
    let mut images = images.into_iter();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            content.extend(images.next().map(Part::Image));
        }
        if !part.is_empty() {
            content.push(Part::Text(part.to_string()));
        }
    }
    Ok(content)
}

/// One generated token as the callback sees it.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    pub id: u32,
    /// Text safe to show now: never half a UTF-8 character, never the start of a stop string that may still
    /// complete (held back until decided), so it can be empty. The pieces add up to [`Completion::text`].
    pub text: &'a str,
    /// This token's log-probability and the top alternatives, when [`GenerateOptions::top_logprobs`] > 0.
    pub logprobs: Option<&'a TokenLogprobs>,
}

/// The callback of [`GenerateOptions::on_token`]: return `false` to stop (the finish reason is then
/// [`crate::FinishReason::Cancelled`]).
pub type OnToken<'a> = dyn FnMut(&TokenEvent) -> bool + 'a;

/// How to answer. The defaults are `pixtral run`'s: 256 tokens, temperature 0.7, top-k 40, top-p 0.95, min-p 0.05.
pub struct GenerateOptions<'a> {
    /// Tokens to generate at most (OpenAI's `max_tokens`); `usize::MAX`: until EOS or a full context.
    pub max_tokens: usize,
    /// End the answer where one of these appears (OpenAI's `stop`); it is not part of the answer. Empty strings
    /// are ignored.
    pub stop: Vec<String>,
    /// Sampler parameters and seed; the same seed, prompt and parameters give the same answer.
    pub sampling: SamplerParams,
    /// Log-probabilities of the `n` likeliest tokens at each step (OpenAI's `top_logprobs`, at most 20), from the
    /// model's distribution (softmax of the raw logits: temperature 1, before penalties and truncation). 0: none.
    pub top_logprobs: usize,
    /// Called after each generated token.
    pub on_token: Option<Box<OnToken<'a>>>,
    /// Raised (by any thread, e.g. a signal handler) to stop: checked between prefill chunks and tokens.
    pub cancel: Option<&'a AtomicBool>,
}

impl Default for GenerateOptions<'_> {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            stop: Vec::new(),
            sampling: SamplerParams::default(),
            top_logprobs: 0,
            on_token: None,
            cancel: None,
        }
    }
}

impl GenerateOptions<'_> {
    /// Errors ([`Error::Request`]) naming the first setting out of range, by OpenAI's name: `temperature` ≥ 0,
    /// `top_p` and `min_p` in [0, 1], `repeat_penalty` > 0 (all finite), `top_logprobs` ≤ 20.
    pub fn check(&self) -> Result<()> {
        let s = &self.sampling;
        let bad = |name: &str, v: f32, want: &str| Err(Error::Request(format!("{name} is {v}: it must be {want}")));
        if !(s.temp >= 0.0 && s.temp.is_finite()) {
            return bad("temperature", s.temp, "a number ≥ 0");
        }
        if !(0.0..=1.0).contains(&s.top_p) {
            return bad("top_p", s.top_p, "in [0, 1]");
        }
        if !(0.0..=1.0).contains(&s.min_p) {
            return bad("min_p", s.min_p, "in [0, 1]");
        }
        if !(s.repeat_penalty > 0.0 && s.repeat_penalty.is_finite()) {
            return bad("repeat_penalty", s.repeat_penalty, "a number > 0");
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(Error::Request(format!(
                "top_logprobs is {}: it must be at most {MAX_TOP_LOGPROBS}",
                self.top_logprobs
            )));
        }
        Ok(())
    }
}

/// OpenAI's limit on `top_logprobs`.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A token's log-probability and the likeliest alternatives at its step (natural log).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub id: u32,
    pub logprob: f32,
    /// `(id, logprob)`, likeliest first, `top_logprobs` of them.
    pub top: Vec<(u32, f32)>,
}

/// Why an answer ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced EOS, or a stop string appeared ([`Completion::stop_string`] says which).
    Stop,
    /// `max_tokens` reached, or the context is full ([`Completion::context_full`] tells which).
    Length,
    /// The callback asked to stop or the cancel flag was raised.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's spelling: `stop`, `length`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Seconds spent in each phase of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Images through the vision tower (0 when every image was in the cache).
    pub image_encode_s: f64,
    /// Prefill of the tokens the KV cache did not hold.
    pub prompt_s: f64,
    pub generation_s: f64,
}

/// Token counts of a request (OpenAI's `usage`, with the cached part of the prompt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// The whole prompt, images included.
    pub prompt_tokens: usize,
    /// Of those, found in the KV cache (not evaluated again).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// Images encoded by the vision tower / found in the image cache.
    pub images_encoded: usize,
    pub images_cached: usize,
}

impl Usage {
    /// OpenAI's `usage` object (`prompt_tokens`, `completion_tokens`, `total_tokens`,
    /// `prompt_tokens_details.cached_tokens`) plus `images_encoded` and `images_cached`: `pixtral run --json` and
    /// the server's answers.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "images_encoded": self.images_encoded,
            "images_cached": self.images_cached,
        })
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The answer's text, without the stop string that ended it.
    pub text: String,
    /// The generated ids, as sampled (EOS, when it ended the answer, included).
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    /// The stop string that ended the answer.
    pub stop_string: Option<String>,
    /// The answer stopped because the context was full (`finish_reason` is then `Length`).
    pub context_full: bool,
    pub usage: Usage,
    pub timings: Timings,
    /// One entry per generated token when `top_logprobs` > 0.
    pub logprobs: Vec<TokenLogprobs>,
}
