//! `GET /metrics`: counters and gauges in Prometheus' text exposition format (version 0.0.4). A dozen lines of
//! `# HELP`/`# TYPE`/value; the `prometheus` crate's registry and encoders would bring far more than this needs.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// Requests answered, by status code class (`2xx`, `4xx`, `5xx`).
    pub requests_ok: AtomicU64,
    pub requests_client_error: AtomicU64,
    pub requests_server_error: AtomicU64,
    /// Jobs dropped because their client went away.
    pub cancelled: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Jobs waiting for a slot, and slots with a job.
    pub queued: AtomicU64,
    pub slots_busy: AtomicU64,
    pub images_encoded: AtomicU64,
    pub images_cached: AtomicU64,
    steps: Mutex<Steps>,
}

/// Forward passes: rows and seconds, split into passes with prompt rows and decode-only passes.
#[derive(Default, Clone, Copy)]
struct Steps {
    prefill_rows: u64,
    prefill_s: f64,
    decode_rows: u64,
    decode_s: f64,
}

impl Metrics {
    /// One forward pass of `decode` decode rows and `prefill` prompt rows that took `secs`.
    pub fn record_step(&self, decode: usize, prefill: usize, secs: f64) {
        let mut s = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        if prefill > 0 {
            s.prefill_rows += prefill as u64;
            s.prefill_s += secs;
        } else {
            s.decode_rows += decode as u64;
            s.decode_s += secs;
        }
    }

    /// The text exposition; `image_cache` is (images, bytes) held by the encoded-image cache.
    pub fn render(&self, parallel: usize, image_cache: (usize, usize)) -> String {
        let s = *self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut o = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(o, "# HELP pixtral_{name} {help}\n# TYPE pixtral_{name} {kind}\npixtral_{name} {value}");
        };
        let rate = |rows: u64, secs: f64| if secs > 0.0 { rows as f64 / secs } else { 0.0 };
        put("requests_ok_total", "counter", "Chat completions answered (2xx).", get(&self.requests_ok).to_string());
        put(
            "requests_client_error_total",
            "counter",
            "Requests refused (4xx).",
            get(&self.requests_client_error).to_string(),
        );
        put(
            "requests_server_error_total",
            "counter",
            "Requests failed (5xx).",
            get(&self.requests_server_error).to_string(),
        );
        put(
            "requests_cancelled_total",
            "counter",
            "Requests dropped because the client went away.",
            get(&self.cancelled).to_string(),
        );
        put(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of requests given a slot.",
            get(&self.prompt_tokens).to_string(),
        );
        put(
            "prompt_tokens_cached_total",
            "counter",
            "Of those, found in the slot's KV cache.",
            get(&self.cached_tokens).to_string(),
        );
        put("completion_tokens_total", "counter", "Tokens generated.", get(&self.completion_tokens).to_string());
        put("queue_depth", "gauge", "Requests waiting for a slot.", get(&self.queued).to_string());
        put("slots_busy", "gauge", "Slots with a request.", get(&self.slots_busy).to_string());
        put("slots_total", "gauge", "Slots (--parallel).", parallel.to_string());
        put(
            "prefill_tokens_per_second",
            "gauge",
            "Prompt rows / seconds of the passes that had prompt rows.",
            format!("{:.3}", rate(s.prefill_rows, s.prefill_s)),
        );
        put(
            "decode_tokens_per_second",
            "gauge",
            "Decode rows / seconds of decode-only passes (all streams together).",
            format!("{:.3}", rate(s.decode_rows, s.decode_s)),
        );
        put(
            "images_encoded_total",
            "counter",
            "Images through the vision tower.",
            get(&self.images_encoded).to_string(),
        );
        put(
            "image_cache_hits_total",
            "counter",
            "Images found in the encoded-image cache.",
            get(&self.images_cached).to_string(),
        );
        put("image_cache_images", "gauge", "Images held by the encoded-image cache.", image_cache.0.to_string());
        put("image_cache_bytes", "gauge", "Bytes held by the encoded-image cache.", image_cache.1.to_string());
        o
    }
}
