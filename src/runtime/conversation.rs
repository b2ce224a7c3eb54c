//! A multi-turn conversation on top of a [`Session`]: messages, images encoded once, and the KV cache reused
//! across turns.
//!
//! Each turn re-encodes the whole conversation with the v3 template and compares it with what the session
//! already holds, position by position (an `[IMG]` position compares by *which* image it belongs to, not by
//! its id, which every image shares). The session is rewound to the longest common prefix and only the rest
//! is prefilled: a new turn costs its own tokens, not the conversation's. v3 moves the system prompt in
//! front of the *last* user message, so with a system prompt the reuse ends where it used to stand.
//!
//! Answers are kept as the ids that were sampled ([`Chunk::Tokens`]), so the cache matches them exactly;
//! an answer cut short (Ctrl-C, `max_tokens`) stays in the conversation as far as it got.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::runtime::chat::{encode_chat, Chunk, Message, Role};
use crate::runtime::sampler::Sampler;
use crate::runtime::session::{Generation, Session};

/// An image ready for the decoder: its patch grid and adapter output `(grid_w · grid_h, text dim)`.
#[derive(Debug, Clone)]
pub struct EncodedImage {
    /// Where it came from (kept by [`Conversation::to_json`]).
    pub path: Option<PathBuf>,
    pub grid_w: usize,
    pub grid_h: usize,
    pub embeds: Vec<f32>,
}

#[derive(Debug, Clone)]
struct ImageEntry {
    image: EncodedImage,
    /// unique within the conversation: what an `[IMG]` position is compared by
    uid: u64,
}

/// What a turn cost.
#[derive(Debug, Clone)]
pub struct Reply {
    pub generation: Generation,
    /// tokens of the prompt found in the KV cache
    pub reused: usize,
    /// tokens of the prompt evaluated this turn
    pub prefilled: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub system: Option<String>,
    messages: Vec<Message>,
    /// the images of `messages`, in order of appearance
    images: Vec<ImageEntry>,
    next_uid: u64,
    /// keys of the tokens the session holds (see [`Conversation::keys`])
    fed: Vec<u64>,
}

const IMAGE_KEY: u64 = 1 << 63;

/// A conversation as the model sees it.
struct Encoded {
    ids: Vec<u32>,
    /// per position: the id, or `IMAGE_KEY | uid` for an `[IMG]` token
    keys: Vec<u64>,
    /// per `[IMG]` token: (image index, patch index)
    rows: Vec<(usize, usize)>,
}

impl Conversation {
    pub fn new(system: Option<String>) -> Conversation {
        Conversation { system, ..Default::default() }
    }

    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Images of the conversation, in order.
    pub fn images(&self) -> impl Iterator<Item = &EncodedImage> {
        self.images.iter().map(|e| &e.image)
    }

    /// Add a user message: `images` first, then `text` (mistral-common's order for a message with images).
    pub fn push_user(&mut self, text: &str, images: Vec<EncodedImage>) {
        let mut content = Vec::with_capacity(images.len() + 1);
        for image in images {
            content.push(Chunk::Image { grid_w: image.grid_w, grid_h: image.grid_h });
            self.images.push(ImageEntry { image, uid: self.next_uid });
            self.next_uid += 1;
        }
        content.push(Chunk::Text(text.to_string()));
        self.messages.push(Message::user_chunks(content));
    }

    /// Add an assistant message given as text (a loaded conversation).
    pub fn push_assistant(&mut self, text: &str) {
        self.messages.push(Message::assistant(text));
    }

    /// Drop the last exchange: the last user message and the answers after it. Returns false when there is
    /// no user message.
    pub fn undo(&mut self) -> bool {
        let Some(i) = self.messages.iter().rposition(|m| m.role == Role::User) else { return false };
        let dropped: usize =
            self.messages[i..].iter().flat_map(|m| &m.content).filter(|c| matches!(c, Chunk::Image { .. })).count();
        self.messages.truncate(i);
        self.images.truncate(self.images.len() - dropped);
        true
    }

    /// Drop the oldest exchange: the first user message, its images and the answers up to the next user message.
    /// Never the last user message (the one about to be answered): `None` when only that one is left. Returns the
    /// tokens and images it took. The next [`Conversation::respond`] re-evaluates what follows (positions moved).
    pub fn drop_oldest_exchange(&mut self, tok: &Tokenizer) -> Result<Option<(usize, usize)>> {
        let users: Vec<usize> =
            self.messages.iter().enumerate().filter(|(_, m)| m.role == Role::User).map(|(i, _)| i).collect();
        if users.len() < 2 {
            return Ok(None);
        }
        let before = self.prompt_tokens(tok)?;
        let end = users[1];
        let images: usize =
            self.messages[..end].iter().flat_map(|m| &m.content).filter(|c| matches!(c, Chunk::Image { .. })).count();
        self.messages.drain(..end);
        self.images.drain(..images);
        Ok(Some((before - self.prompt_tokens(tok)?, images)))
    }

    /// Forget the messages (the system prompt stays); the session's cache is reused as far as it matches.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.images.clear();
    }

    /// Ids of the conversation and, per position, the key it is compared by: the id, or for an `[IMG]`
    /// token its image's uid with the top bit set. Also the image rows `(image index, patch)` in order.
    fn encode(&self, tok: &Tokenizer) -> Result<Encoded> {
        let ids = encode_chat(tok, self.system.as_deref(), &self.messages)?;
        let img = tok.control_id("[IMG]");
        let end = tok.control_id("[IMG_END]");
        let (mut keys, mut rows) = (Vec::with_capacity(ids.len()), Vec::new());
        let (mut image, mut patch) = (0, 0);
        for &id in &ids {
            if Some(id) == img {
                let e = self
                    .images
                    .get(image)
                    .ok_or_else(|| Error::Invalid("more images in the prompt than encoded".into()))?;
                keys.push(IMAGE_KEY | e.uid);
                rows.push((image, patch));
                patch += 1;
            } else {
                keys.push(id as u64);
                if Some(id) == end {
                    image += 1;
                    patch = 0;
                }
            }
        }
        Ok(Encoded { ids, keys, rows })
    }

    /// Tokens the conversation takes in the context, with the frame of one more (empty) user message.
    pub fn prompt_tokens(&self, tok: &Tokenizer) -> Result<usize> {
        let mut m = self.messages.clone();
        if m.last().map(|m| m.role) != Some(Role::User) {
            m.push(Message::user(""));
        }
        Ok(encode_chat(tok, self.system.as_deref(), &m)?.len())
    }

    /// Answer the last user message: rewind `session` to the prefix it shares with this conversation,
    /// prefill the rest, generate (as [`Session::generate_with_images`]), and keep the answer.
    /// On an error (a cancelled prefill, a full context) the conversation is unchanged.
    pub fn respond(
        &mut self,
        session: &mut Session,
        sampler: &mut Sampler,
        max_tokens: usize,
        cancel: Option<&AtomicBool>,
        on_text: impl FnMut(&str) -> bool,
    ) -> Result<Reply> {
        let tok = &session.model.tokenizer;
        let Encoded { ids, keys, rows } = self.encode(tok)?;
        if self.fed.len() != session.history().len() {
            // the session was used or reset behind our back: compare nothing
            session.reset();
            self.fed.clear();
        }
        let mut lcp = self.fed.iter().zip(&keys).take_while(|(a, b)| a == b).count();
        // the last prompt token is always evaluated: its logits start the answer
        lcp = lcp.min(ids.len() - 1);
        if !session.rewind(lcp) {
            session.reset();
            lcp = 0;
        }
        self.fed.truncate(lcp);
        let dim = session.model.cfg.dim;
        let first_row = keys[..lcp].iter().filter(|&&k| k & IMAGE_KEY != 0).count();
        let mut embeds = Vec::with_capacity((rows.len() - first_row) * dim);
        for &(image, patch) in &rows[first_row..] {
            embeds.extend_from_slice(&self.images[image].image.embeds[patch * dim..(patch + 1) * dim]);
        }
        let g = session.generate_with_images(&ids[lcp..], &embeds, sampler, max_tokens, cancel, on_text)?;
        self.fed.extend_from_slice(&keys[lcp..]);
        self.fed.extend(g.tokens.iter().map(|&t| t as u64));
        let answer: Vec<u32> = g.tokens.iter().copied().filter(|&t| t != tok.eos).collect();
        self.messages.push(Message { role: Role::Assistant, content: vec![Chunk::Tokens(answer)] });
        Ok(Reply { reused: lcp, prefilled: ids.len() - lcp, generation: g })
    }

    /// The conversation as JSON: `{"system", "messages": [{"role", "content": [{"type": "text"|"image", ...}]}]}`,
    /// images by path (an image without one is saved as `{"type": "image"}` and cannot be loaded back).
    pub fn to_json(&self, tok: &Tokenizer) -> serde_json::Value {
        let mut images = self.images.iter();
        let messages: Vec<serde_json::Value> = self
            .messages
            .iter()
            .map(|m| {
                let content: Vec<serde_json::Value> = m
                    .content
                    .iter()
                    .map(|c| match c {
                        Chunk::Text(t) => serde_json::json!({"type": "text", "text": t}),
                        Chunk::Tokens(t) => serde_json::json!({"type": "text", "text": tok.decode(t)}),
                        Chunk::Image { .. } => match images.next().and_then(|e| e.image.path.as_ref()) {
                            Some(p) => serde_json::json!({"type": "image", "path": p}),
                            None => serde_json::json!({"type": "image"}),
                        },
                    })
                    .collect();
                let role = if m.role == Role::User { "user" } else { "assistant" };
                serde_json::json!({"role": role, "content": content})
            })
            .collect();
        serde_json::json!({"format": "pixtral-conversation-1", "system": self.system, "messages": messages})
    }

    /// A conversation saved by [`Conversation::to_json`]; `load_image` encodes each image path.
    pub fn from_json(
        v: &serde_json::Value,
        mut load_image: impl FnMut(&std::path::Path) -> Result<EncodedImage>,
    ) -> Result<Conversation> {
        let bad = |what: &str| Error::Invalid(format!("not a saved conversation: {what}"));
        if v.get("format").and_then(|f| f.as_str()) != Some("pixtral-conversation-1") {
            return Err(bad("\"format\" is not \"pixtral-conversation-1\""));
        }
        let system = match v.get("system") {
            None | Some(serde_json::Value::Null) => None,
            Some(s) => Some(s.as_str().ok_or_else(|| bad("\"system\" is not a string"))?.to_string()),
        };
        let mut c = Conversation::new(system);
        let messages = v.get("messages").and_then(|m| m.as_array()).ok_or_else(|| bad("no \"messages\" array"))?;
        for (i, m) in messages.iter().enumerate() {
            let content = m
                .get("content")
                .and_then(|c| c.as_array())
                .ok_or_else(|| bad(&format!("message {i} has no content")))?;
            let (mut text, mut images) = (String::new(), Vec::new());
            for part in content {
                match (part.get("type").and_then(|t| t.as_str()), part.get("text"), part.get("path")) {
                    (Some("text"), Some(t), _) => text.push_str(t.as_str().unwrap_or_default()),
                    (Some("image"), _, Some(p)) => {
                        let p = p.as_str().ok_or_else(|| bad(&format!("message {i}: image path is not a string")))?;
                        images.push(load_image(std::path::Path::new(p))?);
                    }
                    (Some("image"), _, None) => return Err(bad(&format!("message {i}: an image without a path"))),
                    _ => return Err(bad(&format!("message {i}: a content part is neither text nor image"))),
                }
            }
            match m.get("role").and_then(|r| r.as_str()) {
                Some("user") => c.push_user(&text, images),
                Some("assistant") if images.is_empty() => c.push_assistant(&text),
                _ => return Err(bad(&format!("message {i}: role is not user, or assistant without images"))),
            }
        }
        Ok(c)
    }
}
