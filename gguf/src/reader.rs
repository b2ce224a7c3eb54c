//! The strict GGUF reader: every count and length read from the file is checked against the bytes left
//! before anything is sized from it; every size is computed with checked arithmetic; each failure is a
//! [`GgufError`] naming the key or tensor. The runtime loads with it, and the converter re-reads what it wrote
//! with it before renaming it into place.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::format::{keys, Value, ValueType, DEFAULT_ALIGNMENT, MAGIC};
use pixtral_quant::GgmlType;

/// Longest key accepted (the GGUF spec caps keys at 65535 bytes).
pub const MAX_KEY_LEN: u64 = 65_535;
/// Longest string value accepted (a chat template is a few KB; a token a few bytes).
pub const MAX_STRING_LEN: u64 = 16 << 20;
/// Longest tensor name accepted: ggml's `GGML_MAX_NAME` is 64 bytes including the NUL, so 63.
pub const MAX_TENSOR_NAME_LEN: u64 = 63;
const MAX_DIMS: u32 = 4;
const MAX_ALIGNMENT: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    InFile { path: PathBuf, source: Box<GgufError> },
    #[error("not a GGUF file: magic is {0:02x?}, want \"GGUF\"")]
    BadMagic([u8; 4]),
    #[error("GGUF version {0} is byte-swapped: wrong endianness? (big-endian GGUF is not supported)")]
    WrongEndianness(u32),
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error("truncated file: {what} needs {need} bytes at offset {offset}, {left} left")]
    Truncated { what: String, offset: usize, need: u64, left: usize },
    #[error("{what} count {count} cannot fit in the {left} bytes left at offset {offset}")]
    CountTooLarge { what: &'static str, count: u64, offset: usize, left: usize },
    #[error("{what} is {len} bytes long, over the limit of {max}")]
    TooLong { what: String, len: u64, max: u64 },
    #[error("{what} is not valid UTF-8")]
    Utf8 { what: String },
    #[error("metadata key #{index} is empty")]
    EmptyKey { index: u64 },
    #[error("metadata key {0:?} appears twice")]
    DuplicateKey(String),
    #[error("metadata key {key:?}: unknown value type id {id}")]
    BadValueType { key: String, id: u32 },
    #[error("metadata key {key:?}: arrays of arrays are not supported")]
    NestedArray { key: String },
    #[error("metadata key {key:?}: bool byte is {byte}, want 0 or 1")]
    BadBool { key: String, byte: u8 },
    #[error("metadata key {key:?}: {msg}")]
    BadAlignment { key: &'static str, msg: String },
    /// A metadata value that parses but describes no usable model (a config key out of range): the key, and why.
    #[error("{key}: {msg}")]
    BadValue { key: String, msg: String },
    #[error("tensor {name:?}: {n_dims} dimensions, at most {MAX_DIMS} supported")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor {name:?}: dimension {axis} is 0")]
    ZeroDim { name: String, axis: usize },
    #[error("tensor {name:?}: shape {ne:?} overflows")]
    ShapeOverflow { name: String, ne: Vec<u64> },
    #[error("tensor {name:?}: unknown ggml type id {id}")]
    UnknownType { name: String, id: u32 },
    #[error("tensor {name:?}: ne[0] = {ne0} is not a multiple of the {ty} block size {block}")]
    NotBlockMultiple { name: String, ne0: u64, ty: GgmlType, block: usize },
    #[error("tensor {name:?}: offset {offset} is not aligned to {alignment}")]
    Misaligned { name: String, offset: u64, alignment: u32 },
    #[error(
        "tensor {name:?}: data [{offset}, {offset}+{nbytes}) is outside the {data_len}-byte data section: the file is \
         truncated (an interrupted download or copy?) or damaged"
    )]
    OutOfBounds { name: String, offset: u64, nbytes: u64, data_len: usize },
    #[error("tensor {0:?} appears twice")]
    DuplicateTensor(String),
    #[error("tensor #{index}: empty name")]
    EmptyTensorName { index: u64 },
    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },
    #[error("metadata key {key:?} is {got}, want {want}")]
    WrongType { key: String, want: &'static str, got: String },
    #[error("tensor {name:?} is missing")]
    MissingTensor { name: String },
}

/// One tensor's description; `offset` is relative to the data section, `ne[0]` is the fastest dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// The parsed header of a GGUF file: everything but the tensor data.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u32,
    /// Absolute offset of the data section.
    pub data_offset: usize,
    index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.left() as u64 {
            return Err(GgufError::Truncated { what: what(), offset: self.pos, need: n, left: self.left() });
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String, max: u64) -> Result<String, GgufError> {
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > max {
            return Err(GgufError::TooLong { what: what(), len, max });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Utf8 { what: what() })
    }

    /// Refuse a count whose smallest encoding would not fit in the bytes left.
    fn check_count(&self, what: &'static str, count: u64, min_each: usize) -> Result<(), GgufError> {
        if count.saturating_mul(min_each as u64) > self.left() as u64 {
            return Err(GgufError::CountTooLarge { what, count, offset: self.pos, left: self.left() });
        }
        Ok(())
    }

    fn scalar(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufError> {
        let what = || format!("value of {key:?}");
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(what)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(what)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                byte => return Err(GgufError::BadBool { key: key.to_owned(), byte }),
            },
            ValueType::String => Value::String(self.string(&what, MAX_STRING_LEN)?),
            ValueType::Array => return Err(GgufError::NestedArray { key: key.to_owned() }),
        })
    }

    fn value(&mut self, ty: ValueType, key: &str) -> Result<Value, GgufError> {
        if ty != ValueType::Array {
            return self.scalar(ty, key);
        }
        let elem_id = self.u32(|| format!("array type of {key:?}"))?;
        let elem =
            ValueType::from_id(elem_id).ok_or_else(|| GgufError::BadValueType { key: key.to_owned(), id: elem_id })?;
        if elem == ValueType::Array {
            return Err(GgufError::NestedArray { key: key.to_owned() });
        }
        let count = self.u64(|| format!("array length of {key:?}"))?;
        self.check_count("array", count, elem.min_bytes())?;
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            items.push(self.scalar(elem, key)?);
        }
        Ok(Value::Array(elem, items))
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Array(elem, items) => format!("an array of {} {elem:?}", items.len()),
        other => format!("{:?}", other.value_type()),
    }
}

impl Header {
    /// Parse and validate a whole GGUF file held in `b`.
    pub fn parse(b: &[u8]) -> Result<Header, GgufError> {
        let mut c = Cursor { b, pos: 0 };
        let magic: [u8; 4] = c.array(|| "magic".into())?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = c.u32(|| "version".into())?;
        match version {
            2 | 3 => {}
            v if v.swap_bytes() <= 3 => return Err(GgufError::WrongEndianness(v)),
            v => return Err(GgufError::Version(v)),
        }
        let n_tensors = c.u64(|| "tensor count".into())?;
        let n_kv = c.u64(|| "metadata count".into())?;
        // smallest key/value: u64 key length + 1 key byte + u32 type + 1 value byte
        c.check_count("metadata", n_kv, 14)?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key #{i}"), MAX_KEY_LEN)?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey { index: i });
            }
            if index.contains_key(&key) {
                return Err(GgufError::DuplicateKey(key));
            }
            let ty_id = c.u32(|| format!("value type of {key:?}"))?;
            let ty =
                ValueType::from_id(ty_id).ok_or_else(|| GgufError::BadValueType { key: key.clone(), id: ty_id })?;
            let value = c.value(ty, &key)?;
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let alignment = match index.get(keys::GENERAL_ALIGNMENT).map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if *a == 0 || !a.is_power_of_two() || *a > MAX_ALIGNMENT => {
                return Err(GgufError::BadAlignment {
                    key: keys::GENERAL_ALIGNMENT,
                    msg: format!("{a} is not a power of two up to {MAX_ALIGNMENT}"),
                })
            }
            Some(Value::U32(a)) => *a,
            Some(other) => {
                return Err(GgufError::BadAlignment {
                    key: keys::GENERAL_ALIGNMENT,
                    msg: format!("is {}, want U32", type_name(other)),
                })
            }
        };

        // smallest tensor info: name length + 1 byte + n_dims + one dim + type + offset
        c.check_count("tensor", n_tensors, 8 + 1 + 4 + 8 + 4 + 8)?;
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&|| format!("name of tensor #{i}"), MAX_TENSOR_NAME_LEN)?;
            if name.is_empty() {
                return Err(GgufError::EmptyTensorName { index: i });
            }
            if tensor_index.contains_key(&name) {
                return Err(GgufError::DuplicateTensor(name));
            }
            let n_dims = c.u32(|| format!("n_dims of tensor {name:?}"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for axis in 0..n_dims as usize {
                let d = c.u64(|| format!("ne[{axis}] of tensor {name:?}"))?;
                if d == 0 {
                    return Err(GgufError::ZeroDim { name, axis });
                }
                ne.push(d);
            }
            let ty_id = c.u32(|| format!("type of tensor {name:?}"))?;
            let ty =
                GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownType { name: name.clone(), id: ty_id })?;
            let offset = c.u64(|| format!("offset of tensor {name:?}"))?;

            let overflow = || GgufError::ShapeOverflow { name: name.clone(), ne: ne.clone() };
            let n_elements = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
            if n_elements > i64::MAX as u64 {
                return Err(overflow());
            }
            if ne[0] % ty.block_size() as u64 != 0 {
                return Err(GgufError::NotBlockMultiple { name, ne0: ne[0], ty, block: ty.block_size() });
            }
            let n_bytes =
                (n_elements / ty.block_size() as u64).checked_mul(ty.type_size() as u64).ok_or_else(overflow)?;
            if offset % alignment as u64 != 0 {
                return Err(GgufError::Misaligned { name, offset, alignment });
            }
            tensor_index.insert(name.clone(), tensors.len());
            tensors.push(TensorInfo { name, ty, ne, offset, n_bytes });
        }

        let pad = (alignment as usize - c.pos % alignment as usize) % alignment as usize;
        let data_offset = if n_tensors == 0 { c.pos + pad.min(c.left()) } else { c.pos + pad };
        if data_offset > b.len() {
            return Err(GgufError::Truncated {
                what: "padding before the data section".into(),
                offset: c.pos,
                need: pad as u64,
                left: c.left(),
            });
        }
        let data_len = b.len() - data_offset;
        for t in &tensors {
            match t.offset.checked_add(t.n_bytes) {
                Some(end) if end <= data_len as u64 => {}
                _ => {
                    return Err(GgufError::OutOfBounds {
                        name: t.name.clone(),
                        offset: t.offset,
                        nbytes: t.n_bytes,
                        data_len,
                    })
                }
            }
        }
        Ok(Header { version, metadata, tensors, alignment, data_offset, index, tensor_index })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })
    }

    fn wrong(key: &str, want: &'static str, got: &Value) -> GgufError {
        GgufError::WrongType { key: key.to_owned(), want, got: type_name(got) }
    }

    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        match self.require(key)? {
            Value::U32(v) => Ok(*v),
            other => Err(Self::wrong(key, "U32", other)),
        }
    }

    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        match self.require(key)? {
            Value::F32(v) => Ok(*v),
            other => Err(Self::wrong(key, "F32", other)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            Value::Bool(v) => Ok(*v),
            other => Err(Self::wrong(key, "Bool", other)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.require(key)? {
            Value::String(v) => Ok(v),
            other => Err(Self::wrong(key, "String", other)),
        }
    }

    /// An array of strings, borrowed.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        match self.require(key)? {
            Value::Array(ValueType::String, items) => Ok(items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.as_str(),
                    _ => unreachable!("homogeneous by construction"),
                })
                .collect()),
            other => Err(Self::wrong(key, "an array of String", other)),
        }
    }

    /// An array of f32.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        match self.require(key)? {
            Value::Array(ValueType::F32, items) => Ok(items
                .iter()
                .map(|v| match v {
                    Value::F32(x) => *x,
                    _ => unreachable!("homogeneous by construction"),
                })
                .collect()),
            other => Err(Self::wrong(key, "an array of F32", other)),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// A memory-mapped GGUF file with its parsed header. Tensor data are views into the map.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: Header,
    map: crate::mmap::Map,
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| GgufError::Io { path: path.clone(), source })?;
        // mapping a directory fails with ENODEV ("No such device"): say what is wrong instead
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            let source = std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory, not a GGUF file");
            return Err(GgufError::Io { path, source });
        }
        let map = crate::mmap::Map::new(&file).map_err(|source| GgufError::Io { path: path.clone(), source })?;
        let header =
            Header::parse(map.bytes()).map_err(|e| GgufError::InFile { path: path.clone(), source: Box::new(e) })?;
        Ok(GgufFile { path, header, map })
    }

    /// The bytes of one tensor (bounds were checked at open).
    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.header.data_offset + t.offset as usize;
        &self.map.bytes()[start..start + t.n_bytes as usize]
    }

    /// The whole mapped file.
    pub fn map_bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    /// Drop this process's pages of a byte range of the map (see [`crate::mmap::Map::release`]).
    pub fn release(&self, start: usize, len: usize) {
        self.map.release(start, len)
    }

    /// The bytes of the tensor called `name`.
    pub fn tensor_data(&self, name: &str) -> Result<(&TensorInfo, &[u8]), GgufError> {
        let t = self.header.tensor(name).ok_or_else(|| GgufError::MissingTensor { name: name.to_owned() })?;
        Ok((t, self.data(t)))
    }
}
