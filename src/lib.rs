//! `pixtral`: a CPU-first runtime for Pixtral 12B (Mistral AI's vision-language model).
//!
//! Layers, top to bottom, each importing only from those below it: front ends (the `pixtral` CLI, this library's
//! API) → [`runtime`] (session, conversation, sampler, stop strings, chat template) → [`model`] (one file per
//! model part: [`model::text`], the decoder with its tokenizer and KV cache, and [`model::vision`], the ViT and
//! adapter) → [`ops`] (weight views, the threaded matmul, element-wise ops) → `pixtral_quant` kernels; beside
//! them the file layer ([`gguf`], [`mmap`], the configs and their GGUF keys in [`convert::config`]).
//!
//! ```no_run
//! use pixtral::{Model, Session, SessionOptions, Sampler, SamplerParams, chat::{encode_chat, Message}};
//! let model = Model::load("pixtral-12b-q4_0.gguf")?;           // shareable across threads
//! let mut session = Session::new(&model, SessionOptions::default());
//! let prompt = encode_chat(&model.tokenizer, None, &[Message::user("Hello!")])?;
//! let mut sampler = Sampler::new(SamplerParams { seed: 42, ..Default::default() });
//! let answer = session.generate(&prompt, &mut sampler, 256, None, |piece| { print!("{piece}"); true })?;
//! # Ok::<(), pixtral::Error>(())
//! ```

pub mod bench;
pub mod cost;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod gguf;
pub mod image;
pub mod mmap;
pub mod model;
pub mod npy;
pub mod ops;
pub mod runtime;

pub use error::{Error, Result};
pub use model::text::Model;
pub use model::LoadOptions;
pub use pixtral_convert as convert;
pub use pixtral_quant as quant;
pub use runtime::chat;
pub use runtime::conversation::{Conversation, EncodedImage, Reply};
pub use runtime::sampler::{Sampler, SamplerParams};
pub use runtime::session::{FinishReason, Generation, Session, SessionOptions};
pub use runtime::stop::StopStrings;
