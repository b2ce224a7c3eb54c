//! The C ABI of `pixtral`: opaque handles over the library's request path ([`pixtral::Engine`],
//! [`pixtral::Conversation`]). `include/pixtral.h` is generated from this file by cbindgen (`tests/header.rs`
//! checks it is current); `examples/c/describe.c` shows the calls in order.
//!
//! Conventions, for every function:
//! - a `pixtral_status` is returned; on failure, `pixtral_last_error()` gives the message for this thread (it names
//!   the file, field, tensor or argument at fault). No Rust panic crosses the boundary: one becomes
//!   `PIXTRAL_ERR_INTERNAL`.
//! - strings are NUL-terminated UTF-8; pointers the caller passes are borrowed for the call only.
//! - every `*_new`/`*_load` has its `*_free`, which takes NULL.

#![allow(non_camel_case_types)]
// SAFETY for the whole module: the pointer arguments are the caller's promise (documented in the header) that
// they are NULL or valid for the call; each is checked for NULL before use.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pixtral::{
    Completion, Conversation, Engine, EngineOptions, Error, FinishReason, GenerateOptions, ImageSource, Part,
    SamplerParams, Session, SessionOptions,
};

/// What a call did. On anything but `PIXTRAL_OK`, `pixtral_last_error()` says why.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pixtral_status {
    PIXTRAL_OK = 0,
    /// A NULL handle or pointer, a string that is not UTF-8, an option out of range.
    PIXTRAL_ERR_ARGUMENT = 1,
    /// A file that cannot be read (the message names it).
    PIXTRAL_ERR_IO = 2,
    /// A model or mmproj file that is not a usable model (the message names the key or tensor).
    PIXTRAL_ERR_MODEL = 3,
    /// Input data that is not what it claims: an image that cannot be decoded, a raw buffer of the wrong length.
    PIXTRAL_ERR_INPUT = 4,
    /// A request that cannot be served as given: longer than the context, images without a vision tower.
    PIXTRAL_ERR_REQUEST = 5,
    /// Not enough memory for the context asked for (both numbers in the message).
    PIXTRAL_ERR_MEMORY = 6,
    /// `pixtral_chat_cancel` was called before the answer began (nothing was answered).
    PIXTRAL_ERR_CANCELLED = 7,
    /// A bug: please report the message.
    PIXTRAL_ERR_INTERNAL = 8,
}
use pixtral_status::*;

/// Why an answer ended (OpenAI's `finish_reason`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pixtral_finish_reason {
    /// End of sequence, or a stop string.
    PIXTRAL_FINISH_STOP = 0,
    /// `max_tokens` reached, or the context is full.
    PIXTRAL_FINISH_LENGTH = 1,
    /// The token callback returned false, or `pixtral_chat_cancel` was called.
    PIXTRAL_FINISH_CANCELLED = 2,
}

/// A loaded model: text GGUF, its mmproj, the cache of encoded images. Thread-safe: any number of chats on any
/// threads may share one. Reference-counted: it lives until it and every chat made from it are freed.
pub struct pixtral_model {
    engine: Arc<Engine>,
}

/// A conversation with its KV cache: messages added, answered, the cache reused across turns. Not thread-safe:
/// one thread at a time (it may move between threads); only `pixtral_chat_cancel` may be called concurrently.
pub struct pixtral_chat {
    /// read by `pixtral_chat_cancel` from any thread while another uses `chat`
    cancel: AtomicBool,
    /// used by one thread at a time (the header's contract); in a cell, so a concurrent `pixtral_chat_cancel` only
    /// ever shares `cancel`, never aliases this
    chat: std::cell::UnsafeCell<Chat>,
}

struct Chat {
    // field order is drop order: the session borrows the engine that `engine` keeps alive
    session: Session<'static>,
    conv: Conversation,
    /// the next user message, added part by part
    pending: Vec<Part>,
    image_max_side: Option<usize>,
    ctx: usize,
    engine: Arc<Engine>,
}

/// The chat behind a handle, for the one thread using it.
unsafe fn chat_of<'a>(p: *mut pixtral_chat) -> Fallible<(&'a mut Chat, &'a AtomicBool)> {
    let c = p.as_ref().ok_or_else(|| arg("chat is NULL"))?;
    Ok((&mut *c.chat.get(), &c.cancel))
}

/// An answer: text, ids, finish reason, counts and timings.
pub struct pixtral_result {
    completion: Completion,
    text: CString,
    stop_string: Option<CString>,
}

/// Options of `pixtral_model_load`; start from `pixtral_model_options_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pixtral_model_options {
    /// The vision GGUF; NULL: `STEM.mmproj.gguf` next to the model when it exists (text only otherwise).
    pub mmproj: *const c_char,
    /// Load the vision tower (when there is one).
    pub vision: bool,
    /// Worker threads for the whole process (1: none, everything on the calling thread; 0: the CPUs). The first
    /// load that starts a pool decides its size.
    pub n_threads: u32,
    /// Bytes of encoded image features kept for images sent again (LRU).
    pub image_cache_bytes: u64,
}

/// Options of `pixtral_chat_new`; start from `pixtral_chat_options_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pixtral_chat_options {
    /// KV cache size in tokens (a 1024x1024 image is 4160 tokens for Pixtral-12B).
    pub n_ctx: u32,
    /// System prompt, or NULL.
    pub system: *const c_char,
    /// Longest image side before patching (0: the model's); fewer pixels are fewer tokens.
    pub image_max_side: u32,
    /// KV cache in f32 instead of f16 (twice the memory).
    pub kv_f32: bool,
}

/// Options of `pixtral_chat_generate`; start from `pixtral_generate_options_default()`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pixtral_generate_options {
    /// Tokens to generate at most; -1: until end of sequence or a full context.
    pub max_tokens: i32,
    /// 0: greedy.
    pub temperature: f32,
    /// 0: off.
    pub top_k: u32,
    /// 1: off.
    pub top_p: f32,
    /// 0: off.
    pub min_p: f32,
    /// 1: off.
    pub repeat_penalty: f32,
    pub seed: u64,
    /// `n_stop` stop strings (the answer ends where one appears; it is not part of the answer), or NULL.
    pub stop: *const *const c_char,
    pub n_stop: usize,
    /// Log-probabilities of the n likeliest tokens at each step (at most 20); 0: none.
    pub top_logprobs: u32,
}

/// Token counts of an answer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct pixtral_usage {
    /// The whole prompt (the conversation so far), images included.
    pub prompt_tokens: u64,
    /// Of those, found in the KV cache.
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Images of this turn through the vision tower / found in the image cache.
    pub images_encoded: u64,
    pub images_cached: u64,
}

/// Seconds per phase of an answer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct pixtral_timings {
    pub image_encode_s: f64,
    pub prompt_s: f64,
    pub generation_s: f64,
}

/// Called after each generated token with the text safe to show now (`len` bytes, NUL-terminated, possibly
/// empty) and the token id; return false to stop the answer. Runs on the thread that called
/// `pixtral_chat_generate`.
pub type pixtral_token_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, text: *const c_char, len: usize, token: u32) -> bool>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// `s` for C: a NUL inside it written as `\0`, so nothing is cut short.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

fn set_error(msg: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = c_string(msg));
}

fn status_of(e: &Error) -> pixtral_status {
    match e {
        Error::Io { .. } | Error::Gguf(pixtral::gguf::GgufError::Io { .. }) => PIXTRAL_ERR_IO,
        Error::Gguf(_) | Error::Model { .. } | Error::ShapeMismatch { .. } => PIXTRAL_ERR_MODEL,
        Error::Invalid(_) | Error::NonFinite { .. } => PIXTRAL_ERR_INPUT,
        Error::Request(_) | Error::ContextFull { .. } | Error::PromptTooLong { .. } => PIXTRAL_ERR_REQUEST,
        Error::Memory { .. } => PIXTRAL_ERR_MEMORY,
        Error::Cancelled => PIXTRAL_ERR_CANCELLED,
    }
}

/// A call's body: its error (or panic) as a status and this thread's message.
fn guard(f: impl FnOnce() -> Result<(), (pixtral_status, String)>) -> pixtral_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => PIXTRAL_OK,
        Ok(Err((status, msg))) => {
            set_error(&msg);
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            set_error(&format!("internal error: {what}"));
            PIXTRAL_ERR_INTERNAL
        }
    }
}

type Fallible<T> = Result<T, (pixtral_status, String)>;

/// The fields that settle the library's errors (see [`Error::advice`]).
const FIELDS: pixtral::error::SettingNames = pixtral::error::SettingNames {
    ctx_size: "n_ctx (pixtral_chat_options)",
    image_max_side: "image_max_side (pixtral_chat_options)",
    context_shift: None,
    kv_f16: "kv_f32 = false",
};

fn lib(e: Error) -> (pixtral_status, String) {
    let msg = match e.advice(&FIELDS) {
        Some(advice) => format!("{e}: {advice}"),
        None => e.to_string(),
    };
    (status_of(&e), msg)
}

fn arg(msg: impl Into<String>) -> (pixtral_status, String) {
    (PIXTRAL_ERR_ARGUMENT, msg.into())
}

unsafe fn text<'a>(p: *const c_char, what: &str) -> Fallible<&'a str> {
    if p.is_null() {
        return Err(arg(format!("{what} is NULL")));
    }
    CStr::from_ptr(p).to_str().map_err(|e| arg(format!("{what} is not UTF-8: {e}")))
}

unsafe fn handle<'a, T>(p: *mut T, what: &str) -> Fallible<&'a mut T> {
    p.as_mut().ok_or_else(|| arg(format!("{what} is NULL")))
}

unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Fallible<&'a [u8]> {
    if p.is_null() {
        return Err(arg(format!("{what} is NULL")));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// The message of this thread's last failed call ("" when none); valid until this thread's next call.
#[no_mangle]
pub extern "C" fn pixtral_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library's version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn pixtral_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

#[no_mangle]
pub extern "C" fn pixtral_model_options_default() -> pixtral_model_options {
    let d = EngineOptions::default();
    pixtral_model_options {
        mmproj: std::ptr::null(),
        vision: d.vision,
        n_threads: 0,
        image_cache_bytes: d.image_cache_bytes as u64,
    }
}

#[no_mangle]
pub extern "C" fn pixtral_chat_options_default() -> pixtral_chat_options {
    pixtral_chat_options { n_ctx: 4096, system: std::ptr::null(), image_max_side: 0, kv_f32: false }
}

#[no_mangle]
pub extern "C" fn pixtral_generate_options_default() -> pixtral_generate_options {
    let s = SamplerParams::default();
    pixtral_generate_options {
        max_tokens: 256,
        temperature: s.temp,
        top_k: s.top_k as u32,
        top_p: s.top_p,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        seed: 0,
        stop: std::ptr::null(),
        n_stop: 0,
        top_logprobs: 0,
    }
}

/// Load the text GGUF at `path` (and its mmproj, see the options; `options` may be NULL for the defaults) into
/// `*out`. Errors: `PIXTRAL_ERR_IO` (a missing file), `PIXTRAL_ERR_MODEL` (a file that is not a usable model).
#[no_mangle]
pub unsafe extern "C" fn pixtral_model_load(
    path: *const c_char,
    options: *const pixtral_model_options,
    out: *mut *mut pixtral_model,
) -> pixtral_status {
    guard(|| {
        let out = handle(out, "out")?;
        *out = std::ptr::null_mut();
        let path = text(path, "path")?;
        let o = options.as_ref().copied().unwrap_or_else(|| pixtral_model_options_default());
        let mmproj = if o.mmproj.is_null() { None } else { Some(PathBuf::from(text(o.mmproj, "options.mmproj")?)) };
        let threads = match o.n_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        pixtral::runtime::engine::set_threads(threads)
            .map_err(|e| (PIXTRAL_ERR_ARGUMENT, format!("options.n_threads: {e}")))?;
        let opts = EngineOptions {
            mmproj,
            vision: o.vision,
            image_cache_bytes: usize::try_from(o.image_cache_bytes).unwrap_or(usize::MAX),
            ..Default::default()
        };
        let engine = Engine::load(path, &opts).map_err(lib)?;
        *out = Box::into_raw(Box::new(pixtral_model { engine: Arc::new(engine) }));
        Ok(())
    })
}

/// Free a model (NULL: nothing). Chats made from it stay usable: the model goes with the last of them.
#[no_mangle]
pub unsafe extern "C" fn pixtral_model_free(model: *mut pixtral_model) {
    if !model.is_null() {
        drop(Box::from_raw(model));
    }
}

/// Whether the model has a vision tower loaded (images can be added).
#[no_mangle]
pub unsafe extern "C" fn pixtral_model_has_vision(model: *const pixtral_model) -> bool {
    model.as_ref().is_some_and(|m| m.engine.vision.is_some())
}

/// The bytes of token `id` (`*bytes` set to them, valid while the model lives; not NUL-terminated; a byte token may
/// be part of a UTF-8 character), and their number; a control token gives its spelling (`[INST]`). 0 for an id
/// outside the vocabulary or a NULL model.
#[no_mangle]
pub unsafe extern "C" fn pixtral_model_token_piece(
    model: *const pixtral_model,
    id: u32,
    bytes: *mut *const u8,
) -> usize {
    let Some(m) = model.as_ref() else { return 0 };
    let piece = m.engine.model.tokenizer.piece(id);
    if let Some(p) = bytes.as_mut() {
        *p = piece.as_ptr();
    }
    piece.len()
}

/// Tokens in the model's vocabulary (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn pixtral_model_n_vocab(model: *const pixtral_model) -> u32 {
    model.as_ref().map_or(0, |m| m.engine.model.tokenizer.n_vocab() as u32)
}

/// A new chat on `model` (`options` may be NULL for the defaults) into `*out`. Errors: `PIXTRAL_ERR_MEMORY` when
/// the KV cache for `n_ctx` tokens does not fit the memory.
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_new(
    model: *const pixtral_model,
    options: *const pixtral_chat_options,
    out: *mut *mut pixtral_chat,
) -> pixtral_status {
    guard(|| {
        let out = handle(out, "out")?;
        *out = std::ptr::null_mut();
        let model = model.as_ref().ok_or_else(|| arg("model is NULL"))?;
        let o = options.as_ref().copied().unwrap_or_else(|| pixtral_chat_options_default());
        if o.n_ctx == 0 {
            return Err(arg("options.n_ctx is 0"));
        }
        let system = if o.system.is_null() { None } else { Some(text(o.system, "options.system")?.to_string()) };
        let engine = model.engine.clone();
        // SAFETY: the engine is on the heap behind `engine`, which the chat holds until after the session is
        // dropped (field order), so the reference outlives every use.
        let e: &'static Engine = &*Arc::as_ptr(&engine);
        let kv_type =
            if o.kv_f32 { pixtral::model::kv_cache::KvType::F32 } else { pixtral::model::kv_cache::KvType::F16 };
        let ctx = o.n_ctx as usize;
        let image_max_side = (o.image_max_side > 0).then_some(o.image_max_side as usize);
        if e.vision.is_some() {
            e.preprocess_config(image_max_side).map_err(|err| arg(format!("options.image_max_side: {err}")))?;
        }
        let session = e.session(SessionOptions { ctx_size: ctx, kv_type, ..Default::default() }).map_err(lib)?;
        let chat = Chat { session, conv: Conversation::new(system), pending: Vec::new(), image_max_side, ctx, engine };
        *out = Box::into_raw(Box::new(pixtral_chat { cancel: AtomicBool::new(false), chat: chat.into() }));
        Ok(())
    })
}

/// Free a chat (NULL: nothing).
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_free(chat: *mut pixtral_chat) {
    if !chat.is_null() {
        drop(Box::from_raw(chat));
    }
}

/// Append text to the next user message.
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_add_text(chat: *mut pixtral_chat, utf8: *const c_char) -> pixtral_status {
    guard(|| {
        let (chat, _) = chat_of(chat)?;
        chat.pending.push(Part::Text(text(utf8, "text")?.to_string()));
        Ok(())
    })
}

/// Add an image file (PNG, JPEG, WebP, GIF) to the next user message, where it stands among the text. It is read
/// and checked when the message is sent (`pixtral_chat_generate`).
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_add_image_path(chat: *mut pixtral_chat, path: *const c_char) -> pixtral_status {
    guard(|| {
        let (chat, _) = chat_of(chat)?;
        chat.pending.push(Part::Image(ImageSource::Path(text(path, "path")?.into())));
        Ok(())
    })
}

/// Add an encoded image (PNG, JPEG, WebP, GIF: `len` bytes, copied) to the next user message.
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_add_image_bytes(
    chat: *mut pixtral_chat,
    data: *const u8,
    len: usize,
) -> pixtral_status {
    guard(|| {
        let (chat, _) = chat_of(chat)?;
        let bytes = bytes(data, len, "data")?.to_vec();
        chat.pending.push(Part::Image(ImageSource::Encoded { name: "<image bytes>".into(), bytes }));
        Ok(())
    })
}

/// Add raw pixels to the next user message: `height` rows of `width` RGB triples, 8 bits each, no padding
/// (`width * height * 3` bytes, copied).
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_add_image_rgb8(
    chat: *mut pixtral_chat,
    pixels: *const u8,
    width: u32,
    height: u32,
) -> pixtral_status {
    guard(|| {
        let (chat, _) = chat_of(chat)?;
        let (w, h) = (width as usize, height as usize);
        let n = w.checked_mul(h).and_then(|n| n.checked_mul(3)).ok_or_else(|| arg("width * height * 3 overflows"))?;
        let pixels = bytes(pixels, n, "pixels")?.to_vec();
        chat.pending.push(Part::Image(ImageSource::Rgb8 { width: w, height: h, pixels }));
        Ok(())
    })
}

/// Send the user message added so far and answer it into `*out` (free it with `pixtral_result_free`), calling
/// `callback(user_data, …)` after each token (NULL: no callback; `options` NULL: the defaults). The KV cache keeps
/// the conversation: the next call evaluates only the new message. Errors: `PIXTRAL_ERR_ARGUMENT` when nothing was
/// added; `PIXTRAL_ERR_IO`/`PIXTRAL_ERR_INPUT` for an image that cannot be read or decoded; `PIXTRAL_ERR_REQUEST`
/// when the conversation does not fit the context or images were added to a model without vision;
/// `PIXTRAL_ERR_CANCELLED` when cancelled before the answer began. On an error the message is dropped (add it again).
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_generate(
    chat: *mut pixtral_chat,
    options: *const pixtral_generate_options,
    callback: pixtral_token_callback,
    user_data: *mut c_void,
    out: *mut *mut pixtral_result,
) -> pixtral_status {
    guard(|| {
        let out = handle(out, "out")?;
        *out = std::ptr::null_mut();
        let (chat, cancel) = chat_of(chat)?;
        let o = options.as_ref().copied().unwrap_or_else(|| pixtral_generate_options_default());
        let r = answer(chat, cancel, &o, callback, user_data);
        if r.is_err() {
            chat.pending.clear();
        }
        // a cancel is for the call in flight or, raised while idle, the next one: either way it is spent now
        cancel.store(false, Ordering::SeqCst);
        *out = Box::into_raw(Box::new(r?));
        Ok(())
    })
}

/// [`pixtral_chat_generate`]'s work: check the options, send the message, answer it.
unsafe fn answer(
    chat: &mut Chat,
    cancel: &AtomicBool,
    o: &pixtral_generate_options,
    callback: pixtral_token_callback,
    user_data: *mut c_void,
) -> Fallible<pixtral_result> {
    if chat.pending.is_empty() {
        return Err(arg("nothing to answer: add text or an image first"));
    }
    if o.max_tokens < -1 {
        return Err(arg(format!("options.max_tokens is {}: it must be ≥ 0, or -1 for no limit", o.max_tokens)));
    }
    let mut stop = Vec::with_capacity(o.n_stop);
    for i in 0..o.n_stop {
        if o.stop.is_null() {
            return Err(arg("options.stop is NULL but options.n_stop is not 0"));
        }
        stop.push(text(*o.stop.add(i), &format!("options.stop[{i}]"))?.to_string());
    }
    let mut piece = Vec::new();
    let on_token = move |t: &pixtral::TokenEvent| match callback {
        None => true,
        Some(f) => {
            piece.clear();
            piece.extend_from_slice(t.text.as_bytes());
            piece.push(0);
            // SAFETY: the caller's callback and user data, as documented
            unsafe { f(user_data, piece.as_ptr() as *const c_char, t.text.len(), t.id) }
        }
    };
    let mut opts = GenerateOptions {
        max_tokens: if o.max_tokens < 0 { usize::MAX } else { o.max_tokens as usize },
        stop,
        sampling: SamplerParams {
            temp: o.temperature,
            top_k: o.top_k as usize,
            top_p: o.top_p,
            min_p: o.min_p,
            repeat_penalty: o.repeat_penalty,
            seed: o.seed,
            ..Default::default()
        },
        top_logprobs: o.top_logprobs as usize,
        on_token: Some(Box::new(on_token)),
        cancel: Some(cancel),
    };
    opts.check().map_err(|e| arg(format!("options.{e}")))?;
    if cancel.load(Ordering::SeqCst) {
        return Err(lib(Error::Cancelled));
    }
    let content = std::mem::take(&mut chat.pending);
    let e = chat.engine.clone();
    let enc = e.push_user(&mut chat.conv, content, chat.image_max_side, chat.ctx).map_err(lib)?;
    let r = chat.conv.respond(&mut chat.session, &mut opts);
    drop(opts);
    let mut c = match r {
        Ok(c) => c,
        Err(err) => {
            chat.conv.undo();
            return Err(lib(err));
        }
    };
    enc.record(&mut c);
    Ok(pixtral_result { text: c_string(&c.text), stop_string: c.stop_string.as_deref().map(c_string), completion: c })
}

/// Stop the answer `chat` is generating, from any thread (a UI thread, a signal handler's helper): the answer ends
/// with `PIXTRAL_FINISH_CANCELLED` after the current token, or the call fails with `PIXTRAL_ERR_CANCELLED` if it
/// had not begun answering. Called while no answer is in flight, it cancels the next `pixtral_chat_generate`
/// (which then fails at once, its message dropped); every `pixtral_chat_generate` clears it when it returns.
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_cancel(chat: *const pixtral_chat) {
    if let Some(c) = chat.as_ref() {
        c.cancel.store(true, Ordering::SeqCst);
    }
}

/// Forget the conversation (the system prompt stays); the KV cache is reused as far as the next one matches.
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_reset(chat: *mut pixtral_chat) -> pixtral_status {
    guard(|| {
        let (chat, _) = chat_of(chat)?;
        chat.conv.clear();
        chat.pending.clear();
        Ok(())
    })
}

/// Drop the last exchange (the last user message and its answer) and whatever was added since; the next answer
/// reuses the KV cache up to there. Returns false when there was no exchange to drop.
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_undo(chat: *mut pixtral_chat) -> bool {
    match chat_of(chat) {
        Ok((c, _)) => {
            c.pending.clear();
            c.conv.undo()
        }
        Err(_) => false,
    }
}

/// Set the system prompt (NULL or "": none) for the next answer; Mistral's template places it before the last user
/// message, so the KV cache is reused up to the message before it.
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_set_system(chat: *mut pixtral_chat, utf8: *const c_char) -> pixtral_status {
    guard(|| {
        let (chat, _) = chat_of(chat)?;
        let system = if utf8.is_null() { "" } else { text(utf8, "system")? };
        chat.conv.system = (!system.is_empty()).then(|| system.to_string());
        Ok(())
    })
}

/// Tokens the KV cache holds, and its capacity (either pointer may be NULL).
#[no_mangle]
pub unsafe extern "C" fn pixtral_chat_context(chat: *const pixtral_chat, used: *mut u64, capacity: *mut u64) {
    let (u, cap) = match chat_of(chat.cast_mut()) {
        Ok((c, _)) => c.session.context_used(),
        Err(_) => (0, 0),
    };
    if let Some(p) = used.as_mut() {
        *p = u as u64;
    }
    if let Some(p) = capacity.as_mut() {
        *p = cap as u64;
    }
}

/// The answer's text (NUL-terminated UTF-8, without the stop string that ended it); valid until the result is
/// freed. NULL for a NULL result.
#[no_mangle]
pub unsafe extern "C" fn pixtral_result_text(result: *const pixtral_result) -> *const c_char {
    result.as_ref().map_or(std::ptr::null(), |r| r.text.as_ptr())
}

#[no_mangle]
pub unsafe extern "C" fn pixtral_result_finish_reason(result: *const pixtral_result) -> pixtral_finish_reason {
    match result.as_ref().map(|r| r.completion.finish_reason) {
        Some(FinishReason::Stop) | None => pixtral_finish_reason::PIXTRAL_FINISH_STOP,
        Some(FinishReason::Length) => pixtral_finish_reason::PIXTRAL_FINISH_LENGTH,
        Some(FinishReason::Cancelled) => pixtral_finish_reason::PIXTRAL_FINISH_CANCELLED,
    }
}

/// The stop string that ended the answer, or NULL.
#[no_mangle]
pub unsafe extern "C" fn pixtral_result_stop_string(result: *const pixtral_result) -> *const c_char {
    result.as_ref().and_then(|r| r.stop_string.as_ref()).map_or(std::ptr::null(), |s| s.as_ptr())
}

/// Whether the answer stopped because the context was full.
#[no_mangle]
pub unsafe extern "C" fn pixtral_result_context_full(result: *const pixtral_result) -> bool {
    result.as_ref().is_some_and(|r| r.completion.context_full)
}

#[no_mangle]
pub unsafe extern "C" fn pixtral_result_usage(result: *const pixtral_result) -> pixtral_usage {
    result.as_ref().map_or_else(Default::default, |r| {
        let u = &r.completion.usage;
        pixtral_usage {
            prompt_tokens: u.prompt_tokens as u64,
            cached_tokens: u.cached_tokens as u64,
            completion_tokens: u.completion_tokens as u64,
            images_encoded: u.images_encoded as u64,
            images_cached: u.images_cached as u64,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn pixtral_result_timings(result: *const pixtral_result) -> pixtral_timings {
    result.as_ref().map_or_else(Default::default, |r| {
        let t = &r.completion.timings;
        pixtral_timings { image_encode_s: t.image_encode_s, prompt_s: t.prompt_s, generation_s: t.generation_s }
    })
}

/// The generated ids (`*ids` set to them, valid until the result is freed); returns their number.
#[no_mangle]
pub unsafe extern "C" fn pixtral_result_tokens(result: *const pixtral_result, ids: *mut *const u32) -> usize {
    let Some(r) = result.as_ref() else { return 0 };
    if let Some(p) = ids.as_mut() {
        *p = r.completion.tokens.as_ptr();
    }
    r.completion.tokens.len()
}

/// Token `i`'s log-probability (natural log) and its step's likeliest alternatives: up to `cap` of them into
/// `top_ids` / `top_logprobs` (either may be NULL with `cap` 0), likeliest first. Returns how many were written, or
/// 0 when the answer was generated without `top_logprobs` or `i` is out of range.
#[no_mangle]
pub unsafe extern "C" fn pixtral_result_logprobs(
    result: *const pixtral_result,
    i: usize,
    logprob: *mut f32,
    top_ids: *mut u32,
    top_logprobs: *mut f32,
    cap: usize,
) -> usize {
    let Some(lp) = result.as_ref().and_then(|r| r.completion.logprobs.get(i)) else { return 0 };
    if let Some(p) = logprob.as_mut() {
        *p = lp.logprob;
    }
    if top_ids.is_null() || top_logprobs.is_null() {
        return 0;
    }
    let n = lp.top.len().min(cap);
    for (k, &(id, l)) in lp.top.iter().take(n).enumerate() {
        *top_ids.add(k) = id;
        *top_logprobs.add(k) = l;
    }
    n
}

/// Free a result (NULL: nothing).
#[no_mangle]
pub unsafe extern "C" fn pixtral_result_free(result: *mut pixtral_result) {
    if !result.is_null() {
        drop(Box::from_raw(result));
    }
}
