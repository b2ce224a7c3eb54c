//! Everything around the model: tokenizer, chat template, sampler, KV cache, session.

pub mod chat;
pub mod conversation;
pub mod engine;
pub mod images;
pub mod kv_cache;
pub mod request;
pub mod sampler;
pub mod session;
pub mod stop;
pub mod tokenizer;
