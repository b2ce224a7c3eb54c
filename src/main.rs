//! `pixtral`: the command-line front end, a thin client of the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pixtral::gguf::{GgufFile, Value};
use pixtral::quant::GgmlType;

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
    /// Print a GGUF file's metadata and tensor table.
    Inspect {
        file: PathBuf,
        /// Print arrays in full instead of their first items.
        #[arg(long)]
        full: bool,
    },
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
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
