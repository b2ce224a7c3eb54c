//! `pixtral-convert`: Pixtral checkpoints (HF Llava layout or Mistral-native layout) to llama.cpp-compatible
//! GGUF: a text file (`general.architecture = llama`) and an mmproj file (`clip`, projector `pixtral`).
//!
//! Pieces: [`source`] reads safetensors, [`config`] reads hyper-parameters and detects the layout,
//! [`manifest`] lists every output tensor, [`mapping`] names each one's source tensor and layout fix,
//! [`policy`] picks stored types, [`tokenizer`] builds the GGUF vocabulary, [`gguf`] writes the file, and
//! [`convert`] drives it all, streaming one chunk of rows at a time.

pub mod config;
pub mod convert;
pub mod error;
pub mod gguf;
pub mod gguf_reader;
pub mod manifest;
pub mod mapping;
pub mod mmap;
pub mod os;
pub mod policy;
pub mod source;
pub mod tokenizer;

pub use convert::{convert, mmproj_path, Options, OutputSummary, Summary};
pub use error::{ConvertError, Result};
