//! `pixtral`: a CPU-first runtime for Pixtral 12B (Mistral AI's vision-language model).
//!
//! Layers, top to bottom, each importing only from those below it: front ends (the `pixtral` CLI, this library's
//! API) → [`runtime`] (session, conversation, sampler, stop strings, chat template) → [`model`] (one file per
//! model part: [`model::text`], the decoder with its tokenizer and KV cache, and [`model::vision`], the ViT and
//! adapter) → [`ops`] (weight views, the threaded matmul, element-wise ops) → `pixtral_quant` kernels; beside
//! them the file layer ([`gguf`]: the GGUF reader and writer, the configs and their GGUF keys in [`gguf::config`],
//! the tensor manifest, [`mmap`]); [`convert`] is the checkpoint converter, for the CLI's `pixtral convert`.
//!
//! ```no_run
//! use pixtral::{Conversation, Engine, EngineOptions, GenerateOptions, ImageSource, Part, Request, SamplerParams, SessionOptions};
//!
//! let engine = Engine::load("pixtral-12b-q4_0.gguf", &EngineOptions::default())?; // + its .mmproj.gguf; Sync
//! let mut session = engine.session(SessionOptions { ctx_size: 8192, ..Default::default() })?;
//! let mut conv = Conversation::new(None);
//! let req = Request::user(vec![
//!     Part::Image(ImageSource::Path("photo.jpg".into())), // or Encoded { name, bytes }, or Rgb8 { width, height, pixels }
//!     Part::Text("What is in this image?".into()),
//! ]);
//! let cancel = std::sync::atomic::AtomicBool::new(false); // raise it from any thread to stop
//! let mut opts = GenerateOptions {
//!     max_tokens: 256,
//!     stop: vec!["\n\n".into()],
//!     sampling: SamplerParams { temp: 0.7, seed: 42, ..Default::default() },
//!     top_logprobs: 5,
//!     on_token: Some(Box::new(|t: &pixtral::TokenEvent| { print!("{}", t.text); true })),
//!     cancel: Some(&cancel),
//! };
//! let answer = engine.complete(&mut session, &mut conv, &req, &mut opts)?;
//! println!("\n{} ({} prompt tokens, {} from the KV cache)", answer.finish_reason.as_str(),
//!          answer.usage.prompt_tokens, answer.usage.cached_tokens);
//! # Ok::<(), pixtral::Error>(())
//! ```

pub mod bench;
pub mod cost;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod image;
pub mod model;
pub mod npy;
pub mod ops;
pub mod runtime;
#[cfg(feature = "server")]
pub mod server;

pub use error::{Error, Result};
pub use model::text::Model;
pub use model::LoadOptions;
pub use pixtral_convert as convert;
/// The file layer: GGUF reader and writer, keys, configs, manifest, vocabulary, mmap, OS helpers.
pub use pixtral_gguf as gguf;
pub use pixtral_gguf::mmap;
pub use pixtral_quant as quant;
pub use runtime::chat;
pub use runtime::conversation::Conversation;
pub use runtime::engine::{Engine, EngineOptions, Prepared};
pub use runtime::images::{EncodedImage, ImageHead, ImageKey};
pub use runtime::request::{
    Completion, FinishReason, GenerateOptions, ImageSource, Part, Request, RequestMessage, Role, TokenEvent,
    TokenLogprobs,
};
pub use runtime::sampler::{Sampler, SamplerParams};
pub use runtime::session::{Generation, Session, SessionOptions};
pub use runtime::stop::StopStrings;
