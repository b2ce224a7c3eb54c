//! GGUF v3 format definitions (magic, keys, value types) and a streaming writer.
//!
//! Why our own module and not `gguf-rs`: we need zero-copy tensor views over an mmap, a streaming writer
//! (header first, then tensor data in order, never the whole file in memory) and every validation of the
//! foundation issue as a typed error; the crate offers a reader that copies and no writer. The reader is
//! [`crate::reader`]; the converter is the writer's user, and tests write handcrafted files with it.
//!
//! Layout (little-endian): magic `GGUF`, u32 version, u64 n_tensors, u64 n_kv, the key/value pairs, the
//! tensor infos (name, u32 n_dims, u64 ne[n_dims] with `ne[0]` fastest, u32 ggml type, u64 offset relative
//! to the data section), zero padding to `general.alignment`, then the data section; each tensor's data
//! starts at an aligned offset.

use std::io::{self, Write};

use pixtral_quant::GgmlType;

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// GGUF metadata keys: every key the project reads or writes is spelled here and only here
/// (llama.cpp's `gguf-py/gguf/constants.py` names).
pub mod keys {
    pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
    pub const GENERAL_NAME: &str = "general.name";
    pub const GENERAL_SIZE_LABEL: &str = "general.size_label";
    pub const GENERAL_TYPE: &str = "general.type";
    pub const GENERAL_ALIGNMENT: &str = "general.alignment";
    pub const GENERAL_FILE_TYPE: &str = "general.file_type";
    pub const GENERAL_QUANTIZATION_VERSION: &str = "general.quantization_version";

    // text model, `{arch}` = "llama"
    pub const LLAMA_CONTEXT_LENGTH: &str = "llama.context_length";
    pub const LLAMA_EMBEDDING_LENGTH: &str = "llama.embedding_length";
    pub const LLAMA_BLOCK_COUNT: &str = "llama.block_count";
    pub const LLAMA_FEED_FORWARD_LENGTH: &str = "llama.feed_forward_length";
    pub const LLAMA_HEAD_COUNT: &str = "llama.attention.head_count";
    pub const LLAMA_HEAD_COUNT_KV: &str = "llama.attention.head_count_kv";
    pub const LLAMA_KEY_LENGTH: &str = "llama.attention.key_length";
    pub const LLAMA_VALUE_LENGTH: &str = "llama.attention.value_length";
    pub const LLAMA_RMS_EPS: &str = "llama.attention.layer_norm_rms_epsilon";
    pub const LLAMA_ROPE_DIMENSION_COUNT: &str = "llama.rope.dimension_count";
    pub const LLAMA_ROPE_FREQ_BASE: &str = "llama.rope.freq_base";
    pub const LLAMA_VOCAB_SIZE: &str = "llama.vocab_size";

    // tokenizer
    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
    pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
    pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
    pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    pub const TOKENIZER_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
    pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    pub const TOKENIZER_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
    pub const TOKENIZER_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
    pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
    /// Ours (llama.cpp hard-codes the Tekken regex behind `pre = tekken`): the split pattern, for readers
    /// that build the tokenizer from metadata alone.
    pub const PIXTRAL_TOKENIZER_PATTERN: &str = "pixtral.tokenizer.pattern";
    /// Ours, in both files: a digest of the checkpoint they were converted from (`convert::fingerprint`), so a
    /// text file and an mmproj of different checkpoints are told apart at load.
    pub const PIXTRAL_CHECKPOINT_FINGERPRINT: &str = "pixtral.checkpoint.fingerprint";

    // mmproj, `general.architecture` = "clip"
    pub const CLIP_HAS_VISION_ENCODER: &str = "clip.has_vision_encoder";
    pub const CLIP_PROJECTOR_TYPE: &str = "clip.projector_type";
    pub const CLIP_USE_SILU: &str = "clip.use_silu";
    pub const CLIP_USE_GELU: &str = "clip.use_gelu";
    pub const CLIP_VISION_IMAGE_SIZE: &str = "clip.vision.image_size";
    pub const CLIP_VISION_PATCH_SIZE: &str = "clip.vision.patch_size";
    pub const CLIP_VISION_EMBEDDING_LENGTH: &str = "clip.vision.embedding_length";
    pub const CLIP_VISION_FEED_FORWARD_LENGTH: &str = "clip.vision.feed_forward_length";
    pub const CLIP_VISION_PROJECTION_DIM: &str = "clip.vision.projection_dim";
    pub const CLIP_VISION_BLOCK_COUNT: &str = "clip.vision.block_count";
    pub const CLIP_VISION_IMAGE_MEAN: &str = "clip.vision.image_mean";
    pub const CLIP_VISION_IMAGE_STD: &str = "clip.vision.image_std";
    pub const CLIP_VISION_HEAD_COUNT: &str = "clip.vision.attention.head_count";
    pub const CLIP_VISION_LAYER_NORM_EPS: &str = "clip.vision.attention.layer_norm_epsilon";
    /// The vision RoPE θ, under the key llama.cpp's converter uses for Mistral-format Pixtral (`{arch}.rope.freq_base`
    /// with arch `clip`); its HF path writes none and llama.cpp then assumes 10000.
    pub const CLIP_ROPE_FREQ_BASE: &str = "clip.rope.freq_base";
    /// Ours: the image token ids (llama.cpp looks them up by spelling in the text vocabulary).
    pub const PIXTRAL_IMG_TOKEN_ID: &str = "pixtral.image_token_id";
    pub const PIXTRAL_IMG_BREAK_TOKEN_ID: &str = "pixtral.image_break_token_id";
    pub const PIXTRAL_IMG_END_TOKEN_ID: &str = "pixtral.image_end_token_id";
}

/// Metadata value type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Smallest encoding of one value of this type (a string is at least its u64 length).
    pub fn min_bytes(self) -> usize {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value. Arrays are homogeneous and never nested (`elem` is not `Array`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    pub fn str_array<S: AsRef<str>>(items: &[S]) -> Value {
        Value::Array(ValueType::String, items.iter().map(|s| Value::String(s.as_ref().to_owned())).collect())
    }

    pub fn f32_array(items: &[f32]) -> Value {
        Value::Array(ValueType::F32, items.iter().map(|x| Value::F32(*x)).collect())
    }

    pub fn i32_array(items: &[i32]) -> Value {
        Value::Array(ValueType::I32, items.iter().map(|x| Value::I32(*x)).collect())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.push(*v as u8),
            Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(*v as u8),
            Value::String(s) => encode_str(s, out),
            Value::Array(elem, items) => {
                out.extend_from_slice(&(*elem as u32).to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for it in items {
                    it.encode(out);
                }
            }
            Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

fn encode_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// What the writer needs to know of a tensor before its data: name, type and ggml shape (`ne[0]` fastest).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
}

impl TensorSpec {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Bytes of the tensor's data; `None` if `ne[0]` is not a whole number of blocks.
    pub fn n_bytes(&self) -> Option<u64> {
        let ne0 = *self.ne.first()?;
        let row = self.ty.row_bytes(usize::try_from(ne0).ok()?)? as u64;
        row.checked_mul(self.ne[1..].iter().product())
    }
}

/// Why a writer refused its input: these are programming errors of the caller, reported not panicked.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("tensor {name}: {msg}")]
    Tensor { name: String, msg: String },
    #[error("metadata key {key:?}: {msg}")]
    Metadata { key: String, msg: String },
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Streaming GGUF writer: `new` writes the header, the metadata and the tensor infos (offsets are computed
/// from the specs), then `write_data` takes each tensor's bytes in spec order, in as many pieces as the
/// caller likes, padding between tensors; `finish` checks that every byte promised was written.
/// The bytes depend only on the inputs (deterministic).
pub struct GgufWriter<W: Write> {
    w: W,
    alignment: u64,
    sizes: Vec<u64>,
    names: Vec<String>,
    current: usize,
    written_in_current: u64,
}

fn pad_len(pos: u64, alignment: u64) -> u64 {
    (alignment - pos % alignment) % alignment
}

impl<W: Write> GgufWriter<W> {
    pub fn new(mut w: W, metadata: &[(String, Value)], tensors: &[TensorSpec]) -> Result<Self, WriteError> {
        let mut alignment = DEFAULT_ALIGNMENT as u64;
        let mut seen = std::collections::HashSet::new();
        for (k, v) in metadata {
            if k.is_empty() || !seen.insert(k.as_str()) {
                return Err(WriteError::Metadata { key: k.clone(), msg: "empty or duplicate key".into() });
            }
            if let Value::Array(elem, items) = v {
                if *elem == ValueType::Array || items.iter().any(|i| i.value_type() != *elem) {
                    return Err(WriteError::Metadata {
                        key: k.clone(),
                        msg: "array must be flat and homogeneous".into(),
                    });
                }
            }
            if k == keys::GENERAL_ALIGNMENT {
                match v {
                    Value::U32(a) if a.is_power_of_two() => alignment = *a as u64,
                    _ => return Err(WriteError::Metadata { key: k.clone(), msg: "must be a u32 power of two".into() }),
                }
            }
        }
        let mut head = Vec::with_capacity(1 << 16);
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            encode_str(k, &mut head);
            head.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
            v.encode(&mut head);
        }
        let mut sizes = Vec::with_capacity(tensors.len());
        let mut offset = 0u64;
        for t in tensors {
            let nbytes = t.n_bytes().ok_or_else(|| WriteError::Tensor {
                name: t.name.clone(),
                msg: format!("shape {:?} is not whole {} blocks", t.ne, t.ty),
            })?;
            encode_str(&t.name, &mut head);
            head.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            sizes.push(nbytes);
            offset += nbytes;
            offset += pad_len(offset, alignment);
        }
        let pad = pad_len(head.len() as u64, alignment);
        head.resize(head.len() + pad as usize, 0);
        w.write_all(&head)?;
        Ok(GgufWriter {
            w,
            alignment,
            sizes,
            names: tensors.iter().map(|t| t.name.clone()).collect(),
            current: 0,
            written_in_current: 0,
        })
    }

    /// Append the next bytes of the current tensor. A piece may not cross into the next tensor.
    pub fn write_data(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let Some(&size) = self.sizes.get(self.current) else {
            return Err(WriteError::Data(format!("{} bytes written after the last tensor", bytes.len())));
        };
        if self.written_in_current + bytes.len() as u64 > size {
            return Err(WriteError::Tensor {
                name: self.names[self.current].clone(),
                msg: format!("{} bytes written, {size} expected", self.written_in_current + bytes.len() as u64),
            });
        }
        self.w.write_all(bytes)?;
        self.written_in_current += bytes.len() as u64;
        if self.written_in_current == size {
            let pad = pad_len(size, self.alignment) as usize;
            self.w.write_all(&[0u8; 4096][..pad % 4096])?;
            for _ in 0..pad / 4096 {
                self.w.write_all(&[0u8; 4096])?; // alignments above 4 KiB
            }
            self.current += 1;
            self.written_in_current = 0;
        }
        Ok(())
    }

    /// Check that all tensors are complete and hand back the sink (flushed).
    pub fn finish(mut self) -> Result<W, WriteError> {
        if self.current != self.sizes.len() {
            return Err(WriteError::Tensor {
                name: self.names[self.current].clone(),
                msg: format!("incomplete: {} of {} bytes written", self.written_in_current, self.sizes[self.current]),
            });
        }
        self.w.flush()?;
        Ok(self.w)
    }
}
