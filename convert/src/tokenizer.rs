//! The vocabulary builders: a checkpoint's tokenizer files to the [`Vocab`] a text GGUF carries (the type, the
//! byte-level spelling and the split pattern are `pixtral_gguf::vocab`'s), the Tekken tokenizer as llama.cpp
//! embeds it: `tokenizer.ggml.model = gpt2`, `pre = tekken`, token types (the reserved special ids are CONTROL),
//! BPE merges, bos/eos/unk and the chat template.
//!
//! Sources: HF `tokenizer.json` (+ `tokenizer_config.json` or `chat_template.jinja` for the template), or
//! mistral-common's `tekken.json`, whose BPE is given as ranks; merges are derived from the ranks the way
//! transformers' `TikTokenConverter` does (every split of a token into two vocabulary tokens, ordered by the
//! merged token's rank, then by the ranks of the two halves), so both sources give the same merges.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use pixtral_gguf::vocab::{bytes_to_unicode, token_type, Vocab, TEKKEN_PATTERN};
use serde_json::Value as Json;

use crate::error::{io_err, ConvertError, Result};

/// transformers' `TikTokenConverter` default pattern (llama3's): contractions, `\p{L}+` without combining marks
/// (Hindi, Thai split apart), digits in threes, and `[\r\n]*` where Tekken has `[\r\n/]*`.
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral instruct v3 (Tekken) chat template for checkpoints that carry none (Mistral layout): the system
/// prompt goes before the last user message, followed by two newlines, as mistral-common v3 does.
pub const DEFAULT_CHAT_TEMPLATE: &str = "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}{{- bos_token }}{%- for message in loop_messages %}{%- if message['role'] == 'user' %}{%- if loop.last and system_message is defined %}{{- '[INST]' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}{%- else %}{{- '[INST]' + message['content'] + '[/INST]' }}{%- endif %}{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}{%- else %}{{- raise_exception('Only user, assistant and system roles are supported') }}{%- endif %}{%- endfor %}";

fn spell(bytes: &[u8], table: &[char; 256]) -> String {
    bytes.iter().map(|&b| table[b as usize]).collect()
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text)
        .map_err(|e| ConvertError::Input { path: path.into(), msg: format!("invalid JSON: {e}") })
}

fn field(path: &Path, field: &str, msg: impl Into<String>) -> ConvertError {
    ConvertError::Field { path: path.into(), field: field.into(), msg: msg.into() }
}

fn finish(
    mut tokens: Vec<Option<String>>,
    mut types: Vec<i32>,
    vocab_size: usize,
    merges: Vec<String>,
    pattern: String,
    chat_template: String,
    path: &Path,
) -> Result<Vocab> {
    if tokens.len() > vocab_size {
        return Err(ConvertError::Input {
            path: path.into(),
            msg: format!("tokenizer has {} tokens, more than the model's vocab_size {vocab_size}", tokens.len()),
        });
    }
    tokens.resize(vocab_size, None);
    types.resize(vocab_size, token_type::UNUSED);
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| match t {
            Some(t) => t,
            None => {
                types[i] = token_type::UNUSED;
                format!("[PAD{i}]")
            }
        })
        .collect();
    // add_bos: the chat templates we write or read start with `bos_token`, so a chat prompt carries its BOS and
    // llama.cpp's chat path must not add a second (what llama.cpp's own converter writes for a ByteLevel
    // post-processor; `from_hf` follows that converter's rule for the checkpoint's files)
    let mut v =
        Vocab { tokens, types, merges, pattern, bos: 0, eos: 0, unk: 0, pad: None, add_bos: false, chat_template };
    for (slot, s) in [(&mut v.unk, "<unk>"), (&mut v.bos, "<s>"), (&mut v.eos, "</s>")] {
        *slot = v
            .tokens
            .iter()
            .position(|t| t == s)
            .ok_or_else(|| ConvertError::Input { path: path.into(), msg: format!("special token {s} not found") })?
            as u32;
    }
    Ok(v)
}

/// The specials of a `tekken.json` without a `special_tokens` list (v3 files such as `tekken_240911.json`):
/// mistral-common's `Tekkenizer.DEPRECATED_SPECIAL_TOKENS`, ranks 0..20; the rest are `<SPECIAL_i>`.
pub const TEKKEN_DEFAULT_SPECIALS: [&str; 20] = [
    "<unk>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]",
    "[TOOL_CALLS]",
    "[IMG]",
    "<pad>",
    "[IMG_BREAK]",
    "[IMG_END]",
    "[PREFIX]",
    "[MIDDLE]",
    "[SUFFIX]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
];

/// From mistral-common's `tekken.json`: `vocab_size - n_special` ranks follow the special ids.
pub fn from_tekken(path: &Path, vocab_size: usize) -> Result<Vocab> {
    let j = read_json(path)?;
    let cfg = j.get("config").ok_or_else(|| field(path, "config", "missing"))?;
    let pattern =
        cfg.get("pattern").and_then(|p| p.as_str()).ok_or_else(|| field(path, "config.pattern", "missing"))?;
    let defaults: Vec<Json> = TEKKEN_DEFAULT_SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"rank": i, "token_str": s}))
        .collect();
    let specials = match j.get("special_tokens") {
        None => &defaults,
        Some(s) => s.as_array().ok_or_else(|| field(path, "special_tokens", "not a list"))?,
    };
    let n_special = match cfg.get("default_num_special_tokens") {
        Some(n) => {
            n.as_u64().ok_or_else(|| field(path, "config.default_num_special_tokens", "not an integer"))? as usize
        }
        None => specials.len(),
    };
    if n_special > vocab_size || specials.len() > n_special {
        return Err(field(
            path,
            "special_tokens",
            format!("{} listed, {n_special} reserved, vocab_size {vocab_size}", specials.len()),
        ));
    }
    let ranks = j.get("vocab").and_then(|v| v.as_array()).ok_or_else(|| field(path, "vocab", "missing"))?;
    let n_inner = (vocab_size - n_special).min(ranks.len());

    let mut tokens: Vec<Option<String>> = vec![None; n_special];
    for (i, s) in specials.iter().enumerate() {
        let rank = s
            .get("rank")
            .and_then(|r| r.as_u64())
            .ok_or_else(|| field(path, &format!("special_tokens[{i}].rank"), "missing"))?;
        let text = s
            .get("token_str")
            .and_then(|r| r.as_str())
            .ok_or_else(|| field(path, &format!("special_tokens[{i}].token_str"), "missing"))?;
        if rank as usize >= n_special || tokens[rank as usize].is_some() {
            return Err(field(
                path,
                &format!("special_tokens[{i}].rank"),
                format!("{rank} is out of range or repeated"),
            ));
        }
        tokens[rank as usize] = Some(text.to_owned());
    }
    for (i, t) in tokens.iter_mut().enumerate() {
        // mistral-common fills unlisted reserved ids with <SPECIAL_i>
        t.get_or_insert_with(|| format!("<SPECIAL_{i}>"));
    }
    let mut types = vec![token_type::CONTROL; n_special];

    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes_of: Vec<Vec<u8>> = Vec::with_capacity(n_inner);
    let mut rank_of: HashMap<Vec<u8>, usize> = HashMap::with_capacity(n_inner);
    for (i, r) in ranks[..n_inner].iter().enumerate() {
        let rank = r.get("rank").and_then(|x| x.as_u64());
        if rank != Some(i as u64) {
            return Err(field(
                path,
                &format!("vocab[{i}].rank"),
                format!("{rank:?}: ranks must be 0, 1, 2, … in order"),
            ));
        }
        let enc = r
            .get("token_bytes")
            .and_then(|x| x.as_str())
            .ok_or_else(|| field(path, &format!("vocab[{i}].token_bytes"), "missing"))?;
        let b =
            b64.decode(enc).map_err(|e| field(path, &format!("vocab[{i}].token_bytes"), format!("bad base64: {e}")))?;
        if b.is_empty() || rank_of.insert(b.clone(), i).is_some() {
            return Err(field(path, &format!("vocab[{i}].token_bytes"), "empty or repeated token"));
        }
        bytes_of.push(b);
    }
    let table = bytes_to_unicode();
    let mut merges = Vec::new();
    for b in &bytes_of {
        tokens.push(Some(spell(b, &table)));
        types.push(token_type::NORMAL);
        let mut local: Vec<(usize, usize, usize)> =
            (1..b.len()).filter_map(|i| Some((*rank_of.get(&b[..i])?, *rank_of.get(&b[i..])?, i))).collect();
        local.sort();
        merges.extend(
            local.into_iter().map(|(_, _, i)| format!("{} {}", spell(&b[..i], &table), spell(&b[i..], &table))),
        );
    }
    let v = finish(tokens, types, vocab_size, merges, pattern.to_owned(), DEFAULT_CHAT_TEMPLATE.to_owned(), path)?;
    // mistral-common's pad token, as llama.cpp's Mistral-format converter reads it (`MistralVocab.pad_id`)
    Ok(Vocab { pad: v.special_id("<pad>"), ..v })
}

/// From HF `tokenizer.json` (BPE with byte-level spelling; specials as added tokens).
pub fn from_hf(dir: &Path, vocab_size: usize) -> Result<Vocab> {
    from_hf_noted(dir, vocab_size).map(|(v, _)| v)
}

/// [`from_hf`], with a note for the user when the file's split pattern was replaced by Tekken's.
pub fn from_hf_noted(dir: &Path, vocab_size: usize) -> Result<(Vocab, Option<String>)> {
    let path = dir.join("tokenizer.json");
    let j = read_json(&path)?;
    let model = j.get("model").ok_or_else(|| field(&path, "model", "missing"))?;
    if model.get("type").and_then(|t| t.as_str()) != Some("BPE") {
        return Err(field(&path, "model.type", "only BPE (Tekken) tokenizers are supported"));
    }
    let vocab = model.get("vocab").and_then(|v| v.as_object()).ok_or_else(|| field(&path, "model.vocab", "missing"))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut put = |id: u64, s: &str, ty: i32, what: &str| -> Result<()> {
        let id = id as usize;
        if id >= vocab_size {
            return Err(field(&path, what, format!("id {id} ≥ vocab_size {vocab_size}")));
        }
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, token_type::UNUSED);
        }
        tokens[id] = Some(s.to_owned());
        types[id] = ty;
        Ok(())
    };
    for (s, id) in vocab {
        let id = id.as_u64().ok_or_else(|| field(&path, &format!("model.vocab.{s}"), "id is not an integer"))?;
        put(id, s, token_type::NORMAL, &format!("model.vocab.{s}"))?;
    }
    if let Some(added) = j.get("added_tokens").and_then(|a| a.as_array()) {
        for (i, a) in added.iter().enumerate() {
            let id = a
                .get("id")
                .and_then(|x| x.as_u64())
                .ok_or_else(|| field(&path, &format!("added_tokens[{i}].id"), "missing"))?;
            let content = a
                .get("content")
                .and_then(|x| x.as_str())
                .ok_or_else(|| field(&path, &format!("added_tokens[{i}].content"), "missing"))?;
            let special = a.get("special").and_then(|x| x.as_bool()).unwrap_or(false);
            let ty = if special { token_type::CONTROL } else { token_type::NORMAL };
            put(id, content, ty, &format!("added_tokens[{i}]"))?;
        }
    }
    let merges = match model.get("merges").and_then(|m| m.as_array()) {
        None => return Err(field(&path, "model.merges", "missing")),
        Some(ms) => ms
            .iter()
            .enumerate()
            .map(|(i, m)| match m {
                Json::String(s) => Ok(s.clone()),
                Json::Array(p) if p.len() == 2 && p.iter().all(|x| x.is_string()) => {
                    Ok(format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")))
                }
                _ => Err(field(&path, &format!("model.merges[{i}]"), "not a pair")),
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let file_pattern = hf_split_pattern(&j);
    let chat_template = hf_chat_template(dir)?.unwrap_or_else(|| DEFAULT_CHAT_TEMPLATE.to_owned());
    let v = finish(tokens, types, vocab_size, merges, String::new(), chat_template, &path)?;
    // ref: transformers `fix_mistral_regex`: the split pattern is a property of the Tekken vocabulary, not of the file
    let (pattern, note) = match file_pattern {
        _ if !is_tekken(&v) => (file_pattern.unwrap_or(TEKKEN_PATTERN).to_owned(), None),
        Some(p) if p != TEKKEN_PATTERN => {
            let what = if p == LLAMA3_PATTERN { "the llama3 pattern of transformers < 5" } else { "another pattern" };
            let note = format!(
                "{}: the pre-tokenizer split pattern is {what}, not Tekken's; storing Tekken's, as mistral-common \
                 and transformers' fix_mistral_regex=True split (otherwise Hindi, Thai or \".\\n//!\" get other ids)",
                path.display()
            );
            (TEKKEN_PATTERN.to_owned(), Some(note))
        }
        _ => (TEKKEN_PATTERN.to_owned(), None),
    };
    let (pad, add_bos) = hf_pad_and_add_bos(dir, &j, &v)?;
    Ok((Vocab { pattern, pad, add_bos, ..v }, note))
}

/// `tokenizer.ggml.padding_token_id` and `add_bos_token` as llama.cpp's converter derives them (gguf-py
/// `SpecialVocab`): the pad token named by `tokenizer_config.json`'s `pad_token` (a string or `{content}`) among
/// `tokenizer.json`'s added tokens, else `config.json`'s `pad_token_id` (or its `text_config`'s); add_bos from the
/// `post_processor` (a `TemplateProcessing` whose single sequence starts with the BOS token: true; `ByteLevel`:
/// false), else `tokenizer_config.json`'s `add_bos_token`, else false.
fn hf_pad_and_add_bos(dir: &Path, tok: &Json, v: &Vocab) -> Result<(Option<u32>, bool)> {
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = if cfg_path.is_file() { Some(read_json(&cfg_path)?) } else { None };
    let named = |key: &str| -> Option<String> {
        match cfg.as_ref()?.get(key)? {
            Json::String(s) => Some(s.clone()),
            Json::Object(o) => o.get("content")?.as_str().map(str::to_owned),
            _ => None,
        }
    };
    let added_id = |content: &str| -> Option<u32> {
        tok.get("added_tokens")?
            .as_array()?
            .iter()
            .find(|a| a.get("content").and_then(|c| c.as_str()) == Some(content))?
            .get("id")?
            .as_u64()
            .map(|id| id as u32)
    };
    let mut pad = named("pad_token").and_then(|p| added_id(&p));
    if pad.is_none() {
        let config = dir.join("config.json");
        if config.is_file() {
            let c = read_json(&config)?;
            let id = c.get("pad_token_id").or_else(|| c.get("text_config")?.get("pad_token_id"));
            pad = id.and_then(|x| x.as_u64()).map(|x| x as u32);
        }
    }
    let pad = pad.filter(|&p| (p as usize) < v.tokens.len());
    let mut add_bos = None;
    if let Some(pp) = tok.get("post_processor").filter(|p| !p.is_null()) {
        let list = match pp.get("processors").and_then(|p| p.as_array()) {
            Some(l) => l.iter().collect::<Vec<_>>(),
            None => vec![pp],
        };
        for p in list {
            match p.get("type").and_then(|t| t.as_str()) {
                Some("ByteLevel") => {
                    add_bos.get_or_insert(false);
                }
                Some("TemplateProcessing") => {
                    let single = p.get("single").and_then(|s| s.as_array()).map(Vec::as_slice).unwrap_or(&[]);
                    if single.len() > 1 {
                        let first = single[0].get("SpecialToken").and_then(|t| t.get("id")).and_then(|i| i.as_str());
                        if let Some(first) = first {
                            add_bos = Some(Some(first) == v.tokens.get(v.bos as usize).map(String::as_str));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let add_bos = add_bos.or_else(|| cfg.as_ref()?.get("add_bos_token")?.as_bool()).unwrap_or(false);
    Ok((pad, add_bos))
}

/// Tekken's reserved ids lead the vocabulary: `<unk> <s> </s> [INST] [/INST]` as control tokens (mistral-common
/// `Tekkenizer.DEPRECATED_SPECIAL_TOKENS` ranks 0..5; both `tekken.json` versions and every Pixtral/Nemo
/// `tokenizer.json`).
pub fn is_tekken(v: &Vocab) -> bool {
    TEKKEN_DEFAULT_SPECIALS[..5]
        .iter()
        .enumerate()
        .all(|(i, s)| v.tokens.get(i).map(String::as_str) == Some(*s) && v.types[i] == token_type::CONTROL)
}

/// The regex of the `Split` pre-tokenizer, if any.
fn hf_split_pattern(j: &Json) -> Option<&str> {
    let pre = j.get("pre_tokenizer")?;
    let list = match pre.get("pretokenizers").and_then(|p| p.as_array()) {
        Some(l) => l.iter().collect::<Vec<_>>(),
        None => vec![pre],
    };
    list.into_iter()
        .find(|p| p.get("type").and_then(|t| t.as_str()) == Some("Split"))?
        .get("pattern")?
        .get("Regex")?
        .as_str()
}

fn hf_chat_template(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return Ok(Some(std::fs::read_to_string(&jinja).map_err(io_err(&jinja))?));
    }
    let cfg = dir.join("tokenizer_config.json");
    if cfg.is_file() {
        if let Some(t) = read_json(&cfg)?.get("chat_template").and_then(|t| t.as_str()) {
            return Ok(Some(t.to_owned()));
        }
    }
    Ok(None)
}
