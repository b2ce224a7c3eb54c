//! Where each manifest tensor comes from in a checkpoint, and the layout fix it needs.
//!
//! q/k layout: GGUF stores q and k rows in the Meta/Mistral interleaved-pair layout (RoPE rotates pairs
//! `(2i, 2i+1)`), as the Mistral-native checkpoint does. HF checkpoints carry q/k permuted for rotate-half RoPE
//! (`permute_for_rope`: `W.view(n_heads, rows/n_heads/2, 2, cols).transpose(1, 2)`); [`Transform::Unpermute`]
//! undoes it: decoder q with `n_heads`, decoder k with `n_heads_kv`, vision q/k with the vision heads.

use std::collections::BTreeMap;

use pixtral_gguf::manifest::Entry;

use crate::checkpoint::{Checkpoint, Layout};
use crate::source::SourceTensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    None,
    /// HF rotate-half rows → interleaved pairs, per head of `rows / n_heads` rows.
    Unpermute {
        n_heads: usize,
    },
    /// One row of a 2-D source (the `[IMG_BREAK]` row of the text embedding).
    Row(usize),
}

impl Transform {
    /// Source row of output row `r` inside a run of whole heads of `head_rows` rows each.
    pub fn unpermuted_row(r: usize, head_rows: usize) -> usize {
        let (h, m) = (r / head_rows, r % head_rows);
        h * head_rows + (m % 2) * (head_rows / 2) + m / 2
    }
}

/// Source names of one checkpoint.
struct Names {
    layout: Layout,
    text: &'static str,
    head: &'static str,
    vision: &'static str,
    projector: &'static str,
}

impl Names {
    fn new(layout: Layout, tensors: &BTreeMap<String, SourceTensor>) -> Names {
        let has = |n: &str| tensors.contains_key(n);
        match layout {
            Layout::Mistral => Names {
                layout,
                text: "",
                head: "output.weight",
                vision: "vision_encoder.",
                projector: "vision_language_adapter.",
            },
            Layout::Hf if has("model.language_model.embed_tokens.weight") => Names {
                layout,
                text: "model.language_model.",
                head: "lm_head.weight",
                vision: "model.vision_tower.",
                projector: "model.multi_modal_projector.",
            },
            Layout::Hf if has("model.embed_tokens.weight") => Names {
                layout,
                text: "model.",
                head: "lm_head.weight",
                vision: "vision_tower.",
                projector: "multi_modal_projector.",
            },
            Layout::Hf => Names {
                layout,
                text: "language_model.model.",
                head: "language_model.lm_head.weight",
                vision: "vision_tower.",
                projector: "multi_modal_projector.",
            },
        }
    }

    fn text(&self, gguf: &str, ck: &Checkpoint) -> (String, Transform) {
        let hf = self.layout == Layout::Hf;
        let t = ck.text.n_heads;
        let kv = ck.text.n_heads_kv;
        let p = self.text;
        match gguf {
            "token_embd.weight" => {
                (format!("{p}{}", if hf { "embed_tokens.weight" } else { "tok_embeddings.weight" }), Transform::None)
            }
            "output_norm.weight" => (format!("{p}norm.weight"), Transform::None),
            "output.weight" => (self.head.to_owned(), Transform::None),
            _ => {
                let (layer, part) = split_block(gguf, "blk.");
                let (hf_name, mi_name, tr) = match part {
                    "attn_norm" => ("input_layernorm", "attention_norm", Transform::None),
                    "attn_q" => ("self_attn.q_proj", "attention.wq", Transform::Unpermute { n_heads: t }),
                    "attn_k" => ("self_attn.k_proj", "attention.wk", Transform::Unpermute { n_heads: kv }),
                    "attn_v" => ("self_attn.v_proj", "attention.wv", Transform::None),
                    "attn_output" => ("self_attn.o_proj", "attention.wo", Transform::None),
                    "ffn_norm" => ("post_attention_layernorm", "ffn_norm", Transform::None),
                    "ffn_gate" => ("mlp.gate_proj", "feed_forward.w1", Transform::None),
                    "ffn_up" => ("mlp.up_proj", "feed_forward.w3", Transform::None),
                    "ffn_down" => ("mlp.down_proj", "feed_forward.w2", Transform::None),
                    other => unreachable!("manifest part {other}"),
                };
                if hf {
                    (format!("{p}layers.{layer}.{hf_name}.weight"), tr)
                } else {
                    (format!("layers.{layer}.{mi_name}.weight"), Transform::None)
                }
            }
        }
    }

    fn vision(&self, gguf: &str, ck: &Checkpoint) -> (String, Transform) {
        let hf = self.layout == Layout::Hf;
        let vh = ck.vision.as_ref().map(|v| v.n_heads).unwrap_or(1);
        let (v, pr) = (self.vision, self.projector);
        let pick = |a: &str, b: &str| if hf { a.to_owned() } else { b.to_owned() };
        match gguf {
            "v.patch_embd.weight" => (format!("{v}patch_conv.weight"), Transform::None),
            "v.pre_ln.weight" => (format!("{v}ln_pre.weight"), Transform::None),
            "mm.1.weight" => (format!("{pr}{}", pick("linear_1.weight", "w_in.weight")), Transform::None),
            "mm.1.bias" => (format!("{pr}{}", pick("linear_1.bias", "w_in.bias")), Transform::None),
            "mm.2.weight" => (format!("{pr}{}", pick("linear_2.weight", "w_out.weight")), Transform::None),
            "mm.2.bias" => (format!("{pr}{}", pick("linear_2.bias", "w_out.bias")), Transform::None),
            "v.token_embd.img_break" => {
                let row = ck.vision.as_ref().map(|v| v.img_break_token_id as usize).unwrap_or(0);
                (self.text("token_embd.weight", ck).0, Transform::Row(row))
            }
            _ => {
                let (layer, part) = split_block(gguf, "v.blk.");
                let (hf_name, mi_name, tr) = match part {
                    "ln1" => ("attention_norm", "attention_norm", Transform::None),
                    "attn_q" => ("attention.q_proj", "attention.wq", Transform::Unpermute { n_heads: vh }),
                    "attn_k" => ("attention.k_proj", "attention.wk", Transform::Unpermute { n_heads: vh }),
                    "attn_v" => ("attention.v_proj", "attention.wv", Transform::None),
                    "attn_out" => ("attention.o_proj", "attention.wo", Transform::None),
                    "ln2" => ("ffn_norm", "ffn_norm", Transform::None),
                    "ffn_gate" => ("feed_forward.gate_proj", "feed_forward.w1", Transform::None),
                    "ffn_up" => ("feed_forward.up_proj", "feed_forward.w3", Transform::None),
                    "ffn_down" => ("feed_forward.down_proj", "feed_forward.w2", Transform::None),
                    other => unreachable!("manifest part {other}"),
                };
                let name = if hf { hf_name } else { mi_name };
                (format!("{v}transformer.layers.{layer}.{name}.weight"), if hf { tr } else { Transform::None })
            }
        }
    }
}

/// "blk.7.attn_q.weight" → (7, "attn_q")
fn split_block<'a>(gguf: &'a str, prefix: &str) -> (usize, &'a str) {
    let rest = gguf.strip_prefix(prefix).expect("manifest block name");
    let (layer, part) = rest.split_once('.').expect("manifest block name");
    (layer.parse().expect("manifest layer"), part.trim_end_matches(".weight"))
}

/// The source tensor name and transform of every manifest entry (text entries first, then vision).
pub fn sources(
    ck: &Checkpoint,
    text: &[Entry],
    vision: &[Entry],
    tensors: &BTreeMap<String, SourceTensor>,
) -> Vec<(String, Transform)> {
    let names = Names::new(ck.layout, tensors);
    text.iter().map(|e| names.text(&e.name, ck)).chain(vision.iter().map(|e| names.vision(&e.name, ck))).collect()
}
