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
//! an answer cut short (Ctrl-C, `max_tokens`) stays in the conversation as far as it got. An answer ended by a
//! stop string is kept as the text shown (the stop string is not part of the conversation).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::runtime::chat::{encode_chat, Chunk, Message, Role};
use crate::runtime::engine::prompt_ids;
use crate::runtime::images::{EncodedImage, ImageKey};
use crate::runtime::request::{Completion, FinishReason, GenerateOptions, Timings, TokenEvent, Usage};
use crate::runtime::sampler::Sampler;
use crate::runtime::session::Session;
use crate::runtime::stop::StopStrings;

#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub system: Option<String>,
    /// BOS and the messages' content without the chat template (see [`crate::Request::raw`]).
    pub raw: bool,
    messages: Vec<Message>,
    /// the images of `messages`, in order of appearance
    images: Vec<Arc<EncodedImage>>,
    /// keys of the tokens the session holds (see [`Conversation::encode`])
    fed: Vec<Key>,
}

/// What a position of the prompt is compared by: its id, or for an `[IMG]` token the content key of its image
/// (every image shares the id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Token(u32),
    Image(ImageKey),
}

/// A conversation as the model sees it.
pub(crate) struct Encoded {
    pub ids: Vec<u32>,
    pub keys: Vec<Key>,
    /// per `[IMG]` token: (image index, patch index)
    pub rows: Vec<(usize, usize)>,
}

impl Encoded {
    /// Key the prompt `ids` whose `[IMG]` tokens belong to `images`, in order: per position, the id, or for an
    /// `[IMG]` token its image's content key; and the image rows `(image index, patch)` in order.
    pub(crate) fn new(tok: &Tokenizer, ids: Vec<u32>, images: &[Arc<EncodedImage>]) -> Result<Encoded> {
        let img = tok.control_id("[IMG]");
        let end = tok.control_id("[IMG_END]");
        let (mut keys, mut rows) = (Vec::with_capacity(ids.len()), Vec::new());
        let (mut image, mut patch) = (0, 0);
        for &id in &ids {
            if Some(id) == img {
                let e =
                    images.get(image).ok_or_else(|| Error::Invalid("more images in the prompt than encoded".into()))?;
                keys.push(Key::Image(e.key));
                rows.push((image, patch));
                patch += 1;
            } else {
                keys.push(Key::Token(id));
                if Some(id) == end {
                    image += 1;
                    patch = 0;
                }
            }
        }
        Ok(Encoded { ids, keys, rows })
    }
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
        self.images.iter().map(|e| &**e)
    }

    /// Add a user message: `images` first, then `text` (mistral-common's order for a message with images).
    pub fn push_user(&mut self, text: &str, images: Vec<Arc<EncodedImage>>) {
        let mut content = Vec::with_capacity(images.len() + 1);
        for image in images {
            content.push(Chunk::Image { grid_w: image.grid_w, grid_h: image.grid_h });
            self.images.push(image);
        }
        content.push(Chunk::Text(text.to_string()));
        self.messages.push(Message::user_chunks(content));
    }

    /// Add a message whose `Chunk::Image`s are `images`, in order (see [`crate::Engine::push_user`]).
    pub fn push(&mut self, message: Message, images: Vec<Arc<EncodedImage>>) -> Result<()> {
        let grids: Vec<(usize, usize)> = message
            .content
            .iter()
            .filter_map(|c| if let Chunk::Image { grid_w, grid_h } = c { Some((*grid_w, *grid_h)) } else { None })
            .collect();
        if grids != images.iter().map(|e| (e.grid_w, e.grid_h)).collect::<Vec<_>>() {
            return Err(Error::Invalid("the message's images and the encoded images differ".into()));
        }
        self.messages.push(message);
        self.images.extend(images);
        Ok(())
    }

    /// Take a request's messages (see [`crate::runtime::engine::Prepared`]) in place of this conversation's: the
    /// session's KV cache is still reused as far as the new messages match what it holds. `images` are the
    /// `Chunk::Image`s of `messages`, in order.
    pub fn replace(
        &mut self,
        raw: bool,
        system: Option<String>,
        messages: Vec<Message>,
        images: Vec<Arc<EncodedImage>>,
    ) {
        self.raw = raw;
        self.system = system;
        self.messages = messages;
        self.images = images;
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

    /// Ids of the conversation and, per position, the key it is compared by (see [`Encoded::new`]).
    fn encode(&self, tok: &Tokenizer) -> Result<Encoded> {
        Encoded::new(tok, prompt_ids(tok, self.raw, self.system.as_deref(), &self.messages)?, &self.images)
    }

    /// Tokens the conversation takes in the context, with the frame of one more (empty) user message.
    pub fn prompt_tokens(&self, tok: &Tokenizer) -> Result<usize> {
        let mut m = self.messages.clone();
        if m.last().map(|m| m.role) != Some(Role::User) {
            m.push(Message::user(""));
        }
        Ok(encode_chat(tok, self.system.as_deref(), &m)?.len())
    }

    /// Answer the last user message: rewind `session` to the prefix it shares with this conversation (an image's
    /// tokens match by its content key), prefill the rest, generate as `opts` says, and keep the answer (as the
    /// ids sampled, so the next turn finds them in the cache; an answer cut short stays as far as it got).
    /// On an error (a cancelled prefill, a full context) the conversation is unchanged.
    pub fn respond(&mut self, session: &mut Session, opts: &mut GenerateOptions) -> Result<Completion> {
        opts.check()?;
        let tok = &session.model.tokenizer;
        let dim = session.model.cfg.dim;
        for (i, e) in self.images.iter().enumerate() {
            if e.embeds.len() != e.grid_w * e.grid_h * dim {
                return Err(Error::Invalid(format!(
                    "image {i}: {} values of features, but a {}x{} grid at width {dim} needs {}",
                    e.embeds.len(),
                    e.grid_w,
                    e.grid_h,
                    e.grid_w * e.grid_h * dim
                )));
            }
        }
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
        let first_row = keys[..lcp].iter().filter(|k| matches!(k, Key::Image(_))).count();
        let mut embeds = Vec::with_capacity((rows.len() - first_row) * dim);
        for &(image, patch) in &rows[first_row..] {
            embeds.extend_from_slice(&self.images[image].embeds[patch * dim..(patch + 1) * dim]);
        }
        let mut sampler = Sampler::new(opts.sampling.clone());
        let mut stops = StopStrings::new(&opts.stop);
        let mut text = String::new();
        let mut on_token = opts.on_token.take();
        let mut cancelled_by_caller = false;
        let g = session.generate_with(
            &ids[lcp..],
            &embeds,
            &mut sampler,
            opts.max_tokens,
            opts.top_logprobs,
            opts.cancel,
            |id, piece, logprobs| {
                let (shown, hit) = stops.push(piece);
                text.push_str(&shown);
                let go = on_token.as_mut().is_none_or(|f| f(&TokenEvent { id, text: &shown, logprobs }));
                cancelled_by_caller |= !go;
                go && !hit
            },
        );
        let rest = if stops.matched().is_none() { stops.finish() } else { String::new() };
        if !rest.is_empty() {
            text.push_str(&rest);
            if let Some(f) = on_token.as_mut() {
                let id = g.as_ref().ok().and_then(|g| g.tokens.last().copied()).unwrap_or(tok.eos);
                f(&TokenEvent { id, text: &rest, logprobs: None });
            }
        }
        opts.on_token = on_token;
        let g = g?;
        self.fed.extend_from_slice(&keys[lcp..]);
        self.fed.extend(g.tokens.iter().map(|&t| Key::Token(t)));
        let stop_string = stops.matched().map(str::to_string);
        // the answer as the model made it, so the next turn finds it in the cache; but an answer ended by a stop
        // string is kept as the text shown, without the stop string (OpenAI's semantics): the next turn then
        // re-evaluates from where the two differ, a few tokens
        let answer = match stop_string {
            Some(_) => Chunk::Text(text.clone()),
            None => Chunk::Tokens(g.tokens.iter().copied().filter(|&t| t != tok.eos).collect()),
        };
        self.messages.push(Message { role: Role::Assistant, content: vec![answer] });
        let finish_reason = match g.finish {
            FinishReason::Cancelled if stop_string.is_some() && !cancelled_by_caller => FinishReason::Stop,
            f => f,
        };
        Ok(Completion {
            text,
            finish_reason,
            stop_string,
            context_full: g.context_full,
            usage: Usage {
                prompt_tokens: ids.len(),
                cached_tokens: lcp,
                completion_tokens: g.tokens.len(),
                ..Default::default()
            },
            timings: Timings { image_encode_s: 0.0, prompt_s: g.prompt_seconds, generation_s: g.gen_seconds },
            logprobs: g.logprobs,
            tokens: g.tokens,
        })
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
                        Chunk::Image { .. } => match images.next().and_then(|e| e.path.as_ref()) {
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
        mut load_image: impl FnMut(&std::path::Path) -> Result<Arc<EncodedImage>>,
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
