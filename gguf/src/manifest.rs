//! The tensor manifest: every tensor of the text GGUF and of the mmproj GGUF, written once, with its
//! llama.cpp name, its shape and its role. The converter writes exactly this list, the loader checks it, and
//! the tests compare converted files against it.
//!
//! Shapes here are torch order (`[rows, cols]`, last dimension fastest); the GGUF `ne` is the reverse.

use crate::config::{TextConfig, VisionConfig};

/// What a tensor is, which decides its stored type (see `pixtral_convert::policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// RMSNorm weight, 1-D: always F32.
    Norm,
    /// Bias, 1-D: always F32.
    Bias,
    /// One row of the text embedding carried in the mmproj (`[IMG_BREAK]`), 1-D: F32.
    Row,
    /// Text token embedding `[vocab, dim]`.
    TokenEmbd,
    /// Text output head `[vocab, dim]`.
    Output,
    /// A 2-D text weight.
    TextWeight,
    /// A 2-D vision or adapter weight.
    VisionWeight,
    /// The 4-D patch convolution `[dim, channels, patch, patch]`.
    Conv,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    /// torch order
    pub shape: Vec<usize>,
    pub role: Role,
}

impl Entry {
    fn new(name: impl Into<String>, shape: &[usize], role: Role) -> Entry {
        Entry { name: name.into(), shape: shape.to_vec(), role }
    }

    /// GGUF dimension order, `ne[0]` fastest.
    pub fn ne(&self) -> Vec<u64> {
        self.shape.iter().rev().map(|&d| d as u64).collect()
    }
}

/// Per-layer text tensor names, in the order the file stores them.
pub const TEXT_BLOCK: [&str; 9] =
    ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"];
/// Per-layer vision tensor names.
pub const VISION_BLOCK: [&str; 9] =
    ["ln1", "attn_q", "attn_k", "attn_v", "attn_out", "ln2", "ffn_gate", "ffn_up", "ffn_down"];

pub fn text_tensors(c: &TextConfig) -> Vec<Entry> {
    let (d, q, kv, f) = (c.dim, c.n_heads * c.head_dim, c.n_heads_kv * c.head_dim, c.ffn_dim);
    let mut v = vec![Entry::new("token_embd.weight", &[c.vocab_size, d], Role::TokenEmbd)];
    for l in 0..c.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        v.push(Entry::new(n("attn_norm"), &[d], Role::Norm));
        v.push(Entry::new(n("attn_q"), &[q, d], Role::TextWeight));
        v.push(Entry::new(n("attn_k"), &[kv, d], Role::TextWeight));
        v.push(Entry::new(n("attn_v"), &[kv, d], Role::TextWeight));
        v.push(Entry::new(n("attn_output"), &[d, q], Role::TextWeight));
        v.push(Entry::new(n("ffn_norm"), &[d], Role::Norm));
        v.push(Entry::new(n("ffn_gate"), &[f, d], Role::TextWeight));
        v.push(Entry::new(n("ffn_up"), &[f, d], Role::TextWeight));
        v.push(Entry::new(n("ffn_down"), &[d, f], Role::TextWeight));
    }
    v.push(Entry::new("output_norm.weight", &[d], Role::Norm));
    v.push(Entry::new("output.weight", &[c.vocab_size, d], Role::Output));
    v
}

pub fn vision_tensors(c: &VisionConfig, text_dim: usize) -> Vec<Entry> {
    let (d, f, p) = (c.dim, c.ffn_dim, c.patch_size);
    let mut v = vec![
        Entry::new("v.patch_embd.weight", &[d, c.n_channels, p, p], Role::Conv),
        Entry::new("v.pre_ln.weight", &[d], Role::Norm),
    ];
    for l in 0..c.n_layers {
        let n = |s: &str| format!("v.blk.{l}.{s}.weight");
        v.push(Entry::new(n("ln1"), &[d], Role::Norm));
        v.push(Entry::new(n("attn_q"), &[d, d], Role::VisionWeight));
        v.push(Entry::new(n("attn_k"), &[d, d], Role::VisionWeight));
        v.push(Entry::new(n("attn_v"), &[d, d], Role::VisionWeight));
        v.push(Entry::new(n("attn_out"), &[d, d], Role::VisionWeight));
        v.push(Entry::new(n("ln2"), &[d], Role::Norm));
        v.push(Entry::new(n("ffn_gate"), &[f, d], Role::VisionWeight));
        v.push(Entry::new(n("ffn_up"), &[f, d], Role::VisionWeight));
        v.push(Entry::new(n("ffn_down"), &[d, f], Role::VisionWeight));
    }
    v.push(Entry::new("mm.1.weight", &[text_dim, d], Role::VisionWeight));
    v.push(Entry::new("mm.1.bias", &[text_dim], Role::Bias));
    v.push(Entry::new("mm.2.weight", &[text_dim, text_dim], Role::VisionWeight));
    v.push(Entry::new("mm.2.bias", &[text_dim], Role::Bias));
    v.push(Entry::new("v.token_embd.img_break", &[text_dim], Role::Row));
    v
}
