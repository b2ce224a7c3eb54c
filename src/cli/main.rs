//! `pixtral`: the command-line front end, a thin client of the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod repl;
mod ui;

use pixtral::gguf::{GgufFile, Value};
use pixtral::quant::GgmlType;
use ui::{usage, Ui, UiArgs};

#[derive(Parser)]
#[command(name = "pixtral", version, about = "CPU-first runtime for Pixtral 12B")]
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
        /// Type of the text weights.
        #[arg(long, default_value = "q8_0", value_parser = parse_type)]
        outtype: GgmlType,
        /// Type of the vision tower and adapter weights (f32, f16, q8_0).
        #[arg(long, default_value = "f16", value_parser = parse_type)]
        vision_type: GgmlType,
        /// Output text GGUF; the mmproj goes next to it as STEM.mmproj.gguf.
        #[arg(short, long)]
        out: PathBuf,
        /// Overwrite existing outputs.
        #[arg(long)]
        force: bool,
    },
    /// Generate text: the answer streams to stdout, timings go to stderr.
    Run {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        p: PromptArgs,
        /// Maximum tokens to generate.
        #[arg(short = 'n', long, default_value_t = 256)]
        n_predict: usize,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[command(flatten)]
        ui: UiArgs,
    },
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
        /// Text model GGUF (locates the default mmproj).
        #[arg(short, long)]
        model: PathBuf,
        #[command(flatten)]
        images: ImageArgs,
        #[arg(long)]
        out: PathBuf,
        /// Also write the first image's preprocessed pixels as float32 [3, h, w].
        #[arg(long)]
        pixels_out: Option<PathBuf>,
    },
    /// Measure prompt processing, generation and ViT encoding (medians of -r runs), llama-bench style.
    Bench {
        #[arg(short, long)]
        model: PathBuf,
        /// Vision GGUF (default: STEM.mmproj.gguf next to the model), used with --image-size.
        #[arg(long)]
        mmproj: Option<PathBuf>,
        /// Prompt tokens (0 skips prompt processing).
        #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
        n_prompt: usize,
        /// Generated tokens (0 skips generation).
        #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
        n_gen: usize,
        #[arg(short = 'r', long, default_value_t = 3)]
        repetitions: usize,
        #[arg(short, long)]
        threads: Option<usize>,
        /// Encode one WIDTHxHEIGHT image with the vision tower (e.g. 1024x1024).
        #[arg(long)]
        image_size: Option<String>,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        file: PathBuf,
        /// Print arrays in full instead of their first items.
        #[arg(long)]
        full: bool,
    },
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Text model GGUF (default: the demo model, examples/demo/pixtral-demo.gguf: a tiny Pixtral trained on
    /// synthetic shapes, colours, counts and digits).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// KV cache size in tokens.
    #[arg(short = 'c', long, default_value_t = 4096)]
    ctx_size: usize,
    /// When the context is full, overwrite the oldest tokens (keeping --keep first ones) instead of stopping.
    #[arg(long)]
    context_shift: bool,
    /// Tokens kept at the start of the context by --context-shift (default: BOS and the system part).
    #[arg(long)]
    keep: Option<usize>,
    /// KV cache storage: f16 (half the memory) or f32.
    #[arg(long, default_value = "f16", value_parser = parse_kv_type)]
    kv_type: pixtral::runtime::kv_cache::KvType,
    /// Threads (default: the physical cores; 1 = serial, no worker threads).
    #[arg(short, long)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
struct PromptArgs {
    /// The prompt (a user message, unless --raw).
    #[arg(short, long)]
    prompt: String,
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
struct ImageArgs {
    /// An image (PNG, JPEG, WebP, GIF); repeat for several. They go before the text, or where the prompt has
    /// an `<image>` marker (one per image, in order).
    #[arg(long = "image")]
    image: Vec<PathBuf>,
    /// Vision GGUF (default: STEM.mmproj.gguf next to the model).
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Longest image side before patching (default and maximum: the model's, 1024 for Pixtral-12B); smaller is
    /// fewer tokens and faster.
    #[arg(long)]
    image_max_side: Option<usize>,
}

#[derive(clap::Args, Clone)]
struct SamplingArgs {
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    temp: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Seed of the sampler (default: from the clock, printed so a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Never end an answer with EOS (it runs to -n or the context's end).
    #[arg(long)]
    ignore_eos: bool,
}

fn parse_kv_type(s: &str) -> Result<pixtral::runtime::kv_cache::KvType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Ok(pixtral::runtime::kv_cache::KvType::F16),
        "f32" => Ok(pixtral::runtime::kv_cache::KvType::F32),
        _ => Err(format!("{s:?} is not f16 or f32")),
    }
}

fn parse_type(s: &str) -> Result<GgmlType, String> {
    match GgmlType::from_name(s) {
        Some(t @ (GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0)) => Ok(t),
        _ => Err(format!("{s:?} is not one of f32, f16, bf16, q8_0, q4_0")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Convert { src, outtype, vision_type, out, force } => convert(src, outtype, vision_type, out, force),
        Cmd::Inspect { file, full } => inspect(file, full),
        Cmd::Run { m, p, n_predict, sampling, ui } => run(m, p, n_predict, sampling, Ui::new(ui)),
        Cmd::Chat(a) => repl::chat(a),
        Cmd::Logits { m, p, out, ids_out } => logits(m, p, out, ids_out),
        Cmd::EncodeImage { model, images, out, pixels_out } => encode_image(model, images, out, pixels_out),
        Cmd::Bench { model, mmproj, n_prompt, n_gen, repetitions, threads, image_size, json } => {
            bench(model, mmproj, n_prompt, n_gen, repetitions.max(1), threads, image_size, json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", ui::report(&e));
            ui::exit_code(&e)
        }
    }
}

fn convert(src: PathBuf, outtype: GgmlType, vision_type: GgmlType, out: PathBuf, force: bool) -> anyhow::Result<()> {
    pixtral::convert::os::install_interrupt_handler();
    let opts = pixtral::convert::Options { src, out, outtype, vision_type, force, progress: true };
    let s = pixtral::convert::convert(&opts)?;
    let mb = |b: u64| b as f64 / 1e6;
    for o in &s.outputs {
        eprintln!("wrote {} ({} tensors, {:.1} MB)", o.path.display(), o.n_tensors, mb(o.bytes));
    }
    eprintln!(
        "{:?} checkpoint, {:.1} MB read in {:.1} s ({:.0} MB/s)",
        s.layout,
        mb(s.source_bytes),
        s.seconds,
        mb(s.source_bytes) / s.seconds.max(1e-9)
    );
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
    println!(
        "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at {}",
        path.display(),
        h.version,
        h.metadata.len(),
        h.tensors.len(),
        h.alignment,
        h.data_offset
    );
    println!("\nmetadata:");
    for (k, v) in &h.metadata {
        println!("  {k:<45} {:<8} {}", format!("{:?}", v.value_type()), show(v, full));
    }
    println!("\ntensors:");
    println!("  {:<40} {:<6} {:<24} {:>14} {:>14}", "name", "type", "shape (ne)", "offset", "bytes");
    let mut total = 0u64;
    for t in &h.tensors {
        let shape = t.ne.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ");
        println!("  {:<40} {:<6} {:<24} {:>14} {:>14}", t.name, t.ty.name(), shape, t.offset, t.n_bytes);
        total += t.n_bytes;
    }
    println!("\n{} tensors, {:.2} MB of data", h.tensors.len(), total as f64 / 1e6);
    Ok(())
}

struct Loaded {
    model: pixtral::Model,
    path: PathBuf,
    seconds: f64,
}

const DEMO_MODEL: &str = "examples/demo/pixtral-demo.gguf";

/// `-m`, or the demo model: in the working directory's `examples/demo/`, else in the source tree this binary
/// was built from.
fn model_path(m: &Option<PathBuf>, ui: &Ui) -> anyhow::Result<PathBuf> {
    if let Some(p) = m {
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
fn set_threads(t: Option<usize>) -> anyhow::Result<()> {
    match t.or_else(physical_cores) {
        Some(0 | 1) => pixtral::model::ops::set_serial(true),
        Some(t) => rayon::ThreadPoolBuilder::new().num_threads(t).build_global()?,
        None => {}
    }
    Ok(())
}

fn threads_in_use() -> usize {
    if pixtral::model::ops::serial() {
        1
    } else {
        rayon::current_num_threads()
    }
}

fn load(m: &ModelArgs, ui: &Ui) -> anyhow::Result<Loaded> {
    let path = model_path(&m.model, ui)?;
    set_threads(m.threads)?;
    let t0 = std::time::Instant::now();
    let model = pixtral::Model::load(&path)?;
    let l = Loaded { model, path, seconds: t0.elapsed().as_secs_f64() };
    let c = &l.model.cfg;
    let name = match l.model.file.header.get("general.name") {
        Some(Value::String(n)) => format!("{n}, "),
        _ => String::new(),
    };
    let kv =
        pixtral::runtime::kv_cache::KvCache::bytes_for(c.n_layers, c.n_heads_kv * c.head_dim, m.ctx_size, m.kv_type);
    let r = l.model.repacked;
    let layout = if r.bytes > 0 {
        format!(", {:.0} MB re-laid out R16 in {:.2} s", r.bytes as f64 / 1e6, r.seconds)
    } else {
        String::new()
    };
    ui.info(format!(
        "model: {} ({name}{} layers, dim {}, {} weights{layout}), ISA {}, {} threads, context {} tokens{} ({:.0} MB {:?} KV), loaded in {:.2} s",
        l.path.display(),
        c.n_layers,
        c.dim,
        l.model.weight_type,
        pixtral::quant::isa::selected().name(),
        threads_in_use(),
        m.ctx_size,
        if m.context_shift { ", context shift" } else { "" },
        kv as f64 / 1e6,
        m.kv_type,
        l.seconds
    ));
    Ok(l)
}

fn session_options(m: &ModelArgs, keep_default: usize) -> pixtral::SessionOptions {
    pixtral::SessionOptions {
        ctx_size: m.ctx_size,
        context_shift: m.context_shift,
        keep: Some(m.keep.unwrap_or(keep_default)),
        kv_type: m.kv_type,
        ..Default::default()
    }
}

/// Prompt ids: chat template (user message, optional system), or BOS + plain text with --raw.
/// A prompt ready for the model: ids, image features for its `[IMG]` tokens, the sink size for
/// `--context-shift`, and the seconds spent encoding images.
struct Prompt {
    ids: Vec<u32>,
    embeds: Vec<f32>,
    keep: usize,
    image_seconds: f64,
}

fn load_vision(model_path: &Path, a: &ImageArgs) -> anyhow::Result<pixtral::model::vision::VisionModel> {
    let path = a.mmproj.clone().unwrap_or_else(|| pixtral::convert::mmproj_path(model_path));
    if !path.exists() {
        usage!("no mmproj found at {}: pass --mmproj, or convert the checkpoint with its vision tower", path.display());
    }
    Ok(pixtral::model::vision::VisionModel::load(&path)?)
}

/// Load and preprocess one image; report its grid and token count.
fn prepare_image(
    cfg: &pixtral::image::PreprocessConfig,
    path: &Path,
    ui: &Ui,
) -> anyhow::Result<pixtral::image::Preprocessed> {
    let img = pixtral::image::load(path)?;
    let p = pixtral::image::preprocess(&img, cfg);
    ui.info(format!(
        "image {}: {}x{} -> {}x{} patches ({} tokens)",
        path.display(),
        img.width,
        img.height,
        p.grid_w,
        p.grid_h,
        (p.grid_w + 1) * p.grid_h
    ));
    Ok(p)
}

/// Encode preprocessed images as one packed sequence, with a progress bar when it takes a while.
fn encode_with_bar(
    vm: &pixtral::model::vision::VisionModel,
    pre: &[pixtral::image::Preprocessed],
    ui: &Ui,
) -> (Vec<f32>, f64) {
    let n: usize = pre.iter().map(|p| p.n_patches()).sum();
    let t0 = std::time::Instant::now();
    // ~2 flops per weight and patch at a few tens of GFLOP/s: a bar when that is over a second
    let slow = 2.0 * n as f64 * vm.n_params() as f64 > 3e10;
    let bar = if slow { ui.bar(vm.cfg.n_layers as u64, &format!("encoding {n} patches")) } else { ui.bar(0, "") };
    let embeds = vm.encode_with_progress(pre, &mut |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    if slow {
        ui.info(format!("encoded {n} patches in {secs:.2} s ({:.1} patches/s)", n as f64 / secs.max(1e-9)));
    }
    (embeds, secs)
}

/// Load, preprocess and encode the images.
fn encode_images(
    vm: &pixtral::model::vision::VisionModel,
    a: &ImageArgs,
    ui: &Ui,
) -> anyhow::Result<(Vec<pixtral::image::Preprocessed>, Vec<f32>, f64)> {
    let cfg = vm.preprocess_config(a.image_max_side);
    let pre = a.image.iter().map(|path| prepare_image(&cfg, path, ui)).collect::<anyhow::Result<Vec<_>>>()?;
    let (embeds, secs) = encode_with_bar(vm, &pre, ui);
    Ok((pre, embeds, secs))
}

/// The prompt's ids and image features. Images are counted from their headers first: a prompt that cannot fit
/// the context is refused before any pixel is decoded.
fn build_prompt(
    model: &pixtral::Model,
    model_path: &Path,
    m: &ModelArgs,
    p: &PromptArgs,
    ui: &Ui,
) -> anyhow::Result<Prompt> {
    use pixtral::chat::{encode_chat, image_tokens, Chunk, Message};
    let tok = &model.tokenizer;
    let markers = p.prompt.matches("<image>").count();
    if markers != 0 && markers != p.images.image.len() {
        usage!("the prompt has {markers} <image> markers but {} --image were given", p.images.image.len());
    }
    let vm = if p.images.image.is_empty() { None } else { Some(load_vision(model_path, &p.images)?) };
    let mut grids = Vec::new();
    if let Some(vm) = &vm {
        let cfg = vm.preprocess_config(p.images.image_max_side);
        for path in &p.images.image {
            let (w, h) = pixtral::image::dimensions(path, &pixtral::image::ImageLimits::default())?;
            grids.push(pixtral::image::grid(w, h, cfg.max_side, cfg.patch));
        }
    }
    // text and images in order: `<image>` markers place them, else images come first
    let parts: Vec<&str> = p.prompt.split("<image>").collect();
    let mut chunks = Vec::new();
    let image = |i: usize| Chunk::Image { grid_w: grids[i].0, grid_h: grids[i].1 };
    if parts.len() == 1 {
        chunks.extend((0..grids.len()).map(image));
        chunks.push(Chunk::Text(p.prompt.clone()));
    } else {
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                chunks.push(image(i - 1));
            }
            if !part.is_empty() {
                chunks.push(Chunk::Text(part.to_string()));
            }
        }
    }
    let system = p.system.as_deref();
    let ids = if p.raw {
        let mut ids = vec![tok.bos];
        for c in &chunks {
            match c {
                Chunk::Text(t) => ids.extend(tok.encode(t)),
                Chunk::Image { grid_w, grid_h } => ids.extend(image_tokens(tok, *grid_w, *grid_h)?),
                Chunk::Tokens(t) => ids.extend_from_slice(t),
            }
        }
        ids
    } else if grids.is_empty() {
        encode_chat(tok, system, &[Message::user(p.prompt.clone())])?
    } else {
        encode_chat(tok, system, &[Message::user_chunks(chunks)])?
    };
    if ids.len() > m.ctx_size && !m.context_shift {
        let img: usize = grids.iter().map(|(w, h)| (w + 1) * h).sum();
        usage!(
            "the prompt has {} tokens ({img} for images) but the context holds {}: use a larger --ctx-size, \
             a smaller --image-max-side, or --context-shift",
            ids.len(),
            m.ctx_size
        );
    }
    let (pre, embeds, image_seconds) = match &vm {
        None => (Vec::new(), Vec::new(), 0.0),
        Some(vm) => encode_images(vm, &p.images, ui)?,
    };
    let got: Vec<(usize, usize)> = pre.iter().map(|p| (p.grid_w, p.grid_h)).collect();
    if got != grids {
        anyhow::bail!("decoded image grids {got:?} differ from the headers' {grids:?}");
    }
    // the sink kept by --context-shift: BOS, [INST] and the system part
    let keep = match (p.raw, system) {
        (false, Some(s)) => 2 + tok.encode(&format!("{s}\n\n")).len(),
        _ => 1,
    };
    Ok(Prompt { ids, embeds, keep, image_seconds })
}

fn encode_image(model: PathBuf, a: ImageArgs, out: PathBuf, pixels_out: Option<PathBuf>) -> anyhow::Result<()> {
    if a.image.is_empty() {
        usage!("give at least one --image");
    }
    let vm = load_vision(&model, &a)?;
    let (pre, embeds, secs) = encode_images(&vm, &a, &Ui::new(UiArgs::default()))?;
    let n: usize = pre.iter().map(|p| p.n_patches()).sum();
    pixtral::npy::write_f32(&out, &[n, vm.text_dim], &embeds)?;
    if let Some(px) = pixels_out {
        let p = &pre[0];
        pixtral::npy::write_f32(&px, &[3, p.height(), p.width()], &p.pixels)?;
    }
    eprintln!("wrote {} ({n} patches x {}) in {secs:.2} s", out.display(), vm.text_dim);
    Ok(())
}

fn sampler_params(sp: &SamplingArgs, eos: u32) -> pixtral::SamplerParams {
    let seed = sp.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
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
fn prefill_bar(session: &mut pixtral::Session<'_>, model: &pixtral::Model, ui: &Ui) {
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
fn timings(load_s: f64, image_s: f64, g: &pixtral::Generation) -> String {
    format!(
        "load {load_s:.2} s | image encode {image_s:.2} s | prompt {} tokens in {:.2} s ({:.1} tok/s) | generation {} tokens in {:.2} s ({:.1} tok/s)",
        g.prompt_tokens,
        g.prompt_seconds,
        g.prompt_tokens as f64 / g.prompt_seconds.max(1e-9),
        g.tokens.len(),
        g.gen_seconds,
        g.tokens.len() as f64 / g.gen_seconds.max(1e-9),
    )
}

fn run(m: ModelArgs, p: PromptArgs, n_predict: usize, sp: SamplingArgs, ui: Ui) -> anyhow::Result<()> {
    use std::io::Write;
    let l = load(&m, &ui)?;
    let model = &l.model;
    let Prompt { ids, embeds, keep, image_seconds } = build_prompt(model, &l.path, &m, &p, &ui)?;
    let params = sampler_params(&sp, model.tokenizer.eos);
    ui.info(format!("prompt: {} tokens, seed {}, temperature {}", ids.len(), params.seed, params.temp));
    ui.detail(format!("prompt ids: {ids:?}"));
    let mut session = pixtral::Session::try_new(model, session_options(&m, keep))?;
    prefill_bar(&mut session, model, &ui);
    let mut sampler = pixtral::Sampler::new(params);
    // Ctrl-C stops the answer; the timings still print
    pixtral::convert::os::install_sigint_handler();
    let cancel = pixtral::convert::os::interrupt_flag();
    let stdout = std::io::stdout();
    let g = session.generate_with_images(&ids, &embeds, &mut sampler, n_predict, Some(cancel), |piece| {
        let mut o = stdout.lock();
        let _ = o.write_all(piece.as_bytes());
        let _ = o.flush();
        true
    })?;
    println!();
    let finish = match (g.finish, g.context_full) {
        (pixtral::FinishReason::Stop, _) => "stop (EOS)".to_string(),
        (pixtral::FinishReason::Length, true) => {
            format!("length: the context of {} tokens is full (use --ctx-size or --context-shift)", m.ctx_size)
        }
        (pixtral::FinishReason::Length, false) => format!("length: {n_predict} tokens (-n)"),
        (pixtral::FinishReason::Cancelled, _) => "cancelled (Ctrl-C)".to_string(),
    };
    ui.detail(format!("answer ids: {:?}", g.tokens));
    ui.info(format!("finish: {finish}\n{}", timings(l.seconds, image_seconds, &g)));
    if g.finish == pixtral::FinishReason::Cancelled {
        return Err(pixtral::Error::Cancelled.into());
    }
    Ok(())
}

fn logits(m: ModelArgs, p: PromptArgs, out: PathBuf, ids_out: Option<PathBuf>) -> anyhow::Result<()> {
    let ui = Ui::new(UiArgs::default());
    let l = load(&m, &ui)?;
    let model = &l.model;
    let Prompt { ids, embeds, keep, .. } = build_prompt(model, &l.path, &m, &p, &ui)?;
    let mut session = pixtral::Session::try_new(model, session_options(&m, keep))?;
    let mut all = Vec::new();
    session.eval_with_images(&ids, &embeds, Some(&mut all), None)?;
    pixtral::npy::write_f32(&out, &[ids.len(), model.cfg.vocab_size], &all)?;
    if let Some(p) = ids_out {
        std::fs::write(&p, serde_json::to_string(&ids)?).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    eprintln!("wrote {} ({} tokens x {} logits)", out.display(), ids.len(), model.cfg.vocab_size);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    model_path: PathBuf,
    mmproj: Option<PathBuf>,
    n_prompt: usize,
    n_gen: usize,
    runs: usize,
    threads: Option<usize>,
    image_size: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    set_threads(threads)?;
    let model = pixtral::Model::load(&model_path)?;
    let isa = pixtral::quant::isa::selected().name();
    let nt = threads_in_use();
    let pp = (n_prompt > 0).then(|| pixtral::bench::prompt_processing(&model, n_prompt, runs)).transpose()?;
    let tg = (n_gen > 0).then(|| pixtral::bench::generation(&model, n_gen, runs)).transpose()?;
    let vit = match image_size {
        None => None,
        Some(s) => {
            let (w, h) = s
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
                .filter(|(w, h)| *w > 0 && *h > 0)
                .ok_or_else(|| anyhow::anyhow!("--image-size {s:?}: expected WIDTHxHEIGHT, e.g. 1024x1024"))?;
            let args = ImageArgs { image: vec![], mmproj, image_max_side: None };
            Some(pixtral::bench::vit(&load_vision(&model_path, &args)?, w, h, runs))
        }
    };
    if json {
        let mut o = serde_json::Map::new();
        if let Some(t) = &pp {
            o.insert("pp".into(), serde_json::json!({"n": t.n, "tps_median": t.tps_median}));
        }
        if let Some(t) = &tg {
            o.insert("tg".into(), serde_json::json!({"n": t.n, "tps_median": t.tps_median}));
        }
        if let Some(v) = &vit {
            o.insert("vit".into(), serde_json::json!({"width": v.width, "height": v.height, "patches": v.patches, "seconds_median": v.seconds_median, "gflops": v.gflops}));
        }
        println!("{}", serde_json::Value::Object(o));
        return Ok(());
    }
    println!("| model | type | ISA | threads | test | t/s | rate |");
    println!("|---|---|---|---|---|---|---|");
    let name = model_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ty = model.weight_type.name();
    if let Some(t) = &pp {
        println!("| {name} | {ty} | {isa} | {nt} | pp{} | {:.2} | {:.1} GFLOP/s |", t.n, t.tps_median, t.rate);
    }
    if let Some(t) = &tg {
        println!("| {name} | {ty} | {isa} | {nt} | tg{} | {:.2} | {:.1} GB/s |", t.n, t.tps_median, t.rate);
    }
    if let Some(v) = &vit {
        println!(
            "| {name} | vision | {isa} | {nt} | vit {}x{} ({} patches) | {:.1} patches/s, {:.2} s | {:.1} GFLOP/s |",
            v.width,
            v.height,
            v.patches,
            v.patches as f64 / v.seconds_median,
            v.seconds_median,
            v.gflops
        );
    }
    Ok(())
}
