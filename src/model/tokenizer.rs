//! Tekken tokenizer, built from GGUF metadata (`tokenizer.ggml.tokens` in GPT-2 byte-level spelling, token
//! types, the split pattern).
//!
//! Tekken is tiktoken's BPE: split the text with the pattern, then for each piece: if the whole piece is a
//! vocabulary token, that is the token; else start from single bytes and repeatedly merge the adjacent pair
//! whose concatenation has the lowest rank, until no adjacent pair is a token. A normal token's rank is its id
//! (ids follow ranks, offset by the reserved special ids), so no merge list is needed; `tokenizer.ggml.merges`
//! (derived from the same ranks) is for llama.cpp. We do not use the `tokenizers` crate: tiktoken's rule is
//! 40 lines, the crate is a large dependency, and exactness is tested against mistral-common on the full
//! 131072-token vocabulary (`tests/tokenizer.rs`).
//!
//! User text is plain text: the vocabulary used for encoding holds normal tokens only, so no input string can
//! produce a control token (`[INST]`, `[IMG]`, `</s>` typed by a user stay text).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::gguf::{keys, Header};

/// llama.cpp token type of control tokens.
const CONTROL: i32 = 3;

pub struct Tokenizer {
    /// id → bytes (control tokens: their spelling)
    pieces: Vec<Vec<u8>>,
    control: Vec<bool>,
    /// bytes → id, normal tokens only
    ids: HashMap<Box<[u8]>, u32>,
    split: fancy_regex::Regex,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
}

impl Tokenizer {
    pub fn from_gguf(h: &Header) -> Result<Tokenizer> {
        let model = h.get_str(keys::TOKENIZER_MODEL)?;
        let pre = h.get_str(keys::TOKENIZER_PRE).unwrap_or("");
        if model != "gpt2" || pre != "tekken" {
            return Err(Error::Model {
                what: keys::TOKENIZER_MODEL.into(),
                msg: format!("tokenizer {model:?} / pre {pre:?}: only Tekken (gpt2 + tekken) is supported"),
            });
        }
        let tokens = h.get_str_array(keys::TOKENIZER_TOKENS)?;
        let types: Vec<i32> = match h.get(keys::TOKENIZER_TOKEN_TYPE) {
            Some(crate::gguf::Value::Array(_, v)) => {
                v.iter().map(|x| if let crate::gguf::Value::I32(t) = x { *t } else { 1 }).collect()
            }
            _ => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::Model {
                what: keys::TOKENIZER_TOKEN_TYPE.into(),
                msg: format!("{} types for {} tokens", types.len(), tokens.len()),
            });
        }
        let pattern = h.get_str(keys::PIXTRAL_TOKENIZER_PATTERN).unwrap_or(crate::gguf::vocab::TEKKEN_PATTERN);
        let id_of = |key: &str, default: u32| match h.get(key) {
            Some(crate::gguf::Value::U32(v)) => *v,
            _ => default,
        };
        let ids =
            (id_of(keys::TOKENIZER_BOS_ID, 1), id_of(keys::TOKENIZER_EOS_ID, 2), id_of(keys::TOKENIZER_UNK_ID, 0));
        Tokenizer::from_parts(&tokens, &types, pattern, ids)
    }

    /// From the converter's vocabulary (built from HF `tokenizer.json` or mistral-common's `tekken.json`).
    pub fn from_vocab(v: &crate::gguf::vocab::Vocab) -> Result<Tokenizer> {
        let tokens: Vec<&str> = v.tokens.iter().map(|t| t.as_str()).collect();
        Tokenizer::from_parts(&tokens, &v.types, &v.pattern, (v.bos, v.eos, v.unk))
    }

    /// From an HF checkpoint folder's `tokenizer.json` (for tests and tools; models carry theirs in the GGUF).
    pub fn from_tokenizer_json(dir: &std::path::Path) -> Result<Tokenizer> {
        let n = {
            let text = std::fs::read_to_string(dir.join("tokenizer.json"))
                .map_err(|source| Error::Io { path: dir.join("tokenizer.json"), source })?;
            let j: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("tokenizer.json: {e}")))?;
            let vocab = j["model"]["vocab"].as_object().map(|m| m.len()).unwrap_or(0);
            let added = j["added_tokens"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t["id"].as_u64()).max().unwrap_or(0) as usize + 1)
                .unwrap_or(0);
            vocab.max(added)
        };
        let v = pixtral_convert::tokenizer::from_hf(dir, n).map_err(|e| Error::Invalid(e.to_string()))?;
        Tokenizer::from_vocab(&v)
    }

    fn from_parts(
        tokens: &[&str],
        types: &[i32],
        pattern: &str,
        (bos, eos, unk): (u32, u32, u32),
    ) -> Result<Tokenizer> {
        let split = fancy_regex::Regex::new(pattern).map_err(|e| Error::Model {
            what: keys::PIXTRAL_TOKENIZER_PATTERN.into(),
            msg: format!("bad regex: {e}"),
        })?;
        let table = crate::gguf::vocab::bytes_to_unicode();
        let mut unbyte: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, c) in table.iter().enumerate() {
            unbyte.insert(*c, b as u8);
        }
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut control = Vec::with_capacity(tokens.len());
        let mut ids = HashMap::with_capacity(tokens.len());
        for (id, (t, ty)) in tokens.iter().zip(types).enumerate() {
            let is_control = *ty == CONTROL;
            let bytes: Option<Vec<u8>> = if is_control {
                Some(t.as_bytes().to_vec())
            } else {
                t.chars().map(|c| unbyte.get(&c).copied()).collect()
            };
            let bytes = bytes.ok_or_else(|| Error::Model {
                what: keys::TOKENIZER_TOKENS.into(),
                msg: format!("token {id} {t:?} is not in GPT-2 byte-level spelling"),
            })?;
            if !is_control && *ty != 5 {
                // first id wins for duplicate spellings (cannot happen in Tekken)
                ids.entry(bytes.clone().into_boxed_slice()).or_insert(id as u32);
            }
            pieces.push(bytes);
            control.push(is_control);
        }
        let tok = Tokenizer { bos, eos, unk, pieces, control, ids, split };
        for b in 0..=255u8 {
            if !tok.ids.contains_key(&[b][..]) {
                return Err(Error::Model {
                    what: keys::TOKENIZER_TOKENS.into(),
                    msg: format!("byte {b:#04x} has no token: not a byte-level BPE vocabulary"),
                });
            }
        }
        Ok(tok)
    }

    pub fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    /// The id of a control token by spelling, e.g. `[INST]`.
    pub fn control_id(&self, s: &str) -> Option<u32> {
        self.pieces.iter().zip(&self.control).position(|(p, c)| *c && p == s.as_bytes()).map(|i| i as u32)
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// The bytes of a token (a control token's spelling for control ids).
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map(|p| p.as_slice()).unwrap_or(b"")
    }

    /// Text of a sequence of ids (control tokens give none; invalid UTF-8 becomes U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut d = StreamDecoder::default();
        let mut s = String::new();
        for &id in ids {
            d.push_into(self, id, &mut s);
        }
        s.push_str(&d.finish());
        s
    }

    /// Encode plain text (no BOS, no control tokens). Linear in the text for a bounded piece length.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut start = 0;
        // fancy-regex may fail on pathological backtracking; fall back to treating the rest as one piece
        for m in self.split.find_iter(text) {
            match m {
                Ok(m) => {
                    if m.start() > start {
                        self.bpe(&text.as_bytes()[start..m.start()], &mut out);
                    }
                    self.bpe(m.as_str().as_bytes(), &mut out);
                    start = m.end();
                }
                Err(_) => break,
            }
        }
        if start < text.len() {
            self.bpe(&text.as_bytes()[start..], &mut out);
        }
        out
    }

    /// tiktoken's byte-pair merge of one piece: repeatedly merge the adjacent pair of parts whose bytes have
    /// the lowest rank (leftmost on ties) until no pair is a token. The parts are a linked list and the
    /// candidate pairs a min-heap keyed (rank, start) with stale entries skipped, so a piece of n bytes costs
    /// O(n log n) — tiktoken's rescans are O(n²), which an 8 MB run of letters would turn into hours.
    fn bpe(&self, piece: &[u8], out: &mut Vec<u32>) {
        use std::cmp::Reverse;
        if let Some(&id) = self.ids.get(piece) {
            out.push(id);
            return;
        }
        let n = piece.len();
        const NONE: usize = usize::MAX;
        // next[i]: start of the part after the part starting at i (n at the end); prev[i] likewise
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        let mut heap = std::collections::BinaryHeap::with_capacity(n);
        let pair = |i: usize, next: &[usize]| -> Option<(u32, usize)> {
            let j = next[i];
            if j >= n {
                return None;
            }
            let k = next[j];
            self.ids.get(&piece[i..k]).map(|&r| (r, k))
        };
        for i in 0..n {
            if let Some((r, k)) = pair(i, &next) {
                heap.push(Reverse((r, i, k)));
            }
        }
        while let Some(Reverse((_, i, k))) = heap.pop() {
            // stale: part i was absorbed, or its pair no longer ends at k
            let j = next[i];
            if !alive[i] || j >= n || next[j] != k {
                continue;
            }
            alive[j] = false;
            next[i] = k;
            if k < n {
                prev[k] = i;
            }
            if prev[i] != NONE {
                if let Some((r, k2)) = pair(prev[i], &next) {
                    heap.push(Reverse((r, prev[i], k2)));
                }
            }
            if let Some((r, k2)) = pair(i, &next) {
                heap.push(Reverse((r, i, k2)));
            }
        }
        let mut i = 0;
        while i < n {
            out.push(self.ids.get(&piece[i..next[i]]).copied().unwrap_or(self.unk));
            i = next[i];
        }
    }
}

/// Turns a stream of token ids into text without ever splitting a UTF-8 character: bytes of an incomplete
/// character wait for the next token. Control tokens produce no text.
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Text completed by `id` (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        let mut s = String::new();
        self.push_into(tok, id, &mut s);
        s
    }

    /// Append the text completed by `id` to `out` (no allocation once `out` has grown).
    pub fn push_into(&mut self, tok: &Tokenizer, id: u32, out: &mut String) {
        if tok.is_control(id) {
            return;
        }
        self.pending.extend_from_slice(tok.piece(id));
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return;
                }
                // invalid (not just incomplete) bytes: the valid prefix, U+FFFD for the bad bytes, go on
                Err(e) if e.error_len().is_some() => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"));
                    out.push(char::REPLACEMENT_CHARACTER);
                    self.pending.drain(..valid + e.error_len().unwrap_or(1));
                }
                // an incomplete character at the end waits for the next token
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid prefix"));
                    self.pending.drain(..valid);
                    return;
                }
            }
        }
    }

    /// Whatever is left at the end of a stream, lossily.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
