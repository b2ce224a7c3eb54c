//! `pixtral`: the command-line front end, a thin client of the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod bench;
mod files;
mod input;
mod plan;
mod pricing;
mod rates;
mod repl;
mod run;
#[cfg(feature = "server")]
mod serve;
mod term;
mod ui;

use pixtral::model::kv_cache::KvType;
use pixtral::model::vision::VitPrecision;
use pixtral::quant::GgmlType;
use ui::{Ui, UiArgs};

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
        /// Type of the text weights: f32, f16, bf16, q8_0 (8.5 bits a weight, near-lossless), q4_0 (4.5 bits), or a
        /// llama-quantize mix (q4_k_m, q5_k_m, q6_k, q3_k_m, …: per-tensor types by llama.cpp's rules, the tensors
        /// `pixtral quantize` would write from an f32/bf16 conversion).
        #[arg(long, default_value = "q8_0", value_parser = parse_outtype)]
        outtype: OutType,
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
    /// Requantize a text GGUF into one of llama-quantize's mixes (its names and per-tensor rules; without an
    /// importance matrix the tensors equal llama.cpp's, byte for byte): IN and OUT are GGUF files.
    Quantize {
        /// Input text GGUF, ideally F16/BF16/F32 (quantized tensors need --allow-requantize).
        input: PathBuf,
        /// Output GGUF (written as OUT.partial, then renamed).
        output: PathBuf,
        /// Mix, any case: Q4_K_M, Q5_K_M, Q6_K, Q3_K_M, Q3_K_S, Q3_K_L, Q4_K_S, Q5_K_S, Q2_K, IQ4_XS, IQ4_NL,
        /// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16, BF16, F32 (Q3_K, Q4_K, Q5_K: their _M mix). Not written: the IQ1–IQ3
        /// mixes (they need an importance matrix). An mmproj is refused.
        #[arg(value_parser = parse_mix)]
        mix: pixtral::convert::quantize::Mix,
        /// Requantize tensors that are already quantized (through f32: the errors add up).
        #[arg(long)]
        allow_requantize: bool,
        /// Overwrite an existing OUT.
        #[arg(long)]
        force: bool,
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
    /// An OpenAI-compatible HTTP server (chat completions with images, streaming, structured output) with
    /// --parallel slots batched together. Without -m, the demo model.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
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
    /// KV cache storage: f16 (default: half of f32), q8_0 (ggml blocks, 53 % of f16; logits move by ~1–3 % of their
    /// range; needs a head size that is a multiple of 32, as Pixtral's 128) or f32 (exact).
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

/// `--outtype`: a plain type, or a mix.
#[derive(Clone, Copy, Debug)]
struct OutType(GgmlType, Option<pixtral::convert::quantize::Mix>);

fn parse_outtype(s: &str) -> Result<OutType, String> {
    match parse_type(s) {
        Ok(t) => Ok(OutType(t, None)),
        Err(plain) => match parse_mix(s) {
            Ok(m) => Ok(OutType(m.base, Some(m))),
            Err(e) if unwritten_mix(s).is_some() => Err(e),
            Err(_) => Err(format!(
                "{plain}, or a llama-quantize mix: Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, \
                 IQ4_XS, IQ4_NL, Q4_1, Q5_0, Q5_1 (any case){}",
                did_you_mean(s, pixtral::convert::quantize::MIXES.iter().map(|m| m.name))
            )),
        },
    }
}

/// What we say of a llama-quantize mix we do not write, by name (any case); `None` for other names.
fn unwritten_mix(s: &str) -> Option<String> {
    let up = s.to_ascii_uppercase();
    let grids = ["IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S"];
    if grids.contains(&up.as_str()) {
        Some(format!(
            "{s}: pixtral neither writes nor runs this mix (IQ1–IQ3 grids); Q2_K, Q3_K_S/M/L and IQ4_XS files run"
        ))
    } else if matches!(up.as_str(), "TQ1_0" | "TQ2_0" | "MXFP4_MOE") {
        Some(format!("{s}: pixtral neither writes nor runs this mix (ternary / MXFP4 types)"))
    } else if up == "Q2_K_S" {
        Some(format!(
            "{s}: llama-quantize writes this mix only with an importance matrix, which pixtral does not take; its \
             files run (Q2_K is the mix written without one)"
        ))
    } else {
        None
    }
}

fn parse_mix(s: &str) -> Result<pixtral::convert::quantize::Mix, String> {
    pixtral::convert::quantize::Mix::from_name(s).ok_or_else(|| {
        unwritten_mix(s).unwrap_or_else(|| {
            format!(
                "{s:?} is not a mix{}; one of {}",
                did_you_mean(s, pixtral::convert::quantize::MIXES.iter().map(|m| m.name)),
                pixtral::convert::quantize::Mix::names()
            )
        })
    })
}

/// `" (did you mean X?)"` for the candidates nearest `s` (edit distance ≤ 2 ignoring case and underscores, ties
/// all named; `strsim`, which clap uses for its own suggestions), else `""`.
fn did_you_mean<'a>(s: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let key = |x: &str| x.to_ascii_uppercase().replace('_', "");
    let typed = key(s);
    let scored: Vec<(usize, &str)> = candidates.map(|c| (strsim::levenshtein(&typed, &key(c)), c)).collect();
    match scored.iter().map(|&(d, _)| d).min() {
        Some(best) if best <= 2 => {
            let near: Vec<&str> = scored.iter().filter(|&&(d, _)| d == best).map(|&(_, c)| c).collect();
            format!(" (did you mean {}?)", near.join(" or "))
        }
        _ => String::new(),
    }
}

pub fn parse_kv_type(s: &str) -> Result<KvType, String> {
    match s.to_ascii_lowercase().as_str() {
        "f16" => Ok(KvType::F16),
        "f32" => Ok(KvType::F32),
        "q8_0" => Ok(KvType::Q8_0),
        _ => Err(format!("{s:?} is not f16, f32 or q8_0")),
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

pub fn parse_positive(s: &str) -> Result<usize, String> {
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
            files::convert(src, outtype.0, outtype.1, vision_type, out, force, vision_act)
        }
        Cmd::Quantize { input, output, mix, allow_requantize, force } => {
            files::quantize(input, output, mix, allow_requantize, force)
        }
        Cmd::Inspect { file, full } => files::inspect(file, full),
        Cmd::Run(a) => run::run(a),
        Cmd::Chat(a) => repl::chat(a),
        Cmd::Logits { m, p, out, ids_out } => run::logits(m, p, out, ids_out),
        Cmd::EncodeImage { model, images, out, pixels_out } => run::encode_image(model, images, out, pixels_out),
        Cmd::Bench(a) => bench::bench(a),
        #[cfg(feature = "server")]
        Cmd::Serve(a) => serve::serve(a),
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
