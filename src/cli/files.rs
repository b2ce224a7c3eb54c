//! `pixtral convert` and `pixtral inspect`: the file subcommands.

use std::io::Write;
use std::path::PathBuf;

use pixtral::gguf::{GgufFile, Value};
use pixtral::quant::GgmlType;

use crate::{term, ui};

pub fn convert(
    src: PathBuf,
    outtype: GgmlType,
    mix: Option<pixtral::convert::quantize::Mix>,
    vision_type: GgmlType,
    out: PathBuf,
    force: bool,
    vision_act: Option<pixtral::gguf::config::VisionAct>,
) -> anyhow::Result<()> {
    pixtral::gguf::os::install_interrupt_handler();
    let opts = pixtral::convert::Options { src, out, outtype, vision_type, force, progress: true, vision_act, mix };
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

/// `pixtral quantize`: requantize a text GGUF into a llama-quantize mix.
pub fn quantize(
    input: PathBuf,
    output: PathBuf,
    mix: pixtral::convert::quantize::Mix,
    allow_requantize: bool,
    force: bool,
) -> anyhow::Result<()> {
    pixtral::gguf::os::install_interrupt_handler();
    let opts = pixtral::convert::quantize::Options { input, output: output.clone(), mix, allow_requantize, force };
    let s = pixtral::convert::quantize::quantize(&opts)?;
    let mb = |b: u64| b as f64 / 1e6;
    let types: Vec<String> = s.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    eprintln!(
        "{}: {} tensors ({}), {:.1} MB -> {:.1} MB in {:.1} s ({:.0} MB/s){}",
        mix.name,
        s.n_tensors,
        types.join(", "),
        mb(s.in_bytes),
        mb(s.out_bytes),
        s.seconds,
        mb(s.in_bytes) / s.seconds.max(1e-9),
        if s.fallbacks > 0 {
            format!(
                "; {} tensor{} of partial blocks took a fallback type, as llama.cpp's",
                s.fallbacks,
                if s.fallbacks == 1 { "" } else { "s" }
            )
        } else {
            String::new()
        }
    );
    eprintln!("wrote {}", output.display());
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

pub fn inspect(path: PathBuf, full: bool) -> anyhow::Result<()> {
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
        // general.file_type is llama.cpp's LLAMA_FTYPE id: name the mix it stands for
        let mix = match (k.as_str(), v) {
            (pixtral::gguf::keys::GENERAL_FILE_TYPE, pixtral::gguf::Value::U32(id)) => {
                pixtral::gguf::llama_ftype_name(*id).map_or(String::new(), |n| format!(" ({n})"))
            }
            _ => String::new(),
        };
        line(format!("  {k:<45} {:<8} {}{mix}", format!("{:?}", v.value_type()), show(v, full)))?;
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
