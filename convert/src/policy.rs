//! Type policy: which ggml type each tensor is stored as.
//!
//! Norms, biases and the `[IMG_BREAK]` row are F32. Text 2-D weights take `--outtype`, except `output.weight`
//! which is Q8_0 when the outtype is Q4_0 (the head is the most quantization-sensitive matrix; llama.cpp's
//! Q4_0 presets keep it at higher precision too). The vision tower and adapter take `--vision-type`. A block
//! type needs `ne[0]` (the row length) to be a multiple of 32: the 16×16 patch convolution (rows of 16) and
//! any other such tensor fall back to F16.

use pixtral_gguf::manifest::Role;
use pixtral_quant::GgmlType;

pub fn target_type(role: Role, ne0: usize, outtype: GgmlType, vision_type: GgmlType) -> GgmlType {
    let want = match role {
        Role::Norm | Role::Bias | Role::Row => GgmlType::F32,
        Role::TokenEmbd | Role::TextWeight => outtype,
        Role::Output if outtype == GgmlType::Q4_0 => GgmlType::Q8_0,
        Role::Output => outtype,
        Role::VisionWeight | Role::Conv => vision_type,
    };
    if !ne0.is_multiple_of(want.block_size()) {
        GgmlType::F16
    } else {
        want
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a text outtype.
pub fn file_type(outtype: GgmlType) -> u32 {
    match outtype {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q8_0 => 7,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}
