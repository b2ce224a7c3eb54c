//! The vocabulary a text GGUF carries, as llama.cpp embeds Tekken: every token spelled in GPT-2 byte-level form
//! ([`bytes_to_unicode`]), token types (the reserved special ids are CONTROL), BPE merges, bos/eos/unk, the split
//! pattern and the chat template. The converter builds a [`Vocab`] from a checkpoint's tokenizer files
//! (`pixtral_convert::tokenizer`) and writes it; the runtime's tokenizer reads the same keys back.

/// Tekken's pre-tokenizer split pattern (mistral-common `tekken.json` `config.pattern`, the same string
/// transformers installs with `fix_mistral_regex=True`). An HF `tokenizer.json` of a Tekken vocabulary gets
/// this whatever it carries: the files written by transformers' < 5 `TikTokenConverter`, the published
/// `mistral-community/pixtral-12b` one among them, carry llama3's (`pixtral_convert::tokenizer::LLAMA3_PATTERN`).
pub const TEKKEN_PATTERN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// llama.cpp `llama_token_type` values.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const CONTROL: i32 = 3;
    pub const UNUSED: i32 = 5;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    /// `vocab_size` entries, GPT-2 byte-level spelling; special tokens as written (`<s>`, `[IMG]`).
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    /// "left right" in byte-level spelling, in priority order.
    pub merges: Vec<String>,
    pub pattern: String,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
    /// `tokenizer.ggml.padding_token_id`, where the checkpoint names a pad token.
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`: whether a plain prompt starts with BOS (the chat template adds its own).
    pub add_bos: bool,
    pub chat_template: String,
}

impl Vocab {
    /// The id of a special token by its spelling.
    pub fn special_id(&self, s: &str) -> Option<u32> {
        self.tokens.iter().zip(&self.types).position(|(t, ty)| t == s && *ty == token_type::CONTROL).map(|i| i as u32)
    }
}

/// GPT-2's reversible byte → printable-char map.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        map[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("BMP")
        };
    }
    map
}
