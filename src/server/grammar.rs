//! Structured output (`response_format`) with llguidance: a JSON schema (or `json_object`, the schema
//! `{"type": "object"}`) compiled against the model's own vocabulary into a matcher that gives, at each step, the
//! tokens that keep the output valid. The sampler never draws another, so the answer parses and validates (unless
//! `max_tokens` cuts it short: its finish reason is then `length`).
//!
//! The vocabulary goes to llguidance as a token trie built once at start-up ([`Grammars::new`], ~0.1 s for
//! Tekken's 131072 tokens): each token's bytes, control tokens (`[INST]`, `</s>`, …) marked with llguidance's
//! 0xFF prefix so that no text can spell them.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use crate::Engine;

/// The model's vocabulary as llguidance sees it.
struct TekkenEnv {
    trie: TokTrie,
    engine: Arc<Engine>,
}

impl TokenizerEnv for TekkenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Our tokenizer on the bytes (invalid UTF-8 replaced: llguidance asks this of text it forces, which is UTF-8).
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.engine.model.tokenizer.encode(&String::from_utf8_lossy(s))
    }
}

/// The compiler of `response_format`s for one model.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    pub fn new(engine: Arc<Engine>) -> Result<Grammars, String> {
        let tok = &engine.model.tokenizer;
        let words: Vec<Vec<u8>> = (0..tok.n_vocab() as u32)
            .map(|id| {
                let p = tok.piece(id);
                if tok.is_control(id) {
                    [&[TokTrie::SPECIAL_TOKEN_MARKER][..], p].concat()
                } else {
                    p.to_vec()
                }
            })
            .collect();
        let info = TokRxInfo { tok_bos: Some(tok.bos), ..TokRxInfo::new(words.len() as u32, tok.eos) };
        let trie = TokTrie::from(&info, &words);
        let env: toktrie::TokEnv = Arc::new(TekkenEnv { trie, engine: engine.clone() });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.quiet();
        Ok(Grammars { factory })
    }

    /// A matcher for the JSON `schema`. Output is compact (`{"a": 1, "b": [2, 3]}`: one space after `:` and `,`,
    /// no newlines), so a model cannot spend its tokens on whitespace. Errors: a schema llguidance cannot compile,
    /// in its words.
    pub fn json_schema(&self, schema: &serde_json::Value) -> Result<Matcher, String> {
        let mut schema = schema.clone();
        if let Some(o) = schema.as_object_mut() {
            o.entry("x-guidance").or_insert_with(
                || serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
            );
        } else if !schema.is_boolean() {
            return Err("a JSON schema is an object (or true/false)".into());
        }
        let parser =
            self.factory.create_parser(TopLevelGrammar::from_json_schema(schema)).map_err(|e| e.to_string())?;
        let m = Matcher::new(Ok(parser));
        match m.get_error() {
            Some(e) => Err(e),
            None => Ok(m),
        }
    }
}
