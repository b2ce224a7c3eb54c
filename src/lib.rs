//! `pixtral`: a CPU-first runtime for Pixtral 12B (Mistral AI's vision-language model).
//!
//! Layers, top to bottom: front ends (`pixtral` CLI, this library's API) → model (vision, adapter,
//! decoder) → ops (`pixtral_quant` kernels) → the GGUF file, memory-mapped ([`gguf`]).

pub mod gguf;
pub mod mmap;

pub use pixtral_convert as convert;
pub use pixtral_quant as quant;
