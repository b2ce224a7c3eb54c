//! `pixtral`: the command-line front end, a thin client of the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod bench;
mod input;
mod rates;
mod repl;
mod term;
mod ui;

use pixtral::gguf::config::{TextConfig, VisionConfig};
use pixtral::gguf::{GgufFile, Value};
use pixtral::model::kv_cache::KvType;
use pixtral::model::vision::VitPrecision;
use pixtral::quant::GgmlType;
use ui::{usage, Ui, UiArgs};

const ENV_HELP: &str = "\
Environment:
  PIXTRAL_ISA=scalar|avx2|avx512|neon  force a kernel tier (default: the best this CPU runs; --version lists them)
  PIXTRAL_REPACK=0                     keep Q4_0/Q8_0 weights in the file's layout (no R16 re-layout at load)
  NO_COLOR=1                           no colour on a terminal
  XDG_CACHE_HOME                       where measured speeds are kept for estimates (pixtral/rates.json)

Exit codes: 0 ok, 1 runtime failure, 2 usage (flags, a prompt that cannot fit), 3 a missing or invalid file
(model, mmproj, image, prompt file, checkpoint), 130 interrupted.";

#[derive(Parser)]
#[command(name = "pixtral", about = "CPU-first runtime for Pixtral 12B", after_help = ENV_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert an HF (Llava) or Mistral-native Pixtral checkpoint to GGUF: OUT and OUT's .mmproj.gguf twin.
    Convert {
        /// Checkpoint folder (config.json + model*.safetensors + tokenizer.json, or params.json +
        /// consolidated.safetensors + tekken.json).
        src: PathBuf,
        /// Type of the text weights: f32, f16, bf16, q8_0 (8.5 bits a weight, near-lossless) or q4_0 (4.5 bits).
        #[arg(long, default_value = "q8_0", value_parser = parse_type)]
        outtype: GgmlType,
        /// Type of the vision tower and adapter weights: f32, f16 or q8_0.
        #[arg(long, default_value = "f16", value_parser = parse_vision_type)]
        vision_type: GgmlType,
        /// Output text GGUF; the mmproj goes next to it as STEM.mmproj.gguf.
        #[arg(short, long)]
        out: PathBuf,
        /// Overwrite existing outputs.
        #[arg(long)]
        force: bool,
        /// Vision FFN activation, whatever config.json says: silu (Pixtral's) or gelu. Needed when an HF config
        /// says "gelu" (copies made before October 2024), which is refused otherwise.
        #[arg(long, value_name = "silu|gelu")]
        vision_act: Option<pixtral::gguf::config::VisionAct>,
    },
    /// Generate text: the answer streams to stdout, header and timings go to stderr.
    Run(RunArgs),
    /// Talk with the model: a REPL with history, images, /commands (type /help), the KV cache reused
    /// across turns. Without -m, the demo model.
    Chat(repl::ChatArgs),
    /// Parity tool: one forward pass over the prompt; float32 logits of every position to a .npy file.
    Logits {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        p: PromptArgs,
        /// Output `.npy`, shape [n_tokens, vocab].
        #[arg(long)]
        out: PathBuf,
        /// Also write the prompt's token ids as JSON.
        #[arg(long)]
        ids_out: Option<PathBuf>,
    },
    /// Parity tool: the adapter output for images encoded as one packed sequence, float32
    /// [total_patches, text_dim] `.npy` (images in order, patches row-major, no break/end rows).
    EncodeImage {
        /// Text model GGUF, which locates the default mmproj (default: the demo model).
        #[arg(short, long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        images: ImageArgs,
        /// Output `.npy`.
        #[arg(long)]
        out: PathBuf,
        /// Also write the first image's preprocessed pixels as float32 [3, h, w].
        #[arg(long)]
        pixels_out: Option<PathBuf>,
    },
    /// Measure prompt processing, generation and ViT encoding, llama-bench style.
    Bench(bench::BenchArgs),
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        /// The GGUF file (a text model or an mmproj).
        file: PathBuf,
        /// Print arrays in full instead of their first items.
        #[arg(long)]
        full: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    p: PromptArgs,
    /// Tokens to generate at most; -1: until EOS or a full context.
    #[arg(short = 'n', long, default_value_t = 256, allow_negative_numbers = true, value_parser = parse_n_predict)]
    n_predict: i64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object on stdout when done (answer, finish_reason, usage, timings, seed, model) instead
    /// of streaming the answer.
    #[arg(long)]
    json: bool,
    /// Print the prompt as the model sees it (special tokens visible) to stderr before answering.
    #[arg(long)]
    verbose_prompt: bool,
    #[command(flatten)]
    ui: UiArgs,
}

#[derive(clap::Args)]
pub struct ModelArgs {
    /// Text model GGUF (default: the demo model, examples/demo/pixtral-demo.gguf: a tiny Pixtral trained on
    /// synthetic shapes, colours, counts and digits).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// KV cache size in tokens (default: the model's largest image plus 2048 tokens for the prompt and answer —
    /// 6400 for Pixtral-12B — or 4096 without a vision tower; capped by the trained context and the memory).
    #[arg(short = 'c', long, value_parser = parse_positive)]
    ctx_size: Option<usize>,
    /// When the context is full, make room instead of stopping: `run` overwrites the oldest tokens after the
    /// first --keep (images are never cut: they stay whole); `chat` drops the oldest whole exchanges.
    #[arg(long)]
    context_shift: bool,
    /// Tokens kept at the start of the context by --context-shift (default: BOS and the system part).
    #[arg(long)]
    keep: Option<usize>,
    /// KV cache storage: f16 (half the memory) or f32.
    #[arg(long, default_value = "f16", value_parser = parse_kv_type)]
    kv_type: KvType,
    /// Threads, at least 1 (default: the physical cores; 1 = serial, no worker threads).
    #[arg(short, long, value_parser = parse_positive)]
    threads: Option<usize>,
    /// Arithmetic of the vision tower's matmuls: f32 (the reference) or bf16 (operands rounded to bf16, sums in
    /// f32; image features move by ~5e-3 of their range). bf16 needs BF16 dot products (AVX512-BF16); it pays only
    /// where they outrun the f32 FMAs: on a Xeon without AMX it measured 0.68× f32's speed. Without BF16
    /// support: f32, with a warning.
    #[arg(long, default_value = "f32", value_parser = parse_vit_precision)]
    vit_precision: VitPrecision,
}

pub fn parse_vit_precision(s: &str) -> Result<VitPrecision, String> {
    VitPrecision::from_name(s).ok_or_else(|| format!("{s:?}: expected f32 or bf16"))
}

/// `p`, or f32 with a warning where this CPU's tier has no kernel for it.
pub fn usable_precision(p: VitPrecision, ui: &Ui) -> VitPrecision {
    if p.usable() != p {
        let isa = pixtral::quant::isa::selected().name();
        ui.always(format!(
            "warning: --vit-precision {}: the {isa} tier has no BF16 dot products (AVX512-BF16); using f32",
            p.name()
        ));
    }
    p.usable()
}

#[derive(clap::Args)]
struct PromptArgs {
    /// The prompt (a user message, unless --raw); `-` reads it from standard input, as does a piped standard
    /// input when neither -p nor -f is given.
    #[arg(short, long, allow_hyphen_values = true)]
    prompt: Option<String>,
    /// Read the prompt from FILE.
    #[arg(short = 'f', long = "file", conflicts_with = "prompt")]
    file: Option<PathBuf>,
    /// System prompt (placed before the last user message, as Mistral's v3 template does).
    #[arg(long)]
    system: Option<String>,
    /// Send the prompt as plain text after BOS, without the chat template.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    images: ImageArgs,
}

#[derive(clap::Args, Clone)]
pub struct ImageArgs {
    /// An image (PNG, JPEG, WebP, GIF; at most 20 MB), `-` for standard input; repeat for several. They go
    /// before the text, or where the prompt has an `<image>` marker (one per image, in order).
    #[arg(long = "image")]
    image: Vec<PathBuf>,
    /// Vision GGUF (default: STEM.mmproj.gguf next to the model).
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Longest image side before patching, at least the patch size (default and maximum: the model's, 1024
    /// for Pixtral-12B); smaller is fewer tokens and faster (tokens grow with the area).
    #[arg(long, value_parser = parse_positive)]
    image_max_side: Option<usize>,
}

#[derive(clap::Args, Clone)]
pub struct SamplingArgs {
    /// Temperature, ≥ 0; 0 = greedy (always the likeliest token).
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true, value_parser = parse_temp)]
    temp: f32,
    /// Keep the K likeliest tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling: keep the likeliest tokens whose probabilities add up to P, in [0, 1] (1 = off).
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true, value_parser = parse_unit)]
    top_p: f32,
    /// Drop tokens less likely than P × the likeliest one's probability, in [0, 1] (0 = off).
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true, value_parser = parse_unit)]
    min_p: f32,
    /// Divide the logits of recently seen tokens (positive ones; multiply negative ones) by R > 0 (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = parse_penalty)]
    repeat_penalty: f32,
    /// Seed of the sampler; -1 (the default) draws one from the clock and prints it, so a run can be repeated.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = parse_seed)]
    seed: i64,
    /// Never end an answer with EOS (it runs to -n or the context's end).
    #[arg(long)]
    ignore_eos: bool,
    /// End the answer where this text appears (not printed); repeatable.
    #[arg(long = "stop", short = 'r', visible_alias = "reverse-prompt", value_name = "TEXT", value_parser = parse_stop)]
    stop: Vec<String>,
}

fn parse_kv_type(s: &str) -> Result<KvType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        _ => Err(format!("{s:?} is not f16 or f32")),
    }
}

fn parse_type(s: &str) -> Result<GgmlType, String> {
    match GgmlType::from_name(s) {
        Some(t @ (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0)) => Ok(t),
        _ => Err(format!("{s:?} is not one of f32, f16, bf16, q8_0, q4_0")),
    }
}

fn parse_vision_type(s: &str) -> Result<GgmlType, String> {
    match GgmlType::from_name(s) {
        Some(t @ (GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0)) => Ok(t),
        _ => Err(format!("{s:?} is not one of f32, f16, q8_0")),
    }
}

fn parse_stop(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a stop string cannot be empty (it would end every answer before it began)".into());
    }
    Ok(s.to_string())
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number ≥ 1")),
    }
}

fn parse_f32(s: &str, ok: impl Fn(f32) -> bool, want: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(x) if x.is_finite() && ok(x) => Ok(x),
        _ => Err(format!("{s:?} is not {want}")),
    }
}

fn parse_unit(s: &str) -> Result<f32, String> {
    parse_f32(s, |x| (0.0..=1.0).contains(&x), "a number in [0, 1]")
}

fn parse_temp(s: &str) -> Result<f32, String> {
    parse_f32(s, |x| x >= 0.0, "a number ≥ 0")
}

fn parse_penalty(s: &str) -> Result<f32, String> {
    parse_f32(s, |x| x > 0.0, "a number > 0")
}

fn parse_seed(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => match s.parse::<u64>() {
            // seeds above i64::MAX, as printed by an earlier run, are their two's complement
            Ok(n) => Ok(n as i64),
            Err(_) => Err(format!("{s:?} is not a seed (a whole number, or -1 for a random one)")),
        },
    }
}

fn parse_n_predict(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err(format!("{s:?} is not a token count (≥ 0, or -1 for no limit)")),
    }
}

/// `--version`: the crate version, the commit it was built from, and the ISA tiers this CPU runs.
fn version() -> String {
    let tiers: Vec<&str> = pixtral::quant::Isa::available().iter().map(|i| i.name()).collect();
    format!(
        "{} (commit {})\nISA tiers on this CPU: {} (default {}; PIXTRAL_ISA chooses)",
        env!("CARGO_PKG_VERSION"),
        env!("PIXTRAL_COMMIT"),
        tiers.join(", "),
        pixtral::quant::Isa::detect().name()
    )
}

fn main() -> ExitCode {
    // the version names this CPU's tiers, so it is made at run time (once, for the life of the process)
    let v: &'static str = Box::leak(version().into_boxed_str());
    let matches = Cli::command().version(v).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let result = match cli.cmd {
        Cmd::Convert { src, outtype, vision_type, out, force, vision_act } => {
            convert(src, outtype, vision_type, out, force, vision_act)
        }
        Cmd::Inspect { file, full } => inspect(file, full),
        Cmd::Run(a) => run(a),
        Cmd::Chat(a) => repl::chat(a),
        Cmd::Logits { m, p, out, ids_out } => logits(m, p, out, ids_out),
        Cmd::EncodeImage { model, images, out, pixels_out } => encode_image(model, images, out, pixels_out),
        Cmd::Bench(a) => bench::bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if ui::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let err = term::Stream::stderr();
            let _ = writeln!(std::io::stderr(), "{} {}", err.paint("1;31", "error:"), err.text(&ui::report(&e)));
            ui::exit_code(&e)
        }
    }
}
fn convert(
    src: PathBuf,
    outtype: GgmlType,
    vision_type: GgmlType,
    out: PathBuf,
    force: bool,
    vision_act: Option<pixtral::gguf::config::VisionAct>,
) -> anyhow::Result<()> {
    pixtral::gguf::os::install_interrupt_handler();
    let opts = pixtral::convert::Options { src, out, outtype, vision_type, force, progress: true, vision_act };
    let s = pixtral::convert::convert(&opts)?;
    let mb = |b: u64| b as f64 / 1e6;
    let layout = match s.layout {
        pixtral::convert::checkpoint::Layout::Hf => "HF (Llava)",
        pixtral::convert::checkpoint::Layout::Mistral => "Mistral-native",
    };
    eprintln!(
        "{layout} checkpoint, {:.1} MB read in {:.1} s ({:.0} MB/s)",
        mb(s.source_bytes),
        s.seconds,
        mb(s.source_bytes) / s.seconds.max(1e-9)
    );
    for n in &s.notes {
        eprintln!("note: {n}");
    }
    for o in &s.outputs {
        eprintln!("wrote {} ({} tensors, {:.1} MB)", o.path.display(), o.n_tensors, mb(o.bytes));
    }
    Ok(())
}

fn show(v: &Value, full: bool) -> String {
    match v {
        Value::String(s) if !full && s.len() > 120 => {
            format!("{:?}… ({} bytes)", s.chars().take(100).collect::<String>(), s.len())
        }
        Value::String(s) => format!("{s:?}"),
        Value::Array(elem, items) => {
            let n = if full { items.len() } else { items.len().min(8) };
            let shown: Vec<String> = items[..n].iter().map(|i| show(i, full)).collect();
            let more = if n < items.len() { format!(", … ({} items)", items.len()) } else { String::new() };
            format!("[{elem:?}] [{}{more}]", shown.join(", "))
        }
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::F32(x) => format!("{x:e}"),
        Value::Bool(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F64(x) => format!("{x:e}"),
    }
}

fn inspect(path: PathBuf, full: bool) -> anyhow::Result<()> {
    let f = GgufFile::open(&path)?;
    let h = &f.header;
    // names and values come from the file: on a terminal their control characters are made visible
    let out = term::Stream::stdout();
    let mut o = std::io::stdout().lock();
    let mut line = |s: String| writeln!(o, "{}", out.text(&s)).map_err(ui::Output);
    line(format!(
        "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at {}",
        path.display(),
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.alignment,
        h.data_offset
    ))?;
    line("\nmetadata:".into())?;
    for (k, v) in &h.metadata {
        line(format!("  {k:<45} {:<8} {}", format!("{:?}", v.value_type()), show(v, full)))?;
    }
    line("\ntensors:".into())?;
    line(format!("  {:<40} {:<6} {:<24} {:>14} {:>14}", "name", "type", "shape (ne)", "offset", "bytes"))?;
    let mut total = 0u64;
    for t in &h.tensors {
        let shape = t.ne.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ");
        line(format!("  {:<40} {:<6} {:<24} {:>14} {:>14}", t.name, t.ty.name(), shape, t.offset, t.n_bytes))?;
        total += t.n_bytes;
    }
    line(format!("\n{} tensors, {:.2} MB of data", h.tensors.len(), total as f64 / 1e6))?;
    Ok(())
}

const DEMO_MODEL: &str = "examples/demo/pixtral-demo.gguf";

/// `-m`, or the demo model: in the working directory's `examples/demo/`, else in the source tree this binary
/// was built from. A given path must be an existing file (exit 3 otherwise).
pub fn model_path(m: &Option<PathBuf>, ui: &Ui) -> anyhow::Result<PathBuf> {
    if let Some(p) = m {
        input::existing_file(p)?;
        return Ok(p.clone());
    }
    for base in [Path::new("."), Path::new(env!("CARGO_MANIFEST_DIR"))] {
        let p = base.join(DEMO_MODEL);
        if p.exists() {
            ui.info(format!(
                "no -m given: using the demo model {} (a tiny Pixtral trained on synthetic shapes, colours, counts and digits)",
                p.display()
            ));
            return Ok(p);
        }
    }
    usage!("no -m given and the demo model {DEMO_MODEL} is not here: pass -m MODEL.gguf")
}

/// Physical cores (hyperthread siblings counted once), from Linux's CPU topology; `None` elsewhere.
fn physical_cores() -> Option<usize> {
    let mut cores = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.strip_prefix("cpu").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
            if let Ok(s) = std::fs::read_to_string(e.path().join("topology/thread_siblings_list")) {
                cores.insert(s.trim().to_string());
            }
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// `-t N`: a pool of N workers, or for N = 1 no pool at all (serial mode). Default: the physical cores
/// (decode is memory-bound and prefill FMA-bound: hyperthreads add contention, not throughput).
pub fn set_threads(t: Option<usize>) -> anyhow::Result<()> {
    match t.or_else(physical_cores) {
        Some(0 | 1) => pixtral::ops::set_serial(true),
        Some(t) => rayon::ThreadPoolBuilder::new().num_threads(t).build_global()?,
        None => {}
    }
    Ok(())
}

pub fn threads_in_use() -> usize {
    if pixtral::ops::serial() {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// The vision tower's file, opened and its config read; weights untouched.
pub struct VisionPlan {
    pub path: PathBuf,
    pub file: GgufFile,
    pub cfg: VisionConfig,
    pub text_dim: usize,
}

/// What is known from the files' headers before any weight is touched: enough to count a prompt's tokens, choose
/// the context and price the request.
pub struct Plan {
    pub path: PathBuf,
    pub file: GgufFile,
    pub cfg: TextConfig,
    pub tokenizer: pixtral::model::tokenizer::Tokenizer,
    pub vision: Option<VisionPlan>,
    /// the context in tokens, and how it was chosen
    pub ctx: usize,
    pub ctx_why: String,
}

/// The default context: the model's largest image (`(side/patch + 1) · side/patch` tokens: a row of patches and
/// its break token per row) plus 2048 tokens for the prompt and answer, rounded up to 256 and at least 4096; at
/// most the model's trained context; lowered to what the memory holds besides the weights.
fn default_ctx(
    cfg: &TextConfig,
    vision: Option<&VisionConfig>,
    kv_type: KvType,
    weight_bytes: u64,
    available: Option<u64>,
) -> (usize, String) {
    const MARGIN: usize = 2048;
    let (mut ctx, mut why) = match vision {
        Some(v) => {
            let side = v.image_size.div_ceil(v.patch_size.max(1));
            let image = (side + 1) * side;
            let ctx = (image + MARGIN).div_ceil(256) * 256;
            let why = format!(
                "default: a {0}x{0} image is {image} tokens, plus {MARGIN} for the prompt and answer",
                v.image_size
            );
            if ctx < 4096 {
                (4096, format!("default, at least 4096; {}", &why["default: ".len()..]))
            } else {
                (ctx, why)
            }
        }
        None => (4096, "default for a model without a vision tower".to_string()),
    };
    if ctx > cfg.context_length {
        ctx = cfg.context_length;
        why = format!("the model's trained context ({why} would be more)");
    }
    let per_token =
        pixtral::model::kv_cache::KvCache::bytes_for(cfg.n_layers, cfg.n_heads_kv * cfg.head_dim, 1, kv_type) as u64;
    if let Some(avail) = available {
        // the weights take their size again (page cache or the re-laid-out copy); 512 MB for activations
        let room = avail.saturating_sub(weight_bytes + (512 << 20)) / per_token.max(1);
        let fit = (room as usize / 256) * 256;
        if fit < ctx && fit >= 256 {
            why = format!("as much as the free memory holds ({why}: {ctx})");
            ctx = fit;
        }
    }
    (ctx, why)
}

/// Open the model's and (when there is one) the mmproj's headers and choose the context. An explicit `--mmproj`
/// must exist; without one, `STEM.mmproj.gguf` is used when present, and images without any mmproj are a
/// usage error.
pub fn plan(m: &ModelArgs, mmproj: Option<&Path>, need_vision: bool, ui: &Ui) -> anyhow::Result<Plan> {
    let path = model_path(&m.model, ui)?;
    if let Some(p) = mmproj {
        input::existing_file(p)?;
    }
    let file = GgufFile::open(&path)?;
    let cfg = pixtral::gguf::config::TextConfig::from_gguf(&file.header)?;
    let tokenizer = pixtral::model::tokenizer::Tokenizer::from_gguf(&file.header)?;
    let vpath = mmproj.map(Path::to_path_buf).unwrap_or_else(|| pixtral::gguf::mmproj_path(&path));
    let vision = if vpath.exists() {
        let vfile = GgufFile::open(&vpath)?;
        let (vcfg, text_dim) = pixtral::gguf::config::VisionConfig::from_gguf(&vfile.header)?;
        for w in pixtral::model::check_pair(&file.header, &vfile.header)? {
            ui.info(format!("warning: {}: {w}", vpath.display()));
        }
        Some(VisionPlan { path: vpath, file: vfile, cfg: vcfg, text_dim })
    } else if need_vision {
        usage!("no mmproj found at {}: pass --mmproj, or convert the checkpoint with its vision tower", vpath.display())
    } else {
        None
    };
    let weight_bytes = file.map_bytes().len() as u64 + vision.as_ref().map_or(0, |v| v.file.map_bytes().len() as u64);
    let (ctx, ctx_why) = match m.ctx_size {
        Some(c) => (c, "--ctx-size".to_string()),
        None => default_ctx(
            &cfg,
            vision.as_ref().map(|v| &v.cfg),
            m.kv_type,
            weight_bytes,
            pixtral::gguf::os::available_memory(),
        ),
    };
    if let Some(k) = m.keep.filter(|&k| m.context_shift && k >= ctx) {
        usage!("--keep {k} must be below the context's {ctx} tokens");
    }
    if ctx > cfg.context_length {
        ui.info(format!(
            "warning: a context of {ctx} tokens is beyond the {} the model was trained on; answers past it degrade",
            cfg.context_length
        ));
    }
    // the KV cache the memory cannot hold is refused now, not after seconds of loading
    pixtral::Session::check_memory(&cfg, &session_options(m, ctx, 1))?;
    Ok(Plan { path, file, cfg, tokenizer, vision, ctx, ctx_why })
}

impl Plan {
    /// Preprocessing for `--image-max-side` (usage error below one patch), when the model has a vision tower.
    pub fn preprocess(&self, max_side: Option<usize>) -> anyhow::Result<Option<pixtral::image::PreprocessConfig>> {
        let Some(v) = &self.vision else { return Ok(None) };
        if let Some(s) = max_side {
            if s < v.cfg.patch_size {
                usage!("--image-max-side {s} is below the model's patch size ({} px)", v.cfg.patch_size);
            }
        }
        Ok(Some(pixtral::model::vision::preprocess_config(&v.cfg, max_side)))
    }
}

pub struct Loaded {
    pub engine: pixtral::Engine,
    /// `general.name`, when the file has one
    pub name: Option<String>,
    pub seconds: f64,
}

/// Load the weights planned (text, and the vision tower when `with_vision`) and print the header line.
pub fn load(plan: Plan, m: &ModelArgs, with_vision: bool, ui: &Ui) -> anyhow::Result<Loaded> {
    set_threads(m.threads)?;
    let t0 = std::time::Instant::now();
    let Plan { path, file, vision, ctx, ctx_why, .. } = plan;
    let model = pixtral::Model::from_file(file, &Default::default())?;
    let vision = match vision {
        Some(v) if with_vision => {
            let mut vm = pixtral::model::vision::VisionModel::from_file(v.file, &Default::default())?;
            vm.precision = usable_precision(m.vit_precision, ui);
            if vm.precision != VitPrecision::F32 {
                ui.info(format!("vision tower: {} matmuls (--vit-precision)", vm.precision.name()));
            }
            Some(vm)
        }
        _ => None,
    };
    let name = match model.file.header.get("general.name") {
        Some(Value::String(n)) => Some(n.clone()),
        _ => None,
    };
    let engine = pixtral::Engine::from_parts(path, model, vision, &Default::default());
    let l = Loaded { engine, name, seconds: t0.elapsed().as_secs_f64() };
    let model = &l.engine.model;
    let c = &model.cfg;
    let name = l.name.as_ref().map(|n| format!("{n}, ")).unwrap_or_default();
    let kv = pixtral::model::kv_cache::KvCache::bytes_for(c.n_layers, c.n_heads_kv * c.head_dim, ctx, m.kv_type);
    let r = model.repacked;
    let layout = if r.bytes > 0 {
        format!(", {:.0} MB re-laid out R16 in {:.2} s", r.bytes as f64 / 1e6, r.seconds)
    } else {
        String::new()
    };
    ui.info(format!(
        "model: {} ({name}{} layers, dim {}, {} weights{layout}), ISA {}, {} threads, loaded in {:.2} s",
        l.engine.path.display(),
        c.n_layers,
        c.dim,
        model.weight_type,
        pixtral::quant::isa::selected().name(),
        threads_in_use(),
        l.seconds
    ));
    ui.info(format!(
        "context: {ctx} tokens ({ctx_why}){}, {:.0} MB {:?} KV cache",
        if m.context_shift { ", context shift" } else { "" },
        kv as f64 / 1e6,
        m.kv_type,
    ));
    Ok(l)
}

/// The session for `m`'s flags, a context of `ctx` and `keep` sink tokens for --context-shift.
fn session_options(m: &ModelArgs, ctx: usize, keep: usize) -> pixtral::SessionOptions {
    pixtral::SessionOptions {
        ctx_size: ctx,
        context_shift: m.context_shift,
        keep: Some(keep),
        kv_type: m.kv_type,
        ..Default::default()
    }
}

/// What images will cost on this machine, from the shapes of the two models and the rates of this configuration
/// (measured by earlier runs when there are some, else the tier's typical ones).
pub struct Pricing<'a> {
    pub text: &'a TextConfig,
    pub vision: &'a VisionConfig,
    pub text_dim: usize,
    pub rates: pixtral::cost::Rates,
    pub measured: bool,
    pub threads: usize,
}

/// The rates' key of a text + vision pair (`rates::key` from the types and shapes of their blocks' weights).
pub fn rates_key(
    text: &pixtral::gguf::Header,
    vision: &pixtral::gguf::Header,
    threads: usize,
    vit: VitPrecision,
) -> String {
    // the type and shape of a block's FFN weight: which model (the demo's rates are not the 12B's) at which type
    let of = |h: &pixtral::gguf::Header, t: &str| {
        h.tensor(t).map_or("?".to_string(), |t| {
            let ne: Vec<String> = t.ne.iter().map(|n| n.to_string()).collect();
            format!("{}:{}", t.ty.name(), ne.join("x"))
        })
    };
    rates::key(threads, &of(text, "blk.0.ffn_up.weight"), &of(vision, "v.blk.0.ffn_up.weight"), vit)
}

impl<'a> Pricing<'a> {
    pub fn new(
        text: &'a TextConfig,
        text_header: &pixtral::gguf::Header,
        vision: &'a VisionConfig,
        text_dim: usize,
        vision_header: &pixtral::gguf::Header,
        threads: usize,
        vit: VitPrecision,
    ) -> Pricing<'a> {
        let (rates, measured) = rates::load(&rates_key(text_header, vision_header, threads, vit), threads);
        Pricing { text, vision, text_dim, rates, measured, threads }
    }

    fn seconds(&self, grids: &[(usize, usize)], new_tokens: usize, past: usize) -> f64 {
        let patches: Vec<usize> = grids.iter().map(|(w, h)| w * h).collect();
        pixtral::cost::vit_seconds(self.vision, self.text_dim, &patches, &self.rates)
            + pixtral::cost::prefill_seconds(self.text, new_tokens, past, &self.rates)
    }

    /// The line to print before encoding images of `dims` (`(width, height)` each) at `max_side`, in a prompt of
    /// `new_tokens` tokens (images included) after `past` cached ones; `None` when it is under two seconds.
    pub fn line(
        &self,
        dims: &[(usize, usize)],
        max_side: Option<usize>,
        new_tokens: usize,
        past: usize,
    ) -> Option<String> {
        let v = self.vision;
        let side = max_side.unwrap_or(v.image_size).min(v.image_size);
        let grids_at = |side: usize| -> Vec<(usize, usize)> {
            dims.iter().map(|&(w, h)| pixtral::image::grid(w, h, side, v.patch_size)).collect()
        };
        let tokens = |g: &[(usize, usize)]| g.iter().map(|(w, h)| (w + 1) * h).sum::<usize>();
        let grids = grids_at(side);
        let img_tokens = tokens(&grids);
        let secs = self.seconds(&grids, new_tokens, past);
        if secs < 2.0 {
            return None;
        }
        let source = if self.measured { "measured rates of earlier runs" } else { "this CPU tier's typical rates" };
        let mut msg = format!(
            "estimate: {img_tokens} image tokens of a {new_tokens}-token prompt, ~{} to encode and read on {} with {} threads ({source})",
            human_seconds(secs),
            pixtral::quant::isa::selected().name(),
            self.threads
        );
        // the same prompt at half the side: about a quarter of the image tokens
        let half = (side / 2).max(v.patch_size);
        let small = grids_at(half);
        if half < side && tokens(&small) < img_tokens {
            let n = new_tokens - img_tokens + tokens(&small);
            msg.push_str(&format!(
                "; --image-max-side {half}: {} image tokens, ~{}",
                tokens(&small),
                human_seconds(self.seconds(&small, n, past))
            ));
        }
        Some(msg)
    }
}

/// Before the wait: each image's tokens and, when it is worth saying, what they cost (see [`Pricing`]).
fn estimate(
    plan: &Plan,
    prepared: &pixtral::Prepared,
    max_side: Option<usize>,
    threads: usize,
    vit: VitPrecision,
    ui: &Ui,
) {
    let Some(v) = &plan.vision else { return };
    for h in &prepared.images {
        ui.info(image_line(&h.name, h.width, h.height, h.grid_w, h.grid_h));
    }
    if prepared.images.is_empty() {
        return;
    }
    let p = Pricing::new(&plan.cfg, &plan.file.header, &v.cfg, v.text_dim, &v.file.header, threads, vit);
    let dims: Vec<(usize, usize)> = prepared.images.iter().map(|h| (h.width, h.height)).collect();
    if let Some(line) = p.line(&dims, max_side, prepared.ids.len(), 0) {
        ui.info(line);
    }
}

/// The line each image gets before it is encoded: its size, patch grid and tokens.
pub fn image_line(name: &Path, width: usize, height: usize, grid_w: usize, grid_h: usize) -> String {
    format!(
        "image {}: {width}x{height} -> {grid_w}x{grid_h} patches ({} tokens)",
        name.display(),
        (grid_w + 1) * grid_h
    )
}

/// `-n`: a token count, or -1 for no limit.
pub fn max_tokens(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn human_seconds(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 5400.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Remember this run's ViT and prefill speeds for the next estimate (only work long enough to time well).
fn learn_rates(l: &Loaded, grids: &[(usize, usize)], c: &pixtral::Completion) {
    let Some(vm) = &l.engine.vision else { return };
    let threads = threads_in_use();
    let key = rates_key(&l.engine.model.file.header, &vm.file.header, threads, vm.precision);
    let (mut r, _) = rates::load(&key, threads);
    let before = r;
    if c.timings.image_encode_s > 0.5 {
        let flops: f64 = grids.iter().map(|(w, h)| pixtral::cost::vit_flops(&vm.cfg, vm.text_dim, w * h)).sum();
        r.vit = flops / c.timings.image_encode_s / 1e9;
    }
    if c.timings.prompt_s > 0.5 {
        let prefilled = c.usage.prompt_tokens - c.usage.cached_tokens;
        pixtral::cost::learn_prefill(&l.engine.model.cfg, prefilled, c.timings.prompt_s, &mut r);
    }
    if r != before {
        rates::save(&key, &r);
    }
}

/// A progress bar for images through the vision tower, when it takes a while: `(bar, slow)`.
pub fn vit_bar(vm: &pixtral::model::vision::VisionModel, patches: usize, ui: &Ui) -> (indicatif::ProgressBar, bool) {
    // ~2 flops per weight and patch at a few tens of GFLOP/s: a bar when that is over a second
    let slow = 2.0 * patches as f64 * vm.n_params() as f64 > 3e10;
    let bar = if slow { ui.bar(vm.cfg.n_layers as u64, &format!("encoding {patches} patches")) } else { ui.bar(0, "") };
    (bar, slow)
}

/// Encode a request's images through the engine (the cache first), with a progress bar when it takes a while.
pub fn encode_with_bar(
    engine: &pixtral::Engine,
    heads: &[pixtral::ImageHead],
    decoded: Vec<Option<pixtral::image::Preprocessed>>,
    ui: &Ui,
) -> anyhow::Result<pixtral::runtime::engine::Encoded> {
    let Some(vm) = &engine.vision else { return Ok(engine.encode(&[], Vec::new(), &mut |_, _| {})?) };
    let n: usize = heads.iter().map(|h| h.n_patches()).sum();
    let (bar, slow) = vit_bar(vm, n, ui);
    let e = engine.encode(heads, decoded, &mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if slow && e.patches > 0 {
        ui.info(format!(
            "encoded {} patches in {:.2} s ({:.1} patches/s)",
            e.patches,
            e.seconds,
            e.patches as f64 / e.seconds.max(1e-9)
        ));
    }
    Ok(e)
}

/// Everything `run` and `logits` know before the weights load: the prompt text and images read and checked
/// (by the library's [`pixtral::Prepared`]), the headers opened, the context chosen, the pixels decoded.
struct Ready {
    plan: Plan,
    prepared: pixtral::Prepared,
    decoded: Vec<Option<pixtral::image::Preprocessed>>,
}

fn prepare(m: &ModelArgs, p: &PromptArgs, ui: &Ui) -> anyhow::Result<Ready> {
    let stdin_image = p.images.image.iter().any(|i| i.as_os_str() == "-");
    let text = input::prompt_text(p.prompt.as_deref(), p.file.as_deref(), stdin_image)?;
    let sources = input::image_sources(&p.images.image)?;
    let plan = plan(m, p.images.mmproj.as_deref(), !sources.is_empty(), ui)?;
    let mut req = pixtral::Request { messages: Vec::new(), image_max_side: p.images.image_max_side, raw: p.raw };
    if let Some(s) = p.system.as_deref().filter(|_| !p.raw) {
        req.messages.push(pixtral::RequestMessage::system(s));
    }
    req.messages.push(pixtral::RequestMessage::user(pixtral::runtime::request::content_with_markers(&text, sources)?));
    let vision = plan.vision.as_ref().map(|v| &v.cfg);
    let lim = pixtral::image::ImageLimits::default();
    let prepared = pixtral::Prepared::new(&plan.tokenizer, vision, &req, &lim)?;
    // --context-shift makes room while generating; a prompt must fit whole (nothing of it is dropped unsaid)
    prepared.check_fits(plan.ctx)?;
    let decoded = prepared.decode(&lim)?;
    Ok(Ready { plan, prepared, decoded })
}

fn encode_image(model: Option<PathBuf>, a: ImageArgs, out: PathBuf, pixels_out: Option<PathBuf>) -> anyhow::Result<()> {
    if a.image.is_empty() {
        usage!("give at least one --image");
    }
    let ui = Ui::new(UiArgs::default());
    let sources = input::image_sources(&a.image)?;
    let m = ModelArgs {
        model,
        ctx_size: Some(1),
        context_shift: false,
        keep: None,
        kv_type: KvType::F16,
        threads: None,
        vit_precision: VitPrecision::F32,
    };
    let plan = plan(&m, a.mmproj.as_deref(), true, &ui)?;
    for o in std::iter::once(&out).chain(&pixels_out) {
        input::writable(o)?;
    }
    let v = plan.vision.expect("vision planned");
    let cfg = pixtral::model::vision::preprocess_config(&v.cfg, a.image_max_side);
    if let Some(s) = a.image_max_side.filter(|&s| s < v.cfg.patch_size) {
        usage!("--image-max-side {s} is below the model's patch size ({} px)", v.cfg.patch_size);
    }
    let lim = pixtral::image::ImageLimits::default();
    let heads: Vec<pixtral::ImageHead> =
        sources.iter().map(|s| pixtral::ImageHead::read(s, &cfg, &lim)).collect::<pixtral::Result<_>>()?;
    let pre: Vec<pixtral::image::Preprocessed> =
        heads.iter().map(|h| h.decode(&lim)).collect::<pixtral::Result<_>>()?;
    let vm = pixtral::model::vision::VisionModel::from_file(v.file, &Default::default())?;
    let n: usize = pre.iter().map(|p| p.n_patches()).sum();
    let (bar, _) = vit_bar(&vm, n, &ui);
    let t0 = std::time::Instant::now();
    let embeds = vm.encode_with_progress(&pre, &mut |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    for h in &heads {
        ui.info(image_line(&h.name, h.width, h.height, h.grid_w, h.grid_h));
    }
    pixtral::npy::write_f32(&out, &[n, vm.text_dim], &embeds)?;
    if let Some(px) = pixels_out {
        let p = &pre[0];
        pixtral::npy::write_f32(&px, &[3, p.height(), p.width()], &p.pixels)?;
    }
    eprintln!("wrote {} ({n} patches x {}) in {secs:.2} s", out.display(), vm.text_dim);
    Ok(())
}

pub fn sampler_params(sp: &SamplingArgs, eos: u32) -> pixtral::SamplerParams {
    let seed = if sp.seed == -1 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    } else {
        sp.seed as u64
    };
    pixtral::SamplerParams {
        temp: sp.temp,
        top_k: sp.top_k,
        top_p: sp.top_p,
        min_p: sp.min_p,
        repeat_penalty: sp.repeat_penalty,
        seed,
        banned: if sp.ignore_eos { vec![eos] } else { Vec::new() },
        ..Default::default()
    }
}

/// A prefill progress bar for prompts that take a while (~2 flops per weight and token).
pub fn prefill_bar(session: &mut pixtral::Session<'_>, model: &pixtral::Model, ui: &Ui) {
    let ui = *ui;
    let params = pixtral::bench::weight_params(model) as f64;
    let mut bar: Option<indicatif::ProgressBar> = None;
    session.set_prefill_progress(Some(Box::new(move |done, total| {
        if 2.0 * params * total as f64 <= 3e10 {
            return;
        }
        let b = bar.get_or_insert_with(|| ui.bar(total as u64, "prompt"));
        b.set_position(done as u64);
        if done == total {
            b.finish_and_clear();
            bar = None;
        }
    })));
}

/// The timing line after an answer.
fn timings(load_s: f64, c: &pixtral::Completion) -> String {
    let (t, u) = (&c.timings, &c.usage);
    format!(
        "load {load_s:.2} s | image encode {:.2} s | prompt {} tokens in {:.2} s ({:.1} tok/s) | generation {} tokens in {:.2} s ({:.1} tok/s)",
        t.image_encode_s,
        u.prompt_tokens,
        t.prompt_s,
        u.prompt_tokens as f64 / t.prompt_s.max(1e-9),
        u.completion_tokens,
        t.generation_s,
        u.completion_tokens as f64 / t.generation_s.max(1e-9),
    )
}

fn run(a: RunArgs) -> anyhow::Result<()> {
    let ui = Ui::new(a.ui);
    // ---- everything that can be checked before the weights load ----
    let Ready { plan, prepared, decoded } = prepare(&a.m, &a.p, &ui)?;
    let threads = a.m.threads.unwrap_or_else(physical_cores_or_one);
    // the arithmetic the ViT will use (load warns when bf16 falls back)
    estimate(&plan, &prepared, a.p.images.image_max_side, threads, a.m.vit_precision.usable(), &ui);
    let ctx = plan.ctx;
    // ---- weights, then the images through the vision tower ----
    let l = load(plan, &a.m, !prepared.images.is_empty(), &ui)?;
    let engine = &l.engine;
    let enc = encode_with_bar(engine, &prepared.images, decoded, &ui)?;
    let ids = &prepared.ids;
    let params = sampler_params(&a.sampling, engine.model.tokenizer.eos);
    ui.info(format!("prompt: {} tokens, seed {}, temperature {}", ids.len(), params.seed, params.temp));
    // the ring never overwrites part of an image: it keeps everything through the last one
    let keep = a.m.keep.unwrap_or(prepared.keep).max(prepared.image_end);
    if a.m.context_shift && prepared.image_end > 0 {
        ui.info(format!("context shift keeps the first {keep} tokens (through the last image): images are never cut"));
    }
    if a.verbose_prompt {
        let err = term::Stream::stderr();
        ui.always(format!(
            "---- prompt ({} tokens) ----\n{}\n----",
            ids.len(),
            err.text(&pixtral::chat::render_prompt(&engine.model.tokenizer, ids))
        ));
    }
    ui.detail(format!("prompt ids: {ids:?}"));
    let grids: Vec<(usize, usize)> = prepared.images.iter().map(|h| (h.grid_w, h.grid_h)).collect();
    let mut session = engine.session(session_options(&a.m, ctx, keep))?;
    prefill_bar(&mut session, &engine.model, &ui);
    let mut conv = pixtral::Conversation::new(None);
    conv.replace(prepared.raw, prepared.system, prepared.messages, enc.images);
    // Ctrl-C stops the answer; the timings still print
    pixtral::gguf::os::install_sigint_handler();
    let mut out = ui::AnswerOut::new();
    let json = a.json;
    let mut opts = pixtral::GenerateOptions {
        max_tokens: max_tokens(a.n_predict),
        stop: a.sampling.stop.clone(),
        sampling: params.clone(),
        // with --json the answer is printed whole at the end; a failed write ends generation
        on_token: Some(Box::new(|t: &pixtral::TokenEvent| json || out.write(t.text))),
        cancel: Some(pixtral::gguf::os::interrupt_flag()),
        ..Default::default()
    };
    let mut c = conv.respond(&mut session, &mut opts)?;
    drop(opts);
    c.timings.image_encode_s = enc.seconds;
    if a.json {
        let (t, u) = (&c.timings, &c.usage);
        let v = serde_json::json!({
            "model": l.engine.path.display().to_string(),
            "model_name": l.name,
            "answer": c.text,
            "finish_reason": c.finish_reason.as_str(),
            "stop_string": c.stop_string,
            "context_full": c.context_full,
            "usage": {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.prompt_tokens + u.completion_tokens},
            "seed": params.seed,
            "timings": {
                "load_s": l.seconds,
                "image_encode_s": t.image_encode_s,
                "prompt_s": t.prompt_s,
                "prompt_tok_s": u.prompt_tokens as f64 / t.prompt_s.max(1e-9),
                "generation_s": t.generation_s,
                "generation_tok_s": u.completion_tokens as f64 / t.generation_s.max(1e-9),
            },
        });
        out.write(&format!("{v}\n"));
    } else {
        out.write("\n");
    }
    learn_rates(&l, &grids, &c);
    // a closed pipe (`pixtral run … | head -c 50`) ends quietly with 0; any other failed write is an error
    out.result()?;
    use pixtral::FinishReason as F;
    let what = match (c.finish_reason, c.context_full) {
        (F::Stop, _) if c.stop_string.is_some() => "stop (a --stop string)".to_string(),
        (F::Stop, _) => "stop (EOS)".to_string(),
        (F::Length, true) if a.m.context_shift => "length: the context is full".to_string(),
        (F::Length, true) => format!("length: the context of {ctx} tokens is full (use --ctx-size or --context-shift)"),
        (F::Length, false) => format!("length: {} tokens (-n)", a.n_predict),
        (F::Cancelled, _) => "cancelled (Ctrl-C)".to_string(),
    };
    ui.detail(format!("answer ids: {:?}", c.tokens));
    ui.info(format!("finish: {what}\n{}", timings(l.seconds, &c)));
    if c.finish_reason == F::Cancelled {
        return Err(pixtral::Error::Cancelled.into());
    }
    Ok(())
}

fn logits(m: ModelArgs, p: PromptArgs, out: PathBuf, ids_out: Option<PathBuf>) -> anyhow::Result<()> {
    let ui = Ui::new(UiArgs::default());
    let Ready { plan, prepared, decoded } = prepare(&m, &p, &ui)?;
    for o in std::iter::once(&out).chain(&ids_out) {
        input::writable(o)?;
    }
    let ctx = plan.ctx;
    let l = load(plan, &m, !prepared.images.is_empty(), &ui)?;
    let engine = &l.engine;
    // image features in order of appearance: the order of the prompt's [IMG] tokens
    let enc = encode_with_bar(engine, &prepared.images, decoded, &ui)?;
    let embeds: Vec<f32> = enc.images.iter().flat_map(|e| e.embeds.iter().copied()).collect();
    let ids = &prepared.ids;
    let mut session = engine.session(session_options(&m, ctx, m.keep.unwrap_or(prepared.keep)))?;
    let mut all = Vec::new();
    session.eval_with_images(ids, &embeds, Some(&mut all), None)?;
    let vocab = engine.model.cfg.vocab_size;
    pixtral::npy::write_f32(&out, &[ids.len(), vocab], &all)?;
    if let Some(p) = ids_out {
        std::fs::write(&p, serde_json::to_string(ids)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    eprintln!("wrote {} ({} tokens x {vocab} logits)", out.display(), ids.len());
    Ok(())
}

/// The default thread count: the physical cores, else what the OS offers, at least 1.
pub fn physical_cores_or_one() -> usize {
    physical_cores().or_else(|| std::thread::available_parallelism().ok().map(|n| n.get())).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixtral_12b() -> (TextConfig, VisionConfig) {
        (TextConfig::pixtral_12b(), VisionConfig::pixtral_12b())
    }

    #[test]
    fn the_default_context_holds_the_largest_image_within_the_trained_context_and_the_memory() {
        let (t, v) = pixtral_12b();
        // 64x64 patches + 64 breaks = 4160, + 2048 = 6208, rounded up to 6400
        let (ctx, why) = default_ctx(&t, Some(&v), KvType::F16, 8 << 30, None);
        assert_eq!(ctx, 6400, "{why}");
        assert!(why.contains("1024x1024 image is 4160 tokens"), "{why}");
        assert_eq!(default_ctx(&t, None, KvType::F16, 0, None).0, 4096);
        // a small model's image: at least 4096
        let small = VisionConfig { image_size: 128, ..v.clone() };
        assert_eq!(default_ctx(&t, Some(&small), KvType::F16, 0, None).0, 4096);
        // capped by the trained context
        let short = TextConfig { context_length: 5000, ..t.clone() };
        assert_eq!(default_ctx(&short, Some(&v), KvType::F16, 0, None).0, 5000);
        // lowered to what memory holds besides 8 GB of weights: 160 KB a token (f16), 512 MB for activations
        let avail = (8u64 << 30) + (512 << 20) + 5000 * 163840;
        let (ctx, why) = default_ctx(&t, Some(&v), KvType::F16, 8 << 30, Some(avail));
        assert_eq!(ctx, 4864, "{why}");
        assert!(why.contains("free memory"), "{why}");
    }
}
