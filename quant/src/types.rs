//! The ggml type table: id, name, block size and block bytes for every type a GGUF file may carry
//! (`ggml.h` / `gguf.constants.GGML_QUANT_SIZES`). Reading a file needs sizes of all of them; only the
//! types with `supported() == true` have kernels here.

use std::fmt;

/// A ggml tensor type, spelled as ggml spells it.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
}

/// Static facts about one type.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    pub ty: GgmlType,
    pub name: &'static str,
    /// Elements per block (1 for plain scalar types).
    pub block_size: usize,
    /// Bytes per block.
    pub type_size: usize,
}

const QK_K: usize = 256;

#[rustfmt::skip]
const TABLE: &[TypeInfo] = &[
    TypeInfo { ty: GgmlType::F32,     name: "F32",     block_size: 1,    type_size: 4 },
    TypeInfo { ty: GgmlType::F16,     name: "F16",     block_size: 1,    type_size: 2 },
    TypeInfo { ty: GgmlType::Q4_0,    name: "Q4_0",    block_size: 32,   type_size: 18 },
    TypeInfo { ty: GgmlType::Q4_1,    name: "Q4_1",    block_size: 32,   type_size: 20 },
    TypeInfo { ty: GgmlType::Q5_0,    name: "Q5_0",    block_size: 32,   type_size: 22 },
    TypeInfo { ty: GgmlType::Q5_1,    name: "Q5_1",    block_size: 32,   type_size: 24 },
    TypeInfo { ty: GgmlType::Q8_0,    name: "Q8_0",    block_size: 32,   type_size: 34 },
    TypeInfo { ty: GgmlType::Q8_1,    name: "Q8_1",    block_size: 32,   type_size: 40 },
    TypeInfo { ty: GgmlType::Q2_K,    name: "Q2_K",    block_size: QK_K, type_size: 4 + QK_K / 16 + QK_K / 4 },
    TypeInfo { ty: GgmlType::Q3_K,    name: "Q3_K",    block_size: QK_K, type_size: 2 + QK_K / 4 + QK_K / 8 + 12 },
    TypeInfo { ty: GgmlType::Q4_K,    name: "Q4_K",    block_size: QK_K, type_size: 4 + QK_K / 2 + 12 },
    TypeInfo { ty: GgmlType::Q5_K,    name: "Q5_K",    block_size: QK_K, type_size: 4 + QK_K / 2 + QK_K / 8 + 12 },
    TypeInfo { ty: GgmlType::Q6_K,    name: "Q6_K",    block_size: QK_K, type_size: 2 + QK_K / 2 + QK_K / 4 + QK_K / 16 },
    TypeInfo { ty: GgmlType::Q8_K,    name: "Q8_K",    block_size: QK_K, type_size: 4 + QK_K + QK_K / 8 },
    TypeInfo { ty: GgmlType::IQ2_XXS, name: "IQ2_XXS", block_size: QK_K, type_size: 2 + QK_K / 4 },
    TypeInfo { ty: GgmlType::IQ2_XS,  name: "IQ2_XS",  block_size: QK_K, type_size: 2 + QK_K / 4 + QK_K / 32 },
    TypeInfo { ty: GgmlType::IQ3_XXS, name: "IQ3_XXS", block_size: QK_K, type_size: 2 + QK_K / 4 + QK_K / 8 },
    TypeInfo { ty: GgmlType::IQ1_S,   name: "IQ1_S",   block_size: QK_K, type_size: 2 + QK_K / 8 + QK_K / 16 },
    TypeInfo { ty: GgmlType::IQ4_NL,  name: "IQ4_NL",  block_size: 32,   type_size: 18 },
    TypeInfo { ty: GgmlType::IQ3_S,   name: "IQ3_S",   block_size: QK_K, type_size: 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4 },
    TypeInfo { ty: GgmlType::IQ2_S,   name: "IQ2_S",   block_size: QK_K, type_size: 2 + QK_K / 4 + QK_K / 16 },
    TypeInfo { ty: GgmlType::IQ4_XS,  name: "IQ4_XS",  block_size: QK_K, type_size: 4 + QK_K / 2 + QK_K / 64 },
    TypeInfo { ty: GgmlType::I8,      name: "I8",      block_size: 1,    type_size: 1 },
    TypeInfo { ty: GgmlType::I16,     name: "I16",     block_size: 1,    type_size: 2 },
    TypeInfo { ty: GgmlType::I32,     name: "I32",     block_size: 1,    type_size: 4 },
    TypeInfo { ty: GgmlType::I64,     name: "I64",     block_size: 1,    type_size: 8 },
    TypeInfo { ty: GgmlType::F64,     name: "F64",     block_size: 1,    type_size: 8 },
    TypeInfo { ty: GgmlType::IQ1_M,   name: "IQ1_M",   block_size: QK_K, type_size: QK_K / 8 + QK_K / 16 + QK_K / 32 },
    TypeInfo { ty: GgmlType::BF16,    name: "BF16",    block_size: 1,    type_size: 2 },
    TypeInfo { ty: GgmlType::TQ1_0,   name: "TQ1_0",   block_size: QK_K, type_size: 2 + 4 * 13 },
    TypeInfo { ty: GgmlType::TQ2_0,   name: "TQ2_0",   block_size: QK_K, type_size: 2 + 64 },
    TypeInfo { ty: GgmlType::MXFP4,   name: "MXFP4",   block_size: 32,   type_size: 17 },
];

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|t| t.ty)
    }

    /// The type of a ggml type id, `None` for ids ggml never assigned or has removed.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|t| t.ty as u32 == id).map(|t| t.ty)
    }

    /// The type named `name` (ggml spelling, case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE.iter().find(|t| t.name.eq_ignore_ascii_case(name)).map(|t| t.ty)
    }

    pub fn info(self) -> &'static TypeInfo {
        TABLE.iter().find(|t| t.ty == self).expect("every GgmlType is in TABLE")
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// F32, F16 or BF16: one value per element, no block scale.
    pub fn is_float(self) -> bool {
        matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    pub fn block_size(self) -> usize {
        self.info().block_size
    }

    pub fn type_size(self) -> usize {
        self.info().type_size
    }

    /// Bytes of `n` elements (a row), `None` when `n` is not a whole number of blocks or overflows.
    pub fn row_bytes(self, n: usize) -> Option<usize> {
        let info = self.info();
        if !n.is_multiple_of(info.block_size) {
            return None;
        }
        (n / info.block_size).checked_mul(info.type_size)
    }

    /// True for the types this crate can dequantize and multiply (a weight type of a file we run). Of these,
    /// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 also have a reference quantizer.
    pub fn supported(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | Q4_0) || crate::kquants::is_unpacked_type(self)
    }

    /// The format ggml converts activations to before a dot product with weights of this type
    /// (`type_traits_cpu[].vec_dot_type`): Q8_0 for Q4_0, Q8_0, Q5_0, IQ4_NL; Q8_1 for Q4_1, Q5_1; Q8_K for the
    /// K-quants and IQ4_XS; F32 for float weights (ggml uses F16/BF16 for those; we keep f32 activations).
    pub fn vec_dot_type(self) -> GgmlType {
        use GgmlType::*;
        match self {
            Q4_0 | Q8_0 | Q5_0 | IQ4_NL => Q8_0,
            Q4_1 | Q5_1 => Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_XS => Q8_K,
            _ => F32,
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_none() {
        for ty in GgmlType::all() {
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
            assert_eq!(GgmlType::from_name(ty.name()), Some(ty));
        }
        for removed in [4, 5, 31, 32, 33, 36, 37, 38, 1000] {
            assert_eq!(GgmlType::from_id(removed), None, "id {removed}");
        }
    }

    #[test]
    fn sizes_match_ggml_common_h() {
        // hand-copied from ggml-common.h static_asserts
        assert_eq!(GgmlType::Q4_0.type_size(), 18);
        assert_eq!(GgmlType::Q8_0.type_size(), 34);
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::Q8_K.type_size(), 292);
        assert_eq!(GgmlType::Q4_0.row_bytes(64), Some(36));
        assert_eq!(GgmlType::Q4_0.row_bytes(48), None);
    }
}
