//! `pixtral serve`: the flags of the OpenAI-compatible server (llama-server's names where it has them), handed to
//! [`pixtral::server::serve`].

use std::path::PathBuf;
use std::time::Duration;

use pixtral::model::kv_cache::KvType;
use pixtral::server::media::MediaPolicy;
use pixtral::server::ServeOptions;
use pixtral::EngineOptions;

use crate::ui::{usage, Ui, UiArgs};
use crate::{parse_kv_type, parse_positive, plan};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Text model GGUF (default: the demo model); its mmproj is STEM.mmproj.gguf next to it, or --mmproj.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Vision GGUF (default: STEM.mmproj.gguf next to the model, when present).
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// The model's name in /v1/models (default: the file's stem).
    #[arg(short, long)]
    alias: Option<String>,
    /// Address to listen on: loopback unless told otherwise (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests answered at once (slots); their decode steps share each pass over the weights.
    #[arg(long, visible_alias = "np", default_value_t = 1, value_parser = parse_positive)]
    parallel: usize,
    /// KV cache tokens in all, split evenly between the slots (default: 6400 per slot for Pixtral-12B — its
    /// largest image plus 2048 — or 4096 per slot without a vision tower; capped by the trained context).
    #[arg(short = 'c', long, value_parser = parse_positive)]
    ctx_size: Option<usize>,
    /// Rows per forward pass: every slot's next token, then chunks of new prompts.
    #[arg(short = 'b', long, default_value_t = 64, value_parser = parse_positive)]
    batch_size: usize,
    /// KV cache storage: f16 (default: half of f32), q8_0 (ggml blocks, 53 % of f16; logits move by ~1–3 % of their
    /// range; needs a head size that is a multiple of 32, as Pixtral's 128) or f32 (exact).
    #[arg(long, default_value = "f16", value_parser = parse_kv_type)]
    kv_type: KvType,
    /// Threads, at least 1 (default: the physical cores).
    #[arg(short, long, value_parser = parse_positive)]
    threads: Option<usize>,
    /// Require `Authorization: Bearer KEY` on /v1/* and /metrics.
    #[arg(long, conflicts_with = "api_key_file")]
    api_key: Option<String>,
    /// Read the API key from FILE (its first line), so it is not in the process list.
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Allow `file://` image URLs inside DIR (and nowhere else).
    #[arg(long)]
    media_dir: Option<PathBuf>,
    /// Allow http(s) image URLs (fetched by the server, within --image-bytes and 10 s).
    #[arg(long)]
    allow_remote_media: bool,
    /// Allow browser pages from ORIGIN (CORS); repeatable; `*` for any.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Largest request body in bytes (images in data URLs included).
    #[arg(long, default_value_t = 32 << 20, value_parser = parse_positive)]
    body_limit: usize,
    /// Largest image in bytes, whatever its source.
    #[arg(long, default_value_t = 20 << 20, value_parser = parse_positive)]
    image_bytes: usize,
    /// Requests that may wait for a slot; more are refused with 429.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Bytes of encoded image features kept for images sent again.
    #[arg(long, default_value_t = 256 << 20)]
    image_cache_bytes: usize,
    /// Seconds requests in flight may run after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    #[command(flatten)]
    ui: UiArgs,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let ui = Ui::new(a.ui);
    let model = plan::model_path(&a.model, &ui)?;
    plan::set_threads(a.threads)?;
    let api_key = match (&a.api_key, &a.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(f)) => {
            let io = |source| pixtral::Error::Io { path: f.clone(), source };
            let text = std::fs::read_to_string(f).map_err(io)?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            if key.is_empty() {
                let e = std::io::Error::new(std::io::ErrorKind::InvalidData, "no API key on its first line");
                return Err(io(e).into());
            }
            Some(key)
        }
        (None, None) => None,
    };
    if api_key.as_ref().is_some_and(|k| k.is_empty()) {
        usage!("--api-key is empty");
    }
    let media_dir = match &a.media_dir {
        Some(d) => {
            let io = |source| pixtral::Error::Io { path: d.clone(), source };
            let real = d.canonicalize().map_err(io)?;
            if !real.is_dir() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "--media-dir is not a directory",
                ))
                .into());
            }
            Some(real)
        }
        None => None,
    };
    let header = pixtral::gguf::GgufFile::open(&model)?;
    let cfg = pixtral::gguf::config::TextConfig::from_gguf(&header.header)?;
    let vision = a.mmproj.is_some() || pixtral::gguf::mmproj_path(&model).exists();
    let per_slot = if vision { 6400 } else { 4096 }.min(cfg.context_length.max(1));
    let ctx_size = a.ctx_size.unwrap_or(per_slot * a.parallel);
    if ctx_size < a.parallel {
        usage!("--ctx-size {ctx_size} cannot be split between {} slots", a.parallel);
    }
    let opts = ServeOptions {
        model,
        engine: EngineOptions { mmproj: a.mmproj, image_cache_bytes: a.image_cache_bytes, ..Default::default() },
        alias: a.alias,
        host: a.host,
        port: a.port,
        parallel: a.parallel,
        ctx_size,
        batch: a.batch_size,
        kv_type: a.kv_type,
        api_key,
        media: MediaPolicy {
            dir: media_dir,
            allow_remote: a.allow_remote_media,
            max_bytes: a.image_bytes,
            remote_timeout: Duration::from_secs(10),
        },
        cors_origins: a.cors_origins,
        body_limit: a.body_limit,
        max_queue: a.max_queue,
        drain_timeout: Duration::from_secs(a.drain_timeout),
    };
    pixtral::server::serve(opts)
}
