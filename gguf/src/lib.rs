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

/// The name llama.cpp gives a `general.file_type` value (`LLAMA_FTYPE_MOSTLY_*` in its `llama.h`, without the
/// prefix: "Q4_K_M", "IQ4_XS", …; 0 and 1 are "F32" and "F16"); `None` for an id it does not define.
pub fn llama_ftype_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 42] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "",
        "",
        "",
        "Q8_0",
        "Q5_0",
        "Q5_1",
        "Q2_K",
        "Q3_K_S",
        "Q3_K_M",
        "Q3_K_L",
        "Q4_K_S",
        "Q4_K_M",
        "Q5_K_S",
        "Q5_K_M",
        "Q6_K",
        "IQ2_XXS",
        "IQ2_XS",
        "Q2_K_S",
        "IQ3_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ3_M",
        "IQ2_S",
        "IQ2_M",
        "IQ4_XS",
        "IQ1_M",
        "BF16",
        "",
        "",
        "",
        "TQ1_0",
        "TQ2_0",
        "MXFP4_MOE",
        "NVFP4",
        "Q1_0",
        "Q2_0",
    ];
    NAMES.get(id as usize).copied().filter(|n| !n.is_empty())
}
