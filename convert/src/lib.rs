//! `pixtral-convert`: Pixtral checkpoints (HF Llava layout or Mistral-native layout) to llama.cpp-compatible
//! GGUF: a text file (`general.architecture = llama`) and an mmproj file (`clip`, projector `pixtral`).
//!
//! Pieces: [`source`] reads safetensors, [`checkpoint`] detects the layout and reads its hyper-parameters,
//! [`mapping`] names each manifest tensor's source tensor and layout fix, [`policy`] picks stored types,
//! [`tokenizer`] builds the GGUF vocabulary, and [`convert`] drives it all, streaming one chunk of rows at a time.
//! What the files hold (configs and their keys, the tensor manifest, the vocabulary type) and how they are written
//! and re-read is `pixtral_gguf`'s, shared with the runtime.

pub mod checkpoint;
pub mod convert;
pub mod error;
pub mod mapping;
pub mod policy;
pub mod quantize;
pub mod source;
pub mod tokenizer;

pub use convert::{convert, Options, OutputSummary, Summary};
pub use error::{ConvertError, Result};
