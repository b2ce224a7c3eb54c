//! GGUF reader/writer: a seeded random round trip, and one handcrafted bad file per validation.

mod common;

use common::{Rng, RngExt, TempDir};
use pixtral::gguf::{GgufError, GgufFile, GgufWriter, Header, TensorSpec, Value, ValueType};
use pixtral::quant::GgmlType;

// ---- round trip ----

fn random_scalar(rng: &mut Rng, ty: ValueType) -> Value {
    let x = rng.next_u64();
    match ty {
        ValueType::U8 => Value::U8(x as u8),
        ValueType::I8 => Value::I8(x as i8),
        ValueType::U16 => Value::U16(x as u16),
        ValueType::I16 => Value::I16(x as i16),
        ValueType::U32 => Value::U32(x as u32),
        ValueType::I32 => Value::I32(x as i32),
        ValueType::F32 => Value::F32(rng.f32() * 1e3),
        ValueType::Bool => Value::Bool(x & 1 == 1),
        ValueType::String => {
            let len = rng.below(40) as usize;
            let alphabet = ['a', 'Z', '0', ' ', 'é', '漢', '🦀', '\n', '"'];
            Value::String((0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect())
        }
        ValueType::U64 => Value::U64(x),
        ValueType::I64 => Value::I64(x as i64),
        ValueType::F64 => Value::F64(rng.f32() as f64 * 1e300),
        ValueType::Array => unreachable!(),
    }
}

const SCALARS: [ValueType; 12] = [
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::F32,
    ValueType::Bool,
    ValueType::String,
    ValueType::U64,
    ValueType::I64,
    ValueType::F64,
];

#[test]
fn seeded_random_files_round_trip() {
    for seed in 0..20u64 {
        let mut rng = Rng(seed);
        let mut meta: Vec<(String, Value)> = vec![];
        let alignment = [1u32, 8, 32, 64, 4096][rng.below(5) as usize];
        meta.push(("general.alignment".into(), Value::U32(alignment)));
        for (i, ty) in SCALARS.iter().enumerate() {
            meta.push((format!("scalar.{i}"), random_scalar(&mut rng, *ty)));
            let n = rng.below(6) as usize;
            let items = (0..n).map(|_| random_scalar(&mut rng, *ty)).collect();
            meta.push((format!("array.{i}"), Value::Array(*ty, items)));
        }
        let mut specs = vec![];
        let mut datas = vec![];
        let types = [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_K,
            GgmlType::I32,
        ];
        for t in 0..rng.below(8) {
            let ty = types[rng.below(types.len() as u64) as usize];
            let n_dims = 1 + rng.below(4) as usize;
            let mut ne: Vec<u64> = (0..n_dims).map(|_| 1 + rng.below(3)).collect();
            ne[0] *= ty.block_size() as u64 * (1 + rng.below(2));
            let spec = TensorSpec { name: format!("t.{t}"), ty, ne };
            let data: Vec<u8> = (0..spec.n_bytes().unwrap()).map(|_| rng.next_u64() as u8).collect();
            specs.push(spec);
            datas.push(data);
        }
        let mut w = GgufWriter::new(Vec::new(), &meta, &specs).unwrap();
        for d in &datas {
            // in two pieces, to exercise streaming
            let cut = d.len() / 3;
            w.write_data(&d[..cut]).unwrap();
            w.write_data(&d[cut..]).unwrap();
        }
        let bytes = w.finish().unwrap();

        let h = Header::parse(&bytes).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(h.version, 3);
        assert_eq!(h.alignment, alignment);
        assert_eq!(h.metadata.len(), meta.len());
        for ((k, v), (k2, v2)) in meta.iter().zip(&h.metadata) {
            assert_eq!(k, k2);
            // compare f32/f64 by bits (NaN-free here, but exact)
            assert_eq!(format!("{v:?}"), format!("{v2:?}"), "seed {seed} key {k}");
        }
        assert_eq!(h.tensors.len(), specs.len());
        for ((s, d), t) in specs.iter().zip(&datas).zip(&h.tensors) {
            assert_eq!((&s.name, s.ty, &s.ne), (&t.name, t.ty, &t.ne));
            assert_eq!(t.offset % alignment as u64, 0);
            let start = h.data_offset + t.offset as usize;
            assert_eq!(&bytes[start..start + t.n_bytes as usize], &d[..], "seed {seed} tensor {}", s.name);
        }
        // the same through a file and the mmap
        let dir = TempDir::new("gguf-rt");
        let p = dir.join("x.gguf");
        std::fs::write(&p, &bytes).unwrap();
        let f = GgufFile::open(&p).unwrap();
        for (s, d) in specs.iter().zip(&datas) {
            assert_eq!(f.tensor_data(&s.name).unwrap().1, &d[..]);
        }
    }
}

#[test]
fn writer_is_deterministic_and_refuses_bad_input() {
    let meta = vec![("a".to_string(), Value::U32(1))];
    let specs = vec![TensorSpec { name: "w".into(), ty: GgmlType::Q8_0, ne: vec![32, 2] }];
    let build = || {
        let mut w = GgufWriter::new(Vec::new(), &meta, &specs).unwrap();
        w.write_data(&[7u8; 68]).unwrap();
        w.finish().unwrap()
    };
    assert_eq!(build(), build());
    // too many bytes, too few, partial blocks, nested arrays, duplicate keys
    let mut w = GgufWriter::new(Vec::new(), &meta, &specs).unwrap();
    assert!(w.write_data(&[0u8; 69]).is_err());
    let mut w = GgufWriter::new(Vec::new(), &meta, &specs).unwrap();
    w.write_data(&[0u8; 10]).unwrap();
    assert!(w.finish().is_err());
    let bad = vec![TensorSpec { name: "w".into(), ty: GgmlType::Q8_0, ne: vec![33] }];
    assert!(GgufWriter::new(Vec::new(), &meta, &bad).is_err());
    let nested = vec![("n".to_string(), Value::Array(ValueType::Array, vec![]))];
    assert!(GgufWriter::new(Vec::new(), &nested, &[]).is_err());
    let dup = vec![("k".to_string(), Value::U8(1)), ("k".to_string(), Value::U8(2))];
    assert!(GgufWriter::new(Vec::new(), &dup, &[]).is_err());
}

#[test]
fn typed_getters_check_the_stored_type() {
    let meta = vec![
        ("u".to_string(), Value::U32(5)),
        ("s".to_string(), Value::String("x".into())),
        ("a".to_string(), Value::str_array(&["p", "q"])),
        ("f".to_string(), Value::f32_array(&[1.0, 2.0])),
    ];
    let bytes = GgufWriter::new(Vec::new(), &meta, &[]).unwrap().finish().unwrap();
    let h = Header::parse(&bytes).unwrap();
    assert_eq!(h.get_u32("u").unwrap(), 5);
    assert_eq!(h.get_str("s").unwrap(), "x");
    assert_eq!(h.get_str_array("a").unwrap(), vec!["p", "q"]);
    assert_eq!(h.get_f32_array("f").unwrap(), vec![1.0, 2.0]);
    assert!(matches!(h.get_f32("u"), Err(GgufError::WrongType { key, .. }) if key == "u"));
    assert!(matches!(h.get_u32("s"), Err(GgufError::WrongType { .. })));
    assert!(matches!(h.get_str_array("f"), Err(GgufError::WrongType { .. })));
    assert!(matches!(h.get_u32("missing"), Err(GgufError::MissingKey { key }) if key == "missing"));
}

// ---- one handcrafted bad file per check ----

/// Writes GGUF fields verbatim, valid or not.
#[derive(Default, Clone)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s);
        self
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k.as_bytes()).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(ne.len() as u32);
        for d in ne {
            self.u64(*d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pad to 32 and append `n` data bytes.
    fn data(&mut self, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0xAB);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn cut(mut b: Vec<u8>, len: usize) -> Vec<u8> {
    b.truncate(len);
    b
}

fn err(bytes: &[u8]) -> GgufError {
    match Header::parse(bytes) {
        Ok(_) => panic!("parsed a bad file"),
        Err(e) => e,
    }
}

/// A valid file with one F32 tensor of 8 elements, as a baseline.
fn good() -> Vec<u8> {
    Raw::header(3, 1, 1).kv_u32("k", 1).tensor("w", &[8], 0, 0).data(32).bytes()
}

#[test]
fn baseline_is_valid() {
    let h = Header::parse(&good()).unwrap();
    assert_eq!(h.tensors[0].n_bytes, 32);
    assert_eq!(Header::parse(&Raw::header(2, 0, 0).bytes()).unwrap().version, 2);
}

macro_rules! bad {
    ($name:ident, $bytes:expr, $pat:pat) => {
        #[test]
        fn $name() {
            let e = err(&$bytes);
            assert!(matches!(e, $pat), "got {e:?}");
            assert!(!e.to_string().is_empty());
        }
    };
}

bad!(empty_file, Vec::new(), GgufError::Truncated { .. });
bad!(
    bad_magic,
    {
        let mut b = good();
        b[0] = b'X';
        b
    },
    GgufError::BadMagic(_)
);
bad!(version_1, Raw::header(1, 0, 0).bytes(), GgufError::Version(1));
bad!(version_4, Raw::header(4, 0, 0).bytes(), GgufError::Version(4));
bad!(byte_swapped_version, Raw::header(3u32.swap_bytes(), 0, 0).bytes(), GgufError::WrongEndianness(_));
bad!(truncated_counts, cut(good(), 12), GgufError::Truncated { .. });
bad!(n_kv_beyond_file, Raw::header(3, 0, 1 << 40).bytes(), GgufError::CountTooLarge { what: "metadata", .. });
bad!(n_tensors_beyond_file, Raw::header(3, u64::MAX, 0).bytes(), GgufError::CountTooLarge { what: "tensor", .. });
bad!(
    key_over_cap,
    {
        let mut r = Raw::header(3, 0, 1);
        r.u64(1 << 20).u32(0);
        r.0.resize(r.0.len() + (1 << 20), b'a');
        r.bytes()
    },
    GgufError::TooLong { .. }
);
bad!(
    key_beyond_file,
    {
        let mut r = Raw::header(3, 0, 1);
        r.u64(1000).u32(0).u32(0).u32(0).u32(0);
        r.bytes()
    },
    GgufError::Truncated { .. }
);
bad!(
    empty_key,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"").u32(4).u32(1);
        r.bytes()
    },
    GgufError::EmptyKey { index: 0 }
);
bad!(
    duplicate_key,
    {
        let mut r = Raw::header(3, 0, 2);
        r.kv_u32("k", 1).kv_u32("k", 2);
        r.bytes()
    },
    GgufError::DuplicateKey(_)
);
bad!(
    key_not_utf8,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(&[0xff, 0xfe]).u32(4).u32(1);
        r.bytes()
    },
    GgufError::Utf8 { .. }
);
bad!(
    unknown_value_type,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(13).u32(0);
        r.bytes()
    },
    GgufError::BadValueType { id: 13, .. }
);
bad!(
    nested_array,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(9).u32(9).u64(1).u32(4).u64(0);
        r.bytes()
    },
    GgufError::NestedArray { .. }
);
bad!(
    array_count_beyond_file,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(9).u32(4).u64(1 << 50).u32(0);
        r.bytes()
    },
    GgufError::CountTooLarge { what: "array", .. }
);
bad!(
    array_of_unknown_type,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(9).u32(77).u64(1).u32(0);
        r.bytes()
    },
    GgufError::BadValueType { id: 77, .. }
);
bad!(
    string_beyond_file,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(8).u64(100).u32(0);
        r.bytes()
    },
    GgufError::Truncated { .. }
);
bad!(
    string_over_cap,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(8).u64(u64::MAX).u32(0);
        r.bytes()
    },
    GgufError::TooLong { .. }
);
bad!(
    bool_not_0_or_1,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"k").u32(7).u8(2);
        r.bytes()
    },
    GgufError::BadBool { byte: 2, .. }
);
bad!(
    alignment_not_u32,
    {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"general.alignment").u32(10).u64(32);
        r.bytes()
    },
    GgufError::BadAlignment { .. }
);
bad!(
    alignment_not_power_of_two,
    Raw::header(3, 0, 1).kv_u32("general.alignment", 48).bytes(),
    GgufError::BadAlignment { .. }
);
bad!(alignment_zero, Raw::header(3, 0, 1).kv_u32("general.alignment", 0).bytes(), GgufError::BadAlignment { .. });
bad!(
    alignment_over_1mib,
    Raw::header(3, 0, 1).kv_u32("general.alignment", 2 << 20).bytes(),
    GgufError::BadAlignment { .. }
);
bad!(
    five_dims,
    Raw::header(3, 1, 0).tensor("w", &[1, 1, 1, 1, 1], 0, 0).data(4).bytes(),
    GgufError::TooManyDims { n_dims: 5, .. }
);
bad!(zero_dims, Raw::header(3, 1, 0).tensor("w", &[], 0, 0).data(4).bytes(), GgufError::TooManyDims { n_dims: 0, .. });
bad!(zero_dim, Raw::header(3, 1, 0).tensor("w", &[4, 0], 0, 0).data(16).bytes(), GgufError::ZeroDim { axis: 1, .. });
bad!(
    element_count_overflow,
    Raw::header(3, 1, 0).tensor("w", &[1 << 32, 1 << 32, 2], 0, 0).data(4).bytes(),
    GgufError::ShapeOverflow { .. }
);
bad!(
    byte_size_overflow,
    Raw::header(3, 1, 0).tensor("w", &[1 << 62], 0, 0).data(4).bytes(),
    GgufError::ShapeOverflow { .. }
);
bad!(
    unknown_ggml_type,
    Raw::header(3, 1, 0).tensor("w", &[32], 4, 0).data(64).bytes(),
    GgufError::UnknownType { id: 4, .. }
);
bad!(
    partial_block,
    Raw::header(3, 1, 0).tensor("w", &[33], 8, 0).data(64).bytes(),
    GgufError::NotBlockMultiple { ne0: 33, .. }
);
bad!(
    misaligned_offset,
    Raw::header(3, 1, 0).tensor("w", &[8], 0, 4).data(64).bytes(),
    GgufError::Misaligned { offset: 4, .. }
);
bad!(data_beyond_file, Raw::header(3, 1, 0).tensor("w", &[8], 0, 0).data(31).bytes(), GgufError::OutOfBounds { .. });
bad!(
    offset_plus_size_overflows,
    Raw::header(3, 1, 0).tensor("w", &[8], 0, u64::MAX - 31).data(32).bytes(),
    GgufError::OutOfBounds { .. }
);
bad!(
    duplicate_tensor,
    Raw::header(3, 2, 0).tensor("w", &[8], 0, 0).tensor("w", &[8], 0, 32).data(64).bytes(),
    GgufError::DuplicateTensor(_)
);
bad!(
    tensor_name_64_bytes,
    Raw::header(3, 1, 0).tensor(&"n".repeat(64), &[8], 0, 0).data(32).bytes(),
    GgufError::TooLong { len: 64, .. }
);
bad!(
    empty_tensor_name,
    Raw::header(3, 1, 0).tensor("", &[8], 0, 0).data(32).bytes(),
    GgufError::EmptyTensorName { index: 0 }
);
bad!(
    truncated_tensor_info,
    {
        let b = Raw::header(3, 1, 0).tensor("w", &[8, 1, 1, 1], 0, 0).bytes();
        b[..b.len() - 3].to_vec()
    },
    GgufError::Truncated { .. }
);
bad!(
    no_data_section,
    Raw::header(3, 1, 0).tensor("w", &[8], 0, 0).bytes(),
    GgufError::Truncated { .. } | GgufError::OutOfBounds { .. }
);

#[test]
fn a_63_byte_tensor_name_is_fine() {
    assert!(Header::parse(&Raw::header(3, 1, 0).tensor(&"n".repeat(63), &[8], 0, 0).data(32).bytes()).is_ok());
}

#[test]
fn open_names_the_file() {
    let dir = TempDir::new("gguf-bad");
    let p = dir.join("bad.gguf");
    std::fs::write(&p, b"GGUF\x01\x00\x00\x00").unwrap();
    let e = GgufFile::open(&p).err().unwrap().to_string();
    assert!(e.contains("bad.gguf") && e.contains("version 1"), "{e}");
    let e = GgufFile::open(dir.join("none.gguf")).err().unwrap().to_string();
    assert!(e.contains("none.gguf"), "{e}");
}
