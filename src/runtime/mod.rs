//! Everything around the model: chat template, sampler, stop strings, session and conversation (the KV cache
//! and the tokenizer are the model's: [`crate::model`]).

pub mod chat;
pub mod conversation;
pub mod engine;
pub mod images;
pub mod request;
pub mod sampler;
pub mod session;
pub mod stop;
