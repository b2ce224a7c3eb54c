//! The library's error type: every variant names what it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A file that parses but does not describe a usable model: the key or tensor, and why.
    #[error("{what}: {msg}")]
    Model { what: String, msg: String },
    #[error("tensor {name}: shape {got:?}, expected {want:?} from the metadata")]
    ShapeMismatch { name: String, want: Vec<u64>, got: Vec<u64> },
    #[error("the prompt has {prompt} tokens but the context holds {ctx} ({used} already used); use a larger --ctx-size or --context-shift")]
    ContextFull { prompt: usize, ctx: usize, used: usize },
    #[error("{what} needs {} MB but only {} MB of memory are available (MemAvailable and the cgroup limit); {hint}", need / 1_000_000, available / 1_000_000)]
    Memory { what: String, need: u64, available: u64, hint: String },
    #[error("non-finite logits at decode step {step} (token position {pos})")]
    NonFinite { step: usize, pos: usize },
    #[error("cancelled")]
    Cancelled,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Bad input data: a file or buffer that is not what it claims (names it).
    #[error("{0}")]
    Invalid(String),
    /// A request that cannot be served as given: a prompt longer than the context, images without a vision
    /// tower, `<image>` markers that do not match the images, an image budget below the patch size.
    #[error("{0}")]
    Request(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
