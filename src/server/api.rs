//! OpenAI's chat completions API: the request body (serde types, field names as OpenAI spells them), its checks,
//! its translation into the library's [`Request`], and the response bodies (a `chat.completion`, or
//! `chat.completion.chunk`s for `stream: true`). Errors are OpenAI's error JSON
//! (`{"error": {"message", "type", "param", "code"}}`) with the status that fits (see [`ApiError`]).
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat/create>. Beyond OpenAI (llama-server's
//! names): `top_k`, `min_p`, `repeat_penalty`, and `timings` in each response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::model::tokenizer::Tokenizer;
use crate::runtime::request::{
    FinishReason, ImageSource, Part, Request, RequestMessage, Role, TokenLogprobs, MAX_TOP_LOGPROBS,
};
use crate::server::scheduler::Summary;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub min_p: Option<f32>,
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    #[serde(default)]
    pub seed: Option<i64>,
    /// llama-server's: never end with EOS (the answer runs to `max_tokens` or the slot's context).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A string, or a list of parts (`{"type": "text", "text"}`, `{"type": "image_url", "image_url": {"url"}}`),
    /// read by [`translate`] so that a bad part's error names it.
    #[serde(default)]
    pub content: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaSpec },
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaSpec {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

/// An error as OpenAI returns it, with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), param: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    /// A 400 naming the request field at fault.
    pub fn param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), param: Some(param.to_string()) }
    }

    /// The same error, naming the request field `param`.
    pub fn at(mut self, param: &str) -> ApiError {
        self.param = Some(param.to_string());
        self
    }

    /// OpenAI's `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "unavailable_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn body(&self) -> Value {
        // OpenAI's `code` is a string or null
        let code = match self.status.as_u16() {
            401 => json!("invalid_api_key"),
            429 => json!("rate_limit_exceeded"),
            _ => Value::Null,
        };
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if matches!(self.status.as_u16(), 429 | 503) {
            r.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<crate::Error> for ApiError {
    /// The request's own faults (bad images, a prompt too long, …) are 400s; memory is 503; the rest 500.
    fn from(e: crate::Error) -> ApiError {
        use crate::Error as E;
        let status = match &e {
            E::Request(_) | E::Invalid(_) | E::PromptTooLong { .. } | E::ContextFull { .. } | E::Io { .. } => {
                StatusCode::BAD_REQUEST
            }
            E::Memory { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut message = e.to_string();
        if let E::PromptTooLong { .. } = e {
            message.push_str(" (per slot: start the server with a larger --ctx-size or fewer --parallel slots)");
        }
        ApiError::new(status, message)
    }
}

/// Parse a body: JSON first (a syntax error names line and column), then the types (an error names the field's
/// path, e.g. `messages[0].content`).
pub fn parse(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object (a chat completion request)"));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        // serde names JSON types by Rust's (`expected f32`): say them as JSON does
        let mut msg = e.into_inner().to_string();
        for (rust, json) in [
            ("f32", "a number"),
            ("u64", "a whole number ≥ 0"),
            ("usize", "a whole number ≥ 0"),
            ("i64", "a whole number"),
        ] {
            msg = msg.replace(&format!("expected {rust}"), &format!("expected {json}"));
        }
        match path.as_str() {
            // a missing top-level field: serde names it in backticks
            "." => {
                let field = msg.split('`').nth(1).unwrap_or("").to_string();
                ApiError { param: (!field.is_empty()).then_some(field), ..ApiError::bad_request(msg) }
            }
            _ => ApiError::param(&path, format!("{path}: {msg}")),
        }
    })
}

/// The checked settings of a [`ChatRequest`], beside its [`Request`].
#[derive(Debug)]
pub struct Settings {
    pub stream: bool,
    pub include_usage: bool,
    /// `None`: until EOS or the slot's context is full.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub sampling: crate::SamplerParams,
    pub logprobs: bool,
    pub top_logprobs: usize,
    /// A JSON schema to follow (`json_object`: `{"type": "object"}`).
    pub schema: Option<Value>,
    /// EOS is never drawn.
    pub ignore_eos: bool,
}

/// Check `r` and split it into the library's [`Request`] and the settings; `fetch(url, field)` brings each image
/// (see [`crate::server::media::fetch`]). Refused with the field's name: `n` ≠ 1, penalties or `logit_bias` or
/// `tools` (not supported), values out of range, roles other than system/developer/user/assistant, images
/// outside user messages.
pub fn translate(
    r: ChatRequest,
    mut fetch: impl FnMut(&str, &str) -> Result<ImageSource, ApiError>,
) -> Result<(Request, Settings), ApiError> {
    if r.n.is_some_and(|n| n != 1) {
        return Err(ApiError::param(
            "n",
            format!("n is {}: this server gives one choice per request (n = 1)", r.n.unwrap_or(0)),
        ));
    }
    for (name, v) in [("frequency_penalty", r.frequency_penalty), ("presence_penalty", r.presence_penalty)] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::param(name, format!("{name} is not supported (use repeat_penalty)")));
        }
    }
    if r.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::param("logit_bias", "logit_bias is not supported"));
    }
    if r.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::param("tools", "tools (function calling) are not supported"));
    }
    if r.messages.is_empty() {
        return Err(ApiError::param("messages", "messages is empty"));
    }
    let max_tokens = match r.max_completion_tokens.or(r.max_tokens) {
        Some(0) => return Err(ApiError::param("max_tokens", "max_tokens must be at least 1")),
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let d = crate::SamplerParams::default();
    let seed = match r.seed {
        Some(s) => s as u64,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos() as u64),
    };
    let sampling = crate::SamplerParams {
        temp: r.temperature.unwrap_or(d.temp),
        top_k: r.top_k.unwrap_or(d.top_k),
        top_p: r.top_p.unwrap_or(d.top_p),
        min_p: r.min_p.unwrap_or(d.min_p),
        repeat_penalty: r.repeat_penalty.unwrap_or(d.repeat_penalty),
        seed,
        ..d
    };

    let top_logprobs = r.top_logprobs.unwrap_or(0);
    let logprobs = r.logprobs.unwrap_or(false);
    if top_logprobs > 0 && !logprobs {
        return Err(ApiError::param("top_logprobs", "top_logprobs needs logprobs: true"));
    }
    if top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ApiError::param(
            "top_logprobs",
            format!("top_logprobs is {top_logprobs}: at most {MAX_TOP_LOGPROBS}"),
        ));
    }
    let check = crate::GenerateOptions { sampling: sampling.clone(), top_logprobs, ..Default::default() };
    check.check().map_err(|e| {
        // the check's message starts with the field's OpenAI name
        let msg = e.to_string();
        let name = msg.split_whitespace().next().unwrap_or("").to_string();
        ApiError::param(&name, msg)
    })?;
    let stop = match r.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) if v.len() > 4 => return Err(ApiError::param("stop", "stop: at most 4 strings")),
        Some(Stop::Many(v)) => v,
    };
    let schema = match r.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(json!({"type": "object"})),
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(json_schema.schema.unwrap_or(json!({}))),
    };

    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(ApiError::param(
                    &format!("messages[{i}].role"),
                    format!("messages[{i}].role is {other:?}: expected system, developer, user or assistant"),
                ))
            }
        };
        let mut content = Vec::new();
        let at = format!("messages[{i}].content");
        match m.content {
            // only an assistant message may come without content (OpenAI: one that made tool calls)
            None | Some(Value::Null) if role == Role::Assistant => {}
            None | Some(Value::Null) => return Err(ApiError::param(&at, format!("{at} is missing"))),
            Some(Value::String(t)) => content.push(Part::Text(t)),
            Some(Value::Array(parts)) => {
                if parts.is_empty() && role != Role::Assistant {
                    return Err(ApiError::param(&at, format!("{at} is an empty list")));
                }
                for (j, p) in parts.into_iter().enumerate() {
                    let at = format!("{at}[{j}]");
                    content.push(part(p, &at, role, &mut fetch)?);
                }
            }
            Some(_) => return Err(ApiError::param(&at, format!("{at} must be a string or a list of parts"))),
        }
        messages.push(RequestMessage { role, content });
    }
    let stream = r.stream.unwrap_or(false);
    let include_usage = r.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let ignore_eos = r.ignore_eos.unwrap_or(false);
    let settings =
        Settings { stream, include_usage, max_tokens, stop, sampling, logprobs, top_logprobs, schema, ignore_eos };
    Ok((Request { messages, image_max_side: None, raw: false }, settings))
}

/// One content part: `{"type": "text", "text": STRING}` or `{"type": "image_url", "image_url": {"url": URL}}` (the
/// URL alone also taken); errors name the part (`messages[0].content[1].image_url.url`).
fn part(
    p: Value,
    at: &str,
    role: Role,
    fetch: &mut impl FnMut(&str, &str) -> Result<ImageSource, ApiError>,
) -> Result<Part, ApiError> {
    let bad = |field: &str, msg: &str| ApiError::param(&format!("{at}{field}"), format!("{at}{field} {msg}"));
    let Value::Object(mut o) = p else { return Err(bad("", "must be an object with a \"type\"")) };
    match o.get("type").and_then(Value::as_str) {
        Some("text") => match o.remove("text") {
            Some(Value::String(t)) => Ok(Part::Text(t)),
            Some(_) => Err(bad(".text", "must be a string")),
            None => Err(bad(".text", "is missing")),
        },
        Some("image_url") => {
            let url = match o.get("image_url") {
                Some(Value::Object(u)) => u.get("url").and_then(Value::as_str),
                Some(Value::String(u)) => Some(u.as_str()),
                _ => None,
            };
            let Some(url) = url else { return Err(bad(".image_url.url", "is missing (a string)")) };
            let at = format!("{at}.image_url.url");
            if role != Role::User {
                return Err(ApiError::param(&at, format!("{at}: images go in user messages")));
            }
            Ok(Part::Image(fetch(url, &at).map_err(|e| e.at(&at))?))
        }
        Some(other) => Err(bad(".type", &format!("{other:?} is not supported (text, image_url)"))),
        None => Err(bad(".type", "is missing")),
    }
}

/// OpenAI's logprob entry for one token: `{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`.
pub fn logprob_entry(tok: &Tokenizer, lp: &TokenLogprobs) -> Value {
    let one = |id: u32, logprob: f32| {
        let bytes = tok.piece(id);
        json!({"token": String::from_utf8_lossy(bytes), "logprob": logprob, "bytes": bytes})
    };
    let mut e = one(lp.id, lp.logprob);
    e["top_logprobs"] = Value::Array(lp.top.iter().map(|&(id, l)| one(id, l)).collect());
    e
}

/// `usage` (with the cached part of the prompt and the images) and llama-server-style `timings`.
pub fn usage_and_timings(s: &Summary) -> (Value, Value) {
    let u = &s.usage;
    let usage = u.to_json();
    let t = &s.timings;
    let per_s = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let evaluated = u.prompt_tokens - u.cached_tokens;
    let timings = json!({
        "image_encode_ms": t.image_encode_s * 1e3,
        "prompt_n": evaluated,
        "prompt_ms": t.prompt_s * 1e3,
        "prompt_per_second": per_s(evaluated, t.prompt_s),
        "predicted_n": u.completion_tokens,
        "predicted_ms": t.generation_s * 1e3,
        "predicted_per_second": per_s(u.completion_tokens.saturating_sub(1), t.generation_s),
    });
    (usage, timings)
}

/// OpenAI's `finish_reason`: `stop` or `length` (a cancelled request has no client left to tell).
pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        _ => "stop",
    }
}
