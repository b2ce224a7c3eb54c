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
    /// Tokens to evaluate that do not fit what is left of the context (a session without a ring).
    #[error("the prompt has {prompt} tokens but the context holds {ctx} ({used} already used)")]
    ContextFull { prompt: usize, ctx: usize, used: usize },
    /// A request whose prompt is longer than the whole context, counted before anything is evaluated.
    #[error("the prompt has {tokens} tokens{} but the context holds {ctx}", images_note(.image_tokens))]
    PromptTooLong { tokens: usize, image_tokens: usize, ctx: usize },
    /// A session the memory cannot hold (MemAvailable and the cgroup limit).
    #[error("{what} needs {} MB but only {} MB of memory are available (MemAvailable and the cgroup limit)", need / 1_000_000, available / 1_000_000)]
    Memory { what: String, need: u64, available: u64, kv_f32: bool },
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

fn images_note(image_tokens: &usize) -> String {
    match image_tokens {
        0 => String::new(),
        n => format!(" ({n} for images, which are never cut to fit)"),
    }
}

/// How a front end names the settings an error's advice mentions: the CLI's flags, the C ABI's fields.
#[derive(Debug, Clone, Copy)]
pub struct SettingNames {
    /// The context size (`--ctx-size`, `n_ctx`).
    pub ctx_size: &'static str,
    /// The image budget (`--image-max-side`, `image_max_side`).
    pub image_max_side: &'static str,
    /// The ring cache, where the front end has one (`--context-shift`).
    pub context_shift: Option<&'static str>,
    /// Choosing the f16 KV cache (`--kv-type f16`).
    pub kv_f16: &'static str,
}

impl Error {
    /// What to change so the request fits, in `names`' terms; `None` when no setting helps.
    pub fn advice(&self, names: &SettingNames) -> Option<String> {
        let ctx = names.ctx_size;
        match self {
            Error::PromptTooLong { image_tokens: 0, .. } => Some(format!("use a larger {ctx}")),
            Error::PromptTooLong { .. } => Some(format!("use a larger {ctx}, or a smaller {}", names.image_max_side)),
            Error::ContextFull { .. } => Some(match names.context_shift {
                Some(shift) => format!("use a larger {ctx} or {shift}"),
                None => format!("use a larger {ctx}"),
            }),
            Error::Memory { kv_f32: true, .. } => {
                Some(format!("use a smaller {ctx}, or {} (half the memory)", names.kv_f16))
            }
            Error::Memory { .. } => Some(format!("use a smaller {ctx}")),
            _ => None,
        }
    }
}
