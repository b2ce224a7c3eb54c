//! GGUF reader: a strict parser over the file's bytes (memory-mapped), zero-copy tensor views.
//!
//! Every count and length read from the file is checked against the bytes left before anything is sized
//! from it; every size is computed with checked arithmetic; each failure is a [`GgufError`] naming the key or
//! tensor. Reader, format facts, keys and the writer live in [`pixtral_convert`] (re-exported here) so the
//! converter can verify its output with the same reader.

pub use pixtral_convert::gguf::{keys, GgufWriter, TensorSpec, Value, ValueType, DEFAULT_ALIGNMENT, MAGIC};
pub use pixtral_convert::gguf_reader::{
    GgufError, GgufFile, Header, TensorInfo, MAX_KEY_LEN, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN,
};
