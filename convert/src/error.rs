use std::path::PathBuf;

/// Everything that can stop a conversion. Each variant names the file, field or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {msg}")]
    Input { path: PathBuf, msg: String },
    #[error("{path}: field {field:?}: {msg}")]
    Field { path: PathBuf, field: String, msg: String },
    #[error("{path}: tensor {tensor:?}: {msg}")]
    Tensor { path: PathBuf, tensor: String, msg: String },
    #[error("tensor {tensor:?} is missing from the checkpoint in {dir} (expected shape {shape:?})")]
    MissingTensor { dir: PathBuf, tensor: String, shape: Vec<usize> },
    #[error("{path}: tensor {tensor:?} has shape {got:?}, expected {want:?} from the config")]
    ShapeMismatch { path: PathBuf, tensor: String, want: Vec<usize>, got: Vec<usize> },
    #[error("{path}: tensor {tensor:?} has a non-finite value ({value}) at element {index}")]
    NonFinite { path: PathBuf, tensor: String, index: usize, value: f32 },
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists { path: PathBuf },
    #[error("not enough disk space in {dir}: {need} bytes needed, {available} available")]
    DiskSpace { dir: PathBuf, need: u64, available: u64 },
    #[error("{msg}: the output needs {need} bytes, {written} were written, {available} bytes are free there; nothing was kept")]
    WriteFailed { path: PathBuf, need: u64, written: u64, available: u64, msg: String },
    #[error("interrupted; no output was written")]
    Interrupted,
    #[error("{0}")]
    Usage(String),
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: pixtral_gguf::WriteError },
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ConvertError {
    let path = path.into();
    move |source| ConvertError::Io { path, source }
}
