//! Mistral instruct template v3 (Tekken), assembled from ids, never by re-tokenizing a rendered string:
//! `<s>[INST]user1[/INST]assistant1</s>[INST]user2[/INST]`, as mistral-common's `InstructTokenizerV3` does:
//! - a system prompt goes before the *last* user message, followed by two newlines: tokenized together with
//!   the text of a text-only message, on its own before the chunks of a message with images;
//! - an image is `([IMG] × gw + [IMG_BREAK]) × gh` with the last token replaced by `[IMG_END]`; a message
//!   whose only image comes after its text has the image moved first (mistral-common's `force_img_first`);
//! - each text chunk is tokenized on its own.

use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// A piece of a message: text, an image given by its patch grid, or ids as the model produced them (an
/// answer kept token for token, so the next turn finds it in the KV cache as it was generated).
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Text(String),
    Image { grid_w: usize, grid_h: usize },
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Chunk>,
}

impl Message {
    pub fn user(s: impl Into<String>) -> Message {
        Message { role: Role::User, content: vec![Chunk::Text(s.into())] }
    }
    pub fn user_chunks(content: Vec<Chunk>) -> Message {
        Message { role: Role::User, content }
    }
    pub fn assistant(s: impl Into<String>) -> Message {
        Message { role: Role::Assistant, content: vec![Chunk::Text(s.into())] }
    }

    /// The text of a message (its text chunks joined).
    pub fn text(&self) -> String {
        self.content.iter().filter_map(|c| if let Chunk::Text(t) = c { Some(t.as_str()) } else { None }).collect()
    }
}

/// The ids of one image's tokens.
pub fn image_tokens(tok: &Tokenizer, grid_w: usize, grid_h: usize) -> Result<Vec<u32>> {
    let id =
        |s: &str| tok.control_id(s).ok_or_else(|| Error::Invalid(format!("the vocabulary has no {s} control token")));
    let (img, brk, end) = (id("[IMG]")?, id("[IMG_BREAK]")?, id("[IMG_END]")?);
    let mut ids = Vec::with_capacity((grid_w + 1) * grid_h);
    for _ in 0..grid_h {
        ids.extend(std::iter::repeat_n(img, grid_w));
        ids.push(brk);
    }
    if let Some(last) = ids.last_mut() {
        *last = end;
    }
    Ok(ids)
}

/// The control ids the template needs.
pub struct ChatTokens {
    pub bos: u32,
    pub eos: u32,
    pub inst: u32,
    pub inst_end: u32,
}

impl ChatTokens {
    pub fn new(tok: &Tokenizer) -> Result<ChatTokens> {
        let id = |s: &str| {
            tok.control_id(s).ok_or_else(|| Error::Invalid(format!("the vocabulary has no {s} control token")))
        };
        Ok(ChatTokens { bos: tok.bos, eos: tok.eos, inst: id("[INST]")?, inst_end: id("[/INST]")? })
    }
}

/// Ids of a whole conversation ending in a user message, ready for generation.
pub fn encode_chat(tok: &Tokenizer, system: Option<&str>, messages: &[Message]) -> Result<Vec<u32>> {
    let ct = ChatTokens::new(tok)?;
    let last_user = messages.iter().rposition(|m| m.role == Role::User);
    if messages.last().map(|m| m.role) != Some(Role::User) {
        return Err(Error::Request("a conversation to answer must end with a user message".into()));
    }
    let mut ids = vec![ct.bos];
    for (i, m) in messages.iter().enumerate() {
        let sys = system.filter(|s| Some(i) == last_user && !s.is_empty());
        match (m.role, m.content.as_slice()) {
            (Role::User, [Chunk::Text(text)]) => {
                ids.push(ct.inst);
                match sys {
                    Some(sys) => ids.extend(tok.encode(&format!("{sys}\n\n{text}"))),
                    None => ids.extend(tok.encode(text)),
                }
                ids.push(ct.inst_end);
            }
            (Role::User, chunks) => {
                ids.push(ct.inst);
                if let Some(sys) = sys {
                    ids.extend(tok.encode(&format!("{sys}\n\n")));
                }
                let image_last = chunks.len() >= 2
                    && matches!(chunks.last(), Some(Chunk::Image { .. }))
                    && chunks[..chunks.len() - 1].iter().all(|c| matches!(c, Chunk::Text(_)));
                let order: Vec<&Chunk> = if image_last {
                    std::iter::once(&chunks[chunks.len() - 1]).chain(&chunks[..chunks.len() - 1]).collect()
                } else {
                    chunks.iter().collect()
                };
                for c in order {
                    match c {
                        Chunk::Text(t) => ids.extend(tok.encode(t)),
                        Chunk::Image { grid_w, grid_h } => ids.extend(image_tokens(tok, *grid_w, *grid_h)?),
                        Chunk::Tokens(t) => ids.extend_from_slice(t),
                    }
                }
                ids.push(ct.inst_end);
            }
            (Role::Assistant, chunks) => {
                for c in chunks {
                    match c {
                        Chunk::Text(t) => ids.extend(tok.encode(t)),
                        Chunk::Tokens(t) => ids.extend_from_slice(t),
                        Chunk::Image { .. } => {
                            return Err(Error::Request(format!(
                                "message {i}: an assistant message cannot hold an image"
                            )))
                        }
                    }
                }
                ids.push(ct.eos);
            }
        }
    }
    Ok(ids)
}

/// The prompt as the model sees it, for people (`--verbose-prompt`): text decoded, control tokens by their
/// spelling (`<s>`, `[INST]`, …), and a run of one repeated control token written once with its count
/// (`[IMG]×64`), so an image reads as `([IMG]×gw[IMG_BREAK])×gh` rows instead of thousands of tokens.
pub fn render_prompt(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut out = String::new();
    let mut text: Vec<u32> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        if !tok.is_control(id) {
            text.push(id);
            i += 1;
            continue;
        }
        out.push_str(&tok.decode(&text));
        text.clear();
        let run = ids[i..].iter().take_while(|&&t| t == id).count();
        out.push_str(&String::from_utf8_lossy(tok.piece(id)));
        if run > 1 {
            out.push_str(&format!("×{run}"));
        }
        i += run;
    }
    out.push_str(&tok.decode(&text));
    out
}
