//! `pixtral-gguf`: Pixtral's file layer, what the runtime reads at run time and the converter writes.
//!
//! Pieces: [`format`] (format facts, the [`keys`] every file is read and written by, the streaming
//! [`GgufWriter`]), [`reader`] (the strict parser: [`Header`] over bytes, [`GgufFile`] over a [`mmap::Map`],
//! zero-copy tensor views), [`config`] (`TextConfig` / `VisionConfig` with `to_gguf` / `from_gguf` side by side),
//! [`manifest`] (every tensor of both files: name, shape, role), [`vocab`] (the vocabulary a text GGUF carries),
//! [`mmap`] and [`os`] (free disk space, available memory, the SIGINT/SIGTERM flag). No checkpoint reading here:
//! that is `pixtral-convert`, which depends on this crate, as the runtime (`pixtral`) does.

pub mod config;
pub mod format;
pub mod manifest;
pub mod mmap;
pub mod os;
pub mod reader;
pub mod vocab;

use std::path::{Path, PathBuf};

pub use format::{keys, GgufWriter, TensorSpec, Value, ValueType, WriteError, DEFAULT_ALIGNMENT, MAGIC, VERSION};
pub use reader::{GgufError, GgufFile, Header, TensorInfo, MAX_KEY_LEN, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN};

/// `OUT.gguf` → `OUT.mmproj.gguf` (same stem, next to it): where the converter writes a text file's mmproj and
/// where the runtime looks for it.
pub fn mmproj_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".gguf").unwrap_or(&name);
    out.with_file_name(format!("{stem}.mmproj.gguf"))
}
