//! `pixtral serve`: an OpenAI-compatible HTTP server over the library's request path.
//!
//! - HTTP/1.1 from axum on tokio (hyper underneath): the most used Rust HTTP stack, with SSE streaming, body
//!   limits and graceful shutdown built in. Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`
//!   (200 and an empty body when ready, 503 while loading or draining: what mistral-evals polls for),
//!   `GET /metrics` (Prometheus text).
//! - Threads: tokio's 2 workers only parse, fetch and stream; a request's images are read, checked and encoded on
//!   tokio's blocking pool (the vision tower then shares the rayon pool with decoding, so running streams slow
//!   down but keep going); one scheduler thread runs every forward pass ([`scheduler`]).
//! - The model loads after the port is bound, so `/health` answers 503 until it is ready.
//! - SIGTERM or Ctrl-C: no new connections, `/health` 503, requests in flight finish (at most `drain_timeout`),
//!   then `serve` returns `Ok` (exit 0).
//!
//! Layers: `server` → `runtime` (Engine, Prepared, image cache) → `model`; nothing below imports it.

pub mod api;
pub mod grammar;
pub mod media;
pub mod metrics;
pub mod scheduler;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::kv_cache::{KvCache, KvType};
use crate::server::api::ApiError;
use crate::server::grammar::Grammars;
use crate::server::media::MediaPolicy;
use crate::server::metrics::Metrics;
use crate::server::scheduler::{Event, Job, Msg, Params};
use crate::{Engine, EngineOptions, SamplerParams};

/// How `pixtral serve` runs (its flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model: PathBuf,
    pub engine: EngineOptions,
    /// The name `/v1/models` gives (`--alias`; default: the file's stem).
    pub alias: Option<String>,
    pub host: String,
    pub port: u16,
    /// Slots (`--parallel`): requests answered at once, their decode steps batched.
    pub parallel: usize,
    /// KV cache tokens in all (`--ctx-size`), split evenly between the slots (llama-server's rule).
    pub ctx_size: usize,
    /// Rows per forward pass (`--batch-size`).
    pub batch: usize,
    pub kv_type: KvType,
    /// Bearer token every `/v1/*` and `/metrics` request must carry.
    pub api_key: Option<String>,
    pub media: MediaPolicy,
    /// Origins allowed by CORS (`--cors-origin`, repeatable; `*` for any).
    pub cors_origins: Vec<String>,
    /// Largest request body in bytes (`--body-limit`); more is a 413.
    pub body_limit: usize,
    /// Requests waiting for a slot beyond the running ones (`--max-queue`); more get 429.
    pub max_queue: usize,
    /// How long requests in flight may run after SIGTERM.
    pub drain_timeout: Duration,
}

/// What exists once the model is loaded.
struct Ready {
    engine: Arc<Engine>,
    grammars: Grammars,
    tx: Mutex<mpsc::Sender<Msg>>,
    model_id: String,
    ctx_per_slot: usize,
}

struct AppState {
    ready: OnceLock<Ready>,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    /// requests admitted and not yet answered
    inflight: AtomicUsize,
    next_id: AtomicU64,
    api_key_hash: Option<[u8; 32]>,
    opts: ServeOptions,
    created: u64,
}

/// Bind, load, serve until SIGTERM/Ctrl-C (threads: see [`crate::runtime::engine::set_threads`]). Errors: the address cannot be bound, the model cannot be loaded (the
/// server stops: there is nothing to serve), a setting out of range.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    if opts.parallel == 0 || opts.ctx_size < opts.parallel {
        anyhow::bail!("--ctx-size {} cannot be split between {} slots", opts.ctx_size, opts.parallel);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(serve_async(opts))
}

async fn serve_async(opts: ServeOptions) -> anyhow::Result<()> {
    // `[::1]` as URLs write it, or `::1`
    let host = opts.host.trim_start_matches('[').trim_end_matches(']');
    let listener = tokio::net::TcpListener::bind((host, opts.port)).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (another server on the port? try --port)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {} port {}: {e}{hint}", opts.host, opts.port)
    })?;
    let local: SocketAddr = listener.local_addr()?;
    eprintln!("pixtral serve: listening on http://{local} (loading {})", opts.model.display());
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let api_key_hash = opts.api_key.as_ref().map(|k| Sha256::digest(k.as_bytes()).into());
    let state = Arc::new(AppState {
        ready: OnceLock::new(),
        draining: AtomicBool::new(false),
        metrics: Arc::new(Metrics::default()),
        inflight: AtomicUsize::new(0),
        next_id: AtomicU64::new(1),
        api_key_hash,
        opts: opts.clone(),
        created,
    });

    // the model loads while /health says 503
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let st = state.clone();
    std::thread::Builder::new().name("pixtral-load".into()).spawn(move || {
        if let Err(e) = load(&st) {
            let _ = failed_tx.send(e);
        }
    })?;

    let app = router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let st = state.clone();
    let shutdown = async move {
        shutdown_signal().await;
        eprintln!("pixtral serve: stopping: finishing the requests in flight");
        st.draining.store(true, Ordering::SeqCst);
        if let Some(r) = st.ready.get() {
            let _ = r.tx.lock().unwrap_or_else(|e| e.into_inner()).send(Msg::Shutdown);
        }
        let _ = stop_tx.send(true);
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    let drain = opts.drain_timeout;
    let mut stop_rx2 = stop_rx.clone();
    let timeout = async move {
        let _ = stop_rx2.wait_for(|s| *s).await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        r = server => r?,
        Ok(e) = failed_rx => return Err(e),
        _ = timeout => eprintln!("pixtral serve: requests still running after {} s; stopping anyway", drain.as_secs()),
    }
    eprintln!("pixtral serve: stopped");
    Ok(())
}

/// Load the engine, the grammar compiler and the scheduler; mark the state ready.
fn load(st: &Arc<AppState>) -> anyhow::Result<()> {
    let o = &st.opts;
    let t0 = Instant::now();
    let engine = Arc::new(Engine::load(&o.model, &o.engine)?);
    let c = &engine.model.cfg;
    let ctx_per_slot = (o.ctx_size / o.parallel).min(c.context_length.max(1));
    if !o.kv_type.fits(c.head_dim) {
        anyhow::bail!("--kv-type q8_0 needs a head size that is a multiple of 32; this model's is {}", c.head_dim);
    }
    // every slot's KV cache, the batch's activations: refused with both numbers before allocating
    let kv = KvCache::bytes_for(c.n_layers, c.n_heads_kv * c.head_dim, ctx_per_slot, o.kv_type) as u64;
    let need = kv.saturating_mul(o.parallel as u64);
    if let Some(available) = crate::gguf::os::available_memory() {
        if need > available {
            anyhow::bail!(
                "{} slots of {ctx_per_slot} tokens need {} MB of KV cache but {} MB are available: use fewer \
                 --parallel slots or a smaller --ctx-size",
                o.parallel,
                need / 1_000_000,
                available / 1_000_000
            );
        }
    }
    let grammars = Grammars::new(engine.clone()).map_err(|e| anyhow::anyhow!("structured output: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let cfg = scheduler::Config { parallel: o.parallel, ctx_per_slot, batch: o.batch, kv_type: o.kv_type };
    let (e, m) = (engine.clone(), st.metrics.clone());
    std::thread::Builder::new().name("pixtral-scheduler".into()).spawn(move || scheduler::run(e, cfg, rx, m))?;
    let model_id = o
        .alias
        .clone()
        .unwrap_or_else(|| o.model.file_stem().map_or_else(|| "pixtral".into(), |s| s.to_string_lossy().into_owned()));
    eprintln!(
        "pixtral serve: ready in {:.1} s: {model_id}, {} slot{} of {ctx_per_slot} tokens{}",
        t0.elapsed().as_secs_f64(),
        o.parallel,
        if o.parallel == 1 { "" } else { "s" },
        if engine.vision.is_some() { ", images" } else { ", text only (no mmproj)" }
    );
    if let Some(v) = &engine.vision {
        // the largest image at the model's side, with its break and end tokens
        let side = v.cfg.image_size / v.cfg.patch_size;
        let largest = side * side + side;
        if ctx_per_slot <= largest {
            eprintln!(
                "pixtral serve: warning: a slot holds {ctx_per_slot} tokens; the largest image takes {largest}: \
                 give each slot more (--ctx-size) for images at full size"
            );
        }
    }
    let _ = st.ready.set(Ready { engine, grammars, tx: Mutex::new(tx), model_id, ctx_per_slot });
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.opts.body_limit;
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let mut app = Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state.clone());
    if !state.opts.cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origins = &state.opts.cors_origins;
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    app
}

/// `Authorization: Bearer KEY` on `/v1/*` and `/metrics` when the server has a key: compared as SHA-256 digests in
/// constant time (neither the key's bytes nor its length leak through timing).
async fn auth(State(st): State<Arc<AppState>>, headers: HeaderMap, req: HttpRequest, next: Next) -> Response {
    let Some(want) = &st.api_key_hash else { return next.run(req).await };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|g| {
        let g: [u8; 32] = Sha256::digest(g.trim().as_bytes()).into();
        bool::from(g.ct_eq(want))
    });
    if ok {
        return next.run(req).await;
    }
    st.metrics.requests_client_error.fetch_add(1, Ordering::Relaxed);
    let msg = if given.is_none() { "missing API key (Authorization: Bearer KEY)" } else { "wrong API key" };
    ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response()
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    if st.draining.load(Ordering::SeqCst) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping").into_response();
    }
    match st.ready.get() {
        Some(_) => StatusCode::OK.into_response(),
        None => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading the model").into_response(),
    }
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    let Some(r) = st.ready.get() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading the model").into_response();
    };
    let c = &r.engine.model.cfg;
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": r.model_id, "object": "model", "created": st.created, "owned_by": "pixtral",
            "meta": {"n_ctx_slot": r.ctx_per_slot, "n_slots": st.opts.parallel, "n_vocab": c.vocab_size,
                     "vision": r.engine.vision.is_some()}
        }]
    }))
    .into_response()
}

/// `GET /v1/models/{id}`: the one model, by its id (404 for another).
async fn model(State(st): State<Arc<AppState>>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    let Some(r) = st.ready.get() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading the model").into_response();
    };
    if id != r.model_id {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model {id:?} here (this server has {:?})", r.model_id),
        )
        .into_response();
    }
    axum::Json(json!({"id": r.model_id, "object": "model", "created": st.created, "owned_by": "pixtral"}))
        .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let cache = st.ready.get().map_or((0, 0), |r| r.engine.image_cache_usage());
    let text = st.metrics.render(st.opts.parallel, cache);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Raised when dropped (the client went away, or the answer is done): the scheduler then drops the job. Also
/// gives back the request's place in the admission count.
struct Ticket {
    cancel: Arc<AtomicBool>,
    st: Arc<AppState>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.st.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn chat(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let t0 = Instant::now();
    let r = chat_inner(st.clone(), body).await;
    let status = match &r {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status,
    };
    let m = &st.metrics;
    match status.as_u16() {
        200..=299 => {}
        400..=499 => drop(m.requests_client_error.fetch_add(1, Ordering::Relaxed)),
        _ => drop(m.requests_server_error.fetch_add(1, Ordering::Relaxed)),
    }
    if let Err(e) = &r {
        eprintln!(
            "POST /v1/chat/completions {} in {:.0} ms: {}",
            status.as_u16(),
            t0.elapsed().as_secs_f64() * 1e3,
            e.message
        );
    }
    r.unwrap_or_else(|e| e.into_response())
}

async fn chat_inner(st: Arc<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {} bytes (--body-limit)", st.opts.body_limit),
        ),
        s => ApiError::new(s, e.body_text()),
    })?;
    if st.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping"));
    }
    if st.ready.get().is_none() {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "loading the model"));
    }
    let req = api::parse(&body)?;
    // admission: the running requests and a bounded queue
    let limit = st.opts.parallel + st.opts.max_queue;
    if st.inflight.fetch_add(1, Ordering::Relaxed) >= limit {
        st.inflight.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{limit} requests are running or queued (--parallel + --max-queue); try again"),
        ));
    }
    let ticket = Ticket { cancel: Arc::new(AtomicBool::new(false)), st: st.clone() };
    let (cancel, st2) = (ticket.cancel.clone(), st.clone());
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    // fetching, image headers and decoding, the vision tower, grammar compiling: off the async workers
    let (job, settings) = tokio::task::spawn_blocking(move || prepare(&st2, req, cancel, events))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("preparing the request: {e}")))??;
    let ready = st.ready.get().expect("checked above");
    ready
        .tx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Msg::Job(Box::new(job)))
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the scheduler has stopped"))?;
    let id = format!("chatcmpl-{}", st.next_id.fetch_add(1, Ordering::Relaxed));
    let out = Out { id, created: now(), model: ready.model_id.clone(), engine: ready.engine.clone(), settings };
    if out.settings.stream {
        Ok(stream(out, rx, ticket, st.clone()))
    } else {
        collect(out, rx, &st).await.map(|v| axum::Json(v).into_response())
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Everything before the scheduler, on a blocking thread: images fetched and checked, the prompt counted
/// against a slot, images encoded (the cache first), the grammar compiled.
fn prepare(
    st: &AppState,
    req: api::ChatRequest,
    cancel: Arc<AtomicBool>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
) -> Result<(Job, api::Settings), ApiError> {
    let ready = st.ready.get().expect("checked by the caller");
    let policy = &st.opts.media;
    let (request, settings) = api::translate(req, |url, at| media::fetch(url, policy, at))?;
    let engine = &ready.engine;
    // what the library refuses here is the conversation's: its structure, its images, its length
    let prepared = engine.prepare(&request).map_err(|e| {
        // an image's errors start with its field (`messages[0].content[1].image_url.url (data URL): …`)
        let e = ApiError::from(e);
        let field = e.message.split([' ', ':']).next().filter(|f| f.starts_with("messages[")).unwrap_or("messages");
        let field = field.to_string();
        e.at(&field)
    })?;
    prepared.check_fits(ready.ctx_per_slot).map_err(|e| ApiError::from(e).at("messages"))?;
    let grammar = match &settings.schema {
        Some(s) => Some(
            ready
                .grammars
                .json_schema(s)
                .map_err(|e| ApiError::param("response_format", format!("response_format: {e}")))?,
        ),
        None => None,
    };
    let enc = engine.encode(&prepared.images, Vec::new(), &mut |_, _| {})?;
    st.metrics.images_encoded.fetch_add(enc.encoded as u64, Ordering::Relaxed);
    st.metrics.images_cached.fetch_add(enc.cached as u64, Ordering::Relaxed);
    let params = Params {
        max_tokens: settings.max_tokens.unwrap_or(usize::MAX),
        stop: settings.stop.clone(),
        sampling: SamplerParams {
            banned: if settings.ignore_eos { vec![engine.model.tokenizer.eos] } else { Vec::new() },
            ..settings.sampling.clone()
        },
        top_logprobs: settings.top_logprobs,
        logprobs: settings.logprobs,
        grammar,
    };
    let job = Job {
        ids: prepared.ids,
        images: enc.images,
        params,
        cancel,
        events,
        image_encode_s: enc.seconds,
        images_encoded: enc.encoded,
        images_cached: enc.cached,
    };
    Ok((job, settings))
}

/// What a response needs besides the events.
struct Out {
    id: String,
    created: u64,
    model: String,
    engine: Arc<Engine>,
    settings: api::Settings,
}

/// A non-streaming answer: the events gathered into one `chat.completion`.
async fn collect(
    out: Out,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    st: &AppState,
) -> Result<Value, ApiError> {
    let tok = &out.engine.model.tokenizer;
    let (mut text, mut lps) = (String::new(), Vec::new());
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token { text: t, logprobs, .. } => {
                text.push_str(&t);
                if let Some(lp) = logprobs.as_ref().filter(|_| out.settings.logprobs) {
                    lps.push(api::logprob_entry(tok, lp));
                }
            }
            Event::Failed(msg) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg)),
            Event::Done(s) => {
                st.metrics.requests_ok.fetch_add(1, Ordering::Relaxed);
                log_done(&s);
                let (usage, timings) = api::usage_and_timings(&s);
                let logprobs = if out.settings.logprobs { json!({"content": lps}) } else { Value::Null };
                return Ok(json!({
                    "id": out.id, "object": "chat.completion", "created": out.created, "model": out.model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": logprobs,
                        "finish_reason": api::finish_reason(s.finish_reason),
                    }],
                    "usage": usage,
                    "timings": timings,
                }));
            }
        }
    }
    Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the scheduler dropped the request"))
}

fn log_done(s: &scheduler::Summary) {
    let u = &s.usage;
    eprintln!(
        "POST /v1/chat/completions 200: prompt {} tokens ({} cached, {} images encoded, {} cached), {} generated; \
         prompt {:.2} s, generation {:.2} s",
        u.prompt_tokens,
        u.cached_tokens,
        u.images_encoded,
        u.images_cached,
        u.completion_tokens,
        s.timings.prompt_s,
        s.timings.generation_s
    );
}

/// One `chat.completion.chunk` of the answer `o`.
fn chunk_json(o: &Out, delta: Value, logprobs: Value, finish: Value) -> Value {
    json!({
        "id": o.id, "object": "chat.completion.chunk", "created": o.created, "model": o.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    })
}

/// A streaming answer: `data: {chat.completion.chunk}` lines (Server-Sent Events), the role first, a chunk per
/// token, the finish reason, the usage (`stream_options.include_usage`), then `data: [DONE]`. Dropping the body
/// (the client went away) drops the ticket, which cancels the job.
fn stream(out: Out, rx: tokio::sync::mpsc::UnboundedReceiver<Event>, ticket: Ticket, st: Arc<AppState>) -> Response {
    struct S {
        out: Out,
        rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
        _ticket: Ticket,
        st: Arc<AppState>,
        started: bool,
        done: bool,
    }
    let chunk = |o: &Out, delta: Value, logprobs: Value, finish: Value, usage: Option<Value>| -> Bytes {
        let mut c = chunk_json(o, delta, logprobs, finish);
        if o.settings.include_usage {
            c["usage"] = Value::Null;
        }
        if let Some((u, t)) = usage.as_ref().and_then(|u| Some((u.get("usage")?, u.get("timings")?))) {
            c["choices"] = json!([]);
            c["usage"] = u.clone();
            c["timings"] = t.clone();
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let s = S { out, rx, _ticket: ticket, st, started: false, done: false };
    let body = futures_util::stream::unfold(s, move |mut s| async move {
        if s.done {
            return None;
        }
        let mut buf = Vec::new();
        if !s.started {
            s.started = true;
            buf.extend_from_slice(&chunk(
                &s.out,
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                Value::Null,
                None,
            ));
        }
        match s.rx.recv().await {
            Some(Event::Token { text, logprobs, .. }) => {
                let tok = &s.out.engine.model.tokenizer;
                let lp = match logprobs.as_ref().filter(|_| s.out.settings.logprobs) {
                    Some(lp) => json!({"content": [api::logprob_entry(tok, lp)]}),
                    None => Value::Null,
                };
                if !text.is_empty() || !lp.is_null() {
                    buf.extend_from_slice(&chunk(&s.out, json!({"content": text}), lp, Value::Null, None));
                }
            }
            Some(Event::Done(sum)) => {
                s.st.metrics.requests_ok.fetch_add(1, Ordering::Relaxed);
                log_done(&sum);
                let finish = json!(api::finish_reason(sum.finish_reason));
                let (usage, timings) = api::usage_and_timings(&sum);
                if s.out.settings.include_usage {
                    // OpenAI's form: usage null on every chunk, then a last chunk without choices that has it
                    buf.extend_from_slice(&chunk(&s.out, json!({}), Value::Null, finish, None));
                    let u = json!({"usage": usage, "timings": timings});
                    buf.extend_from_slice(&chunk(&s.out, Value::Null, Value::Null, Value::Null, Some(u)));
                } else {
                    // llama-server's: the counts ride on the chunk that ends the answer
                    let mut last = chunk_json(&s.out, json!({}), Value::Null, finish);
                    last["usage"] = usage;
                    last["timings"] = timings;
                    buf.extend_from_slice(format!("data: {last}\n\n").as_bytes());
                }
                buf.extend_from_slice(b"data: [DONE]\n\n");
                s.done = true;
            }
            Some(Event::Failed(msg)) => {
                s.st.metrics.requests_server_error.fetch_add(1, Ordering::Relaxed);
                let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, msg);
                buf.extend_from_slice(format!("data: {}\n\n", e.body()).as_bytes());
                s.done = true;
            }
            None => s.done = true,
        }
        Some((Ok::<Bytes, std::convert::Infallible>(Bytes::from(buf)), s))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}
