//! Mistral instruct template v3 (Tekken), assembled from ids, never by re-tokenizing a rendered string:
//! `<s>[INST]user1[/INST]assistant1</s>[INST]user2[/INST]`. A system prompt goes before the *last* user
//! message's text, followed by two newlines (ref: mistral-common `InstructTokenizerV3`); each text span is
//! tokenized on its own.

use crate::error::{Error, Result};
use crate::runtime::tokenizer::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(s: impl Into<String>) -> Message {
        Message { role: Role::User, content: s.into() }
    }
    pub fn assistant(s: impl Into<String>) -> Message {
        Message { role: Role::Assistant, content: s.into() }
    }
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
        return Err(Error::Invalid("a conversation to answer must end with a user message".into()));
    }
    let mut ids = vec![ct.bos];
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::User => {
                ids.push(ct.inst);
                match system {
                    Some(sys) if Some(i) == last_user && !sys.is_empty() => {
                        ids.extend(tok.encode(&format!("{sys}\n\n{}", m.content)))
                    }
                    _ => ids.extend(tok.encode(&m.content)),
                }
                ids.push(ct.inst_end);
            }
            Role::Assistant => {
                ids.extend(tok.encode(&m.content));
                ids.push(ct.eos);
            }
        }
    }
    Ok(ids)
}
