//! The request path: a loaded model and vision tower ([`Engine`]), a request checked before any pixel is decoded
//! ([`Prepared`]), images encoded once and cached by content, and the answer from a [`Conversation`] whose KV
//! prefix is reused.
//!
//! ```no_run
//! use pixtral::{Engine, EngineOptions, GenerateOptions, Request, Part, ImageSource, Conversation, SessionOptions};
//! let engine = Engine::load("pixtral-12b-q4_0.gguf", &EngineOptions::default())?; // + STEM.mmproj.gguf
//! let mut session = engine.session(SessionOptions::default())?;
//! let mut conv = Conversation::new(None);
//! let req = Request::user(vec![Part::Image(ImageSource::Path("photo.jpg".into())), Part::Text("What is this?".into())]);
//! let answer = engine.complete(&mut session, &mut conv, &req, &mut GenerateOptions::default())?;
//! println!("{} ({})", answer.text, answer.finish_reason.as_str());
//! # Ok::<(), pixtral::Error>(())
//! ```
//!
//! `pixtral run` takes the steps one by one, so everything that can fail does before the weights load:
//! [`Prepared::new`] from the headers → [`Prepared::check_fits`] → [`Prepared::decode`] → load →
//! [`Engine::encode`] → [`Conversation::respond`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::gguf::config::VisionConfig;
use crate::image::{ImageLimits, PreprocessConfig, Preprocessed};
use crate::model::text::Model;
use crate::model::tokenizer::Tokenizer;
use crate::model::vision::{preprocess_config, VisionModel, VitPrecision};
use crate::model::LoadOptions;
use crate::runtime::chat::{encode_chat, image_tokens, Chunk, Message};
use crate::runtime::conversation::Conversation;
use crate::runtime::images::{EncodedImage, ImageCache, ImageHead, ImageKey};
use crate::runtime::request::{Completion, GenerateOptions, ImageSource, Part, Request, Role};
use crate::runtime::session::{Session, SessionOptions};

/// How [`Engine::load`] loads.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The vision GGUF; `None`: `STEM.mmproj.gguf` next to the model when it exists (text only otherwise).
    pub mmproj: Option<PathBuf>,
    /// Load the vision tower (when there is one); `false` for text-only use.
    pub vision: bool,
    pub load: LoadOptions,
    /// Arithmetic of the vision tower's matmuls; bf16 falls back to f32 where the CPU lacks BF16 dot products.
    pub vit_precision: VitPrecision,
    /// Bytes of encoded image features kept for images sent again (LRU). A 1024² image is 4096 patches × 5120
    /// floats = 84 MB at Pixtral-12B's width.
    pub image_cache_bytes: usize,
    /// What an image may ask of us, checked from its header.
    pub limits: ImageLimits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            mmproj: None,
            vision: true,
            load: LoadOptions::default(),
            vit_precision: VitPrecision::F32,
            image_cache_bytes: 256 << 20,
            limits: ImageLimits::default(),
        }
    }
}

/// A text model, its vision tower when it has one, and the cache of encoded images. `Sync`: sessions on any
/// number of threads can share one engine (each session is used by one thread at a time).
pub struct Engine {
    /// The text model's file.
    pub path: PathBuf,
    pub model: Model,
    pub vision: Option<VisionModel>,
    pub limits: ImageLimits,
    images: Mutex<ImageCache>,
}

/// Images of a request through the vision tower: the features in order and what it cost.
pub struct Encoded {
    pub images: Vec<Arc<EncodedImage>>,
    /// Seconds in the vision tower (0 when every image was cached).
    pub seconds: f64,
    pub encoded: usize,
    pub cached: usize,
    /// Patches that went through the tower.
    pub patches: usize,
}

impl Encoded {
    /// Put what encoding cost into the answer it served: image encode seconds, images encoded and cached.
    pub fn record(&self, c: &mut Completion) {
        c.timings.image_encode_s = self.seconds;
        c.usage.images_encoded = self.encoded;
        c.usage.images_cached = self.cached;
    }
}

impl Engine {
    /// Load the text GGUF at `path` and, with `opts.vision`, its mmproj (`opts.mmproj`, else `STEM.mmproj.gguf`
    /// when present). Errors name the file and the key or tensor at fault; an explicit mmproj that is missing, or
    /// one that does not fit the text model, is an error.
    pub fn load(path: impl AsRef<Path>, opts: &EngineOptions) -> Result<Engine> {
        let path = path.as_ref();
        let model = Model::load_with(path, &opts.load)?;
        let vpath = opts.mmproj.clone().unwrap_or_else(|| crate::gguf::mmproj_path(path));
        let vision = if opts.vision && (opts.mmproj.is_some() || vpath.exists()) {
            let mut vm = VisionModel::load_with(&vpath, &opts.load)?;
            crate::model::check_pair(&model.file.header, &vm.file.header)?;
            vm.precision = opts.vit_precision.usable();
            Some(vm)
        } else {
            None
        };
        Ok(Engine::from_parts(path.to_path_buf(), model, vision, opts))
    }

    /// An engine from models already loaded (the CLI opens the headers first, to check a request before the
    /// weights load).
    pub fn from_parts(path: PathBuf, model: Model, vision: Option<VisionModel>, opts: &EngineOptions) -> Engine {
        Engine { path, model, vision, limits: opts.limits, images: Mutex::new(ImageCache::new(opts.image_cache_bytes)) }
    }

    /// A session (KV cache and activations) for this model, refused with both numbers when the memory cannot
    /// hold it.
    pub fn session(&self, opts: SessionOptions) -> Result<Session<'_>> {
        Session::try_new(&self.model, opts)
    }

    /// The preprocessing of this engine's vision tower at `max_side` (see [`Request::image_max_side`]).
    pub fn preprocess_config(&self, max_side: Option<usize>) -> Result<PreprocessConfig> {
        preprocessing(self.vision.as_ref().map(|v| &v.cfg), max_side)
    }

    /// [`Prepared::new`] for this engine.
    pub fn prepare(&self, req: &Request) -> Result<Prepared> {
        Prepared::new(&self.model.tokenizer, self.vision.as_ref().map(|v| &v.cfg), req, &self.limits)
    }

    /// One image read and checked from its header at `max_side` (see [`ImageHead::read`]).
    pub fn inspect(&self, source: &ImageSource, max_side: Option<usize>) -> Result<ImageHead> {
        ImageHead::read(source, &self.preprocess_config(max_side)?, &self.limits)
    }

    /// Encode `heads` (decoded here unless `decoded` has them, index for index) as one packed sequence through
    /// the vision tower; images in the cache are not encoded again, and new ones join it. `progress(layers done,
    /// layers)` as the tower runs.
    pub fn encode(
        &self,
        heads: &[ImageHead],
        decoded: Vec<Option<Preprocessed>>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Encoded> {
        if heads.is_empty() {
            return Ok(Encoded { images: Vec::new(), seconds: 0.0, encoded: 0, cached: 0, patches: 0 });
        }
        let vm = self.vision.as_ref().ok_or_else(|| no_vision(&self.path))?;
        let mut decoded = decoded;
        decoded.resize_with(heads.len(), || None);
        // this request's images by key: from the cache, then from the tower
        let mut have: HashMap<ImageKey, Arc<EncodedImage>> = {
            let mut cache = self.images.lock().unwrap_or_else(|e| e.into_inner());
            heads.iter().filter_map(|h| Some((h.key, cache.get(&h.key)?))).collect()
        };
        // the misses, decoded, in order (an image twice in one request is encoded once)
        let mut todo: Vec<usize> = Vec::new();
        let mut pre = Vec::new();
        for (i, h) in heads.iter().enumerate() {
            if have.contains_key(&h.key) || todo.iter().any(|&j| heads[j].key == h.key) {
                continue;
            }
            pre.push(match decoded[i].take() {
                Some(p) => p,
                None => h.decode(&self.limits)?,
            });
            todo.push(i);
        }
        let t0 = Instant::now();
        let patches: usize = pre.iter().map(|p| p.n_patches()).sum();
        if !todo.is_empty() {
            let mut embeds = vm.encode_with_progress(&pre, progress);
            let one = todo.len() == 1;
            let mut cache = self.images.lock().unwrap_or_else(|e| e.into_inner());
            let mut row = 0;
            for (&i, p) in todo.iter().zip(&pre) {
                let n = p.n_patches() * vm.text_dim;
                let h = &heads[i];
                let img = Arc::new(EncodedImage {
                    path: h.path.clone(),
                    grid_w: h.grid_w,
                    grid_h: h.grid_h,
                    // one image keeps the tower's buffer; several are cut from it
                    embeds: if one { std::mem::take(&mut embeds) } else { embeds[row..row + n].to_vec() },
                    key: h.key,
                });
                row += n;
                cache.insert(img.clone());
                have.insert(h.key, img);
            }
        }
        let seconds = if todo.is_empty() { 0.0 } else { t0.elapsed().as_secs_f64() };
        let images = heads.iter().map(|h| have[&h.key].clone()).collect();
        let encoded = todo.len();
        Ok(Encoded { images, seconds, encoded, cached: heads.len() - encoded, patches })
    }

    /// Add a user message of `content` to `conv`: its images read and checked from their headers, the
    /// conversation counted against a context of `ctx` tokens (an error, and `conv` unchanged, when it does not
    /// fit), then the images encoded (the cache first). The next [`Conversation::respond`] answers it.
    pub fn push_user(
        &self,
        conv: &mut Conversation,
        content: Vec<Part>,
        image_max_side: Option<usize>,
        ctx: usize,
    ) -> Result<Encoded> {
        let req = Request {
            messages: vec![crate::runtime::request::RequestMessage::user(content)],
            image_max_side,
            raw: false,
        };
        let mut p = self.prepare(&req)?;
        let message = p.messages.pop().expect("one message");
        let mut grown = conv.messages().to_vec();
        grown.push(message.clone());
        // the whole conversation with the new message must fit
        p.ids = prompt_ids(&self.model.tokenizer, conv.raw, conv.system.as_deref(), &grown)?;
        p.check_fits(ctx)?;
        let enc = self.encode(&p.images, Vec::new(), &mut |_, _| {})?;
        conv.push(message, enc.images.clone())?;
        Ok(enc)
    }

    /// Images held by the cache of encoded images, and their bytes.
    pub fn image_cache_usage(&self) -> (usize, usize) {
        self.images.lock().unwrap_or_else(|e| e.into_inner()).usage()
    }

    /// One request, end to end: checked ([`Prepared::new`], and against `session`'s context) before any pixel is
    /// decoded; images encoded (or found in the cache); then `conv` takes the request's messages and answers the
    /// last one, reusing the KV prefix `session` already holds (see [`Conversation::respond`]). `conv` ends with the
    /// answer; on an error it holds the request's messages without one.
    pub fn complete(
        &self,
        session: &mut Session,
        conv: &mut Conversation,
        req: &Request,
        opts: &mut GenerateOptions,
    ) -> Result<Completion> {
        let prepared = self.prepare(req)?;
        prepared.check_fits(session.context_used().1)?;
        let mut enc = self.encode(&prepared.images, Vec::new(), &mut |_, _| {})?;
        let (raw, system, messages) = (prepared.raw, prepared.system, prepared.messages);
        conv.replace(raw, system, messages, std::mem::take(&mut enc.images));
        let mut c = conv.respond(session, opts)?;
        enc.record(&mut c);
        Ok(c)
    }
}

/// The most worker threads [`set_threads`] takes: 4 × the CPUs the OS offers, at least 4. More only adds
/// contention, and a typo (`-t 100000`) would otherwise create every one of them.
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get()).max(1)
}

/// Threads for the parallel parts, process-wide: 1 runs everything on the calling thread (no worker thread is
/// ever created); `n` > 1 builds a pool of `n` workers, once (the first call that builds it decides; later calls
/// keep it). Returns the threads in use. Errors ([`Error::Request`]) above [`max_threads`].
pub fn set_threads(n: usize) -> Result<usize> {
    let max = max_threads();
    if n > max {
        return Err(Error::Request(format!(
            "{n} threads: more than 4 × the {} CPUs this machine offers (at most {max})",
            max / 4
        )));
    }
    if n <= 1 {
        crate::ops::set_serial(true);
        return Ok(1);
    }
    crate::ops::set_serial(false);
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    Ok(rayon::current_num_threads())
}

fn no_vision(path: &Path) -> Error {
    Error::Request(format!(
        "{} has no vision tower loaded: pass its mmproj (STEM.mmproj.gguf next to it, or --mmproj), or convert the \
         checkpoint with its vision tower",
        path.display()
    ))
}

/// Preprocessing at `max_side` for the vision tower `vision`: at least the patch size (an [`Error::Request`]
/// below it), at most the model's side; an [`Error::Request`] without a vision tower.
pub fn preprocessing(vision: Option<&VisionConfig>, max_side: Option<usize>) -> Result<PreprocessConfig> {
    let v = vision.ok_or_else(|| Error::Request("images need a vision tower (mmproj), and none is loaded".into()))?;
    if let Some(s) = max_side.filter(|&s| s < v.patch_size) {
        return Err(Error::Request(format!(
            "an image budget (longest side) of {s} px is below the model's patch size ({} px)",
            v.patch_size
        )));
    }
    Ok(preprocess_config(v, max_side))
}

/// A request as the model will see it, from the headers only: the messages in the template's terms, each image
/// read and checked ([`ImageHead`]), the prompt's ids. Nothing decoded, no weight touched.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub raw: bool,
    /// The system messages, joined by two newlines.
    pub system: Option<String>,
    pub messages: Vec<Message>,
    /// The images in order of appearance.
    pub images: Vec<ImageHead>,
    /// The prompt's ids.
    pub ids: Vec<u32>,
    /// Tokens at the start kept by a ring cache (`--context-shift`) by default: BOS, `[INST]` and the system part.
    pub keep: usize,
    /// Tokens through the end of the last image (0 without images): a ring must keep at least these, so an
    /// image is never cut.
    pub image_end: usize,
}

impl Prepared {
    /// Check `req` against the tokenizer and vision config (from the headers) and count its tokens. Errors
    /// ([`Error::Request`] for the request's own faults; image errors name the image): images without a vision
    /// tower, `image_max_side` below the patch size, an image in an assistant or system message, a conversation
    /// that does not end with a user message, an unreadable or oversized image.
    pub fn new(tok: &Tokenizer, vision: Option<&VisionConfig>, req: &Request, lim: &ImageLimits) -> Result<Prepared> {
        let cfg = if req.n_images() > 0 { Some(preprocessing(vision, req.image_max_side)?) } else { None };
        let mut system: Vec<&str> = Vec::new();
        let (mut messages, mut images) = (Vec::new(), Vec::new());
        for (i, m) in req.messages.iter().enumerate() {
            let mut content = Vec::with_capacity(m.content.len());
            for p in &m.content {
                match (m.role, p) {
                    (Role::System, Part::Text(t)) => system.push(t),
                    (_, Part::Text(t)) => content.push(Chunk::Text(t.clone())),
                    (Role::User, Part::Image(src)) => {
                        let h = ImageHead::read(src, cfg.as_ref().expect("images counted above"), lim)?;
                        content.push(Chunk::Image { grid_w: h.grid_w, grid_h: h.grid_h });
                        images.push(h);
                    }
                    (role, Part::Image(_)) => {
                        return Err(Error::Request(format!("message {i}: a {role:?} message cannot hold an image")))
                    }
                }
            }
            match m.role {
                Role::System => {}
                Role::User => messages.push(Message::user_chunks(content)),
                Role::Assistant => messages.push(Message { role: crate::runtime::chat::Role::Assistant, content }),
            }
        }
        let system = (!system.is_empty()).then(|| system.join("\n\n"));
        if req.raw && (messages.len() != 1 || system.is_some()) {
            return Err(Error::Request(
                "a raw prompt (no chat template) is one user message, without a system part".into(),
            ));
        }
        let ids = prompt_ids(tok, req.raw, system.as_deref(), &messages)?;
        // the sink kept by a ring: BOS, [INST] and the system part
        let keep = match (&system, req.raw) {
            (Some(s), false) => 2 + tok.encode(&format!("{s}\n\n")).len(),
            _ => 1,
        };
        let image_end =
            tok.control_id("[IMG_END]").and_then(|e| ids.iter().rposition(|&t| t == e)).map_or(0, |i| i + 1);
        Ok(Prepared { raw: req.raw, system, messages, images, ids, keep, image_end })
    }

    /// Tokens of the images.
    pub fn image_tokens(&self) -> usize {
        self.images.iter().map(|h| h.n_tokens()).sum()
    }

    /// The prompt must fit a context of `ctx` tokens whole: images are never cut to fit.
    pub fn check_fits(&self, ctx: usize) -> Result<()> {
        if self.ids.len() <= ctx {
            return Ok(());
        }
        Err(Error::PromptTooLong { tokens: self.ids.len(), image_tokens: self.image_tokens(), ctx })
    }

    /// Decode and preprocess every image (before the weights load, a file whose header is fine but whose data is
    /// not fails in milliseconds); give the result to [`Engine::encode`].
    pub fn decode(&self, lim: &ImageLimits) -> Result<Vec<Option<Preprocessed>>> {
        self.images.iter().map(|h| h.decode(lim).map(Some)).collect()
    }
}

/// BOS and the message's chunks as they are (no template).
fn raw_ids(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
    let mut ids = vec![tok.bos];
    for c in messages.iter().flat_map(|m| &m.content) {
        match c {
            Chunk::Text(t) => ids.extend(tok.encode(t)),
            Chunk::Image { grid_w, grid_h } => ids.extend(image_tokens(tok, *grid_w, *grid_h)?),
            Chunk::Tokens(t) => ids.extend_from_slice(t),
        }
    }
    Ok(ids)
}

/// The ids of `messages` as [`Prepared`] builds them: raw, or the v3 template.
pub(crate) fn prompt_ids(tok: &Tokenizer, raw: bool, system: Option<&str>, messages: &[Message]) -> Result<Vec<u32>> {
    if raw {
        raw_ids(tok, messages)
    } else {
        encode_chat(tok, system, messages)
    }
}
