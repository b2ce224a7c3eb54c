//! `pixtral bench`, llama-bench style: every combination of the prompt lengths, generation lengths, thread
//! counts and image sizes asked for, `-r` runs each, as a Markdown table, JSON, JSON lines or CSV.

use pixtral::model::vision::VitPrecision;
use std::io::Write;
use std::path::PathBuf;

use pixtral::bench::{mean_std, median};

use crate::ui::{usage, Ui, UiArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// a Markdown table
    Md,
    /// one JSON array of tests
    Json,
    /// one JSON object a line
    Jsonl,
    /// comma-separated values with a header line
    Csv,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Text model GGUF (default: the demo model).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Vision GGUF for --image-size (default: STEM.mmproj.gguf next to the model).
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Prompt lengths to time, comma-separated (0 skips prompt processing).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',', default_value = "512")]
    n_prompt: Vec<usize>,
    /// Generation lengths to time, comma-separated (0 skips generation).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',', default_value = "128")]
    n_gen: Vec<usize>,
    /// Runs of each test; the table gives mean ± stddev and the median.
    #[arg(short = 'r', long, default_value_t = 3, value_parser = crate::parse_positive)]
    repetitions: usize,
    /// Thread counts, comma-separated, each at least 1 (default: the physical cores).
    #[arg(short = 't', long, value_delimiter = ',', value_parser = crate::parse_positive)]
    threads: Vec<usize>,
    /// Images to encode with the vision tower, WIDTHxHEIGHT, comma-separated (e.g. 512x512,1024x1024); each
    /// is resized to the model's image size at most, as a real image would be.
    #[arg(long, value_delimiter = ',')]
    image_size: Vec<String>,
    /// Arithmetic of the vision tower for --image-size, comma-separated: f32, bf16 (see `run --vit-precision`;
    /// default f32). A precision this CPU has no kernels for is skipped with a warning.
    #[arg(long, value_delimiter = ',', value_parser = crate::parse_vit_precision)]
    vit_precision: Vec<VitPrecision>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "md")]
    output: Format,
    /// Same as -o json.
    #[arg(long)]
    json: bool,
}

/// One measured test: its samples in seconds and the work of one run.
struct Row {
    test: String,
    threads: usize,
    /// tokens (pp, tg) or patches (ViT) per run
    units: usize,
    seconds: Vec<f64>,
    /// the rate at the median run, and its unit
    rate: f64,
    rate_unit: &'static str,
    /// the image size asked for and the one encoded (ViT only)
    image: Option<(String, usize, usize)>,
    /// the vision tower's arithmetic (ViT only)
    precision: Option<&'static str>,
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let parsed = s
        .trim()
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
        .filter(|(w, h)| *w > 0 && *h > 0);
    match parsed {
        Some(wh) => Ok(wh),
        None => usage!("--image-size {s:?}: expected WIDTHxHEIGHT, e.g. 1024x1024"),
    }
}

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let ui = Ui::new(UiArgs::default());
    let format = if a.json { Format::Json } else { a.output };
    let sizes = a.image_size.iter().map(|s| parse_size(s)).collect::<anyhow::Result<Vec<_>>>()?;
    if sizes.is_empty() && !a.vit_precision.is_empty() {
        usage!("--vit-precision applies to the ViT tests: give --image-size too");
    }
    // each precision once, those this CPU has kernels for (a warning for the others)
    let mut precisions = Vec::new();
    for &p in if a.vit_precision.is_empty() { &[VitPrecision::F32][..] } else { &a.vit_precision } {
        if !p.available() {
            let isa = pixtral::quant::isa::selected().name();
            eprintln!("warning: --vit-precision {}: the {isa} tier has no kernels for it; skipped", p.name());
        } else if !precisions.contains(&p) {
            precisions.push(p);
        }
    }
    let pp: Vec<usize> = a.n_prompt.iter().copied().filter(|&n| n > 0).collect();
    let tg: Vec<usize> = a.n_gen.iter().copied().filter(|&n| n > 0).collect();
    if pp.is_empty() && tg.is_empty() && sizes.is_empty() {
        usage!("nothing to measure: -p and -n are all 0 and no --image-size is given");
    }
    let path = crate::plan::model_path(&a.model, &ui)?;
    if let Some(p) = &a.mmproj {
        crate::input::existing_file(p)?;
    }
    let model = pixtral::Model::load(&path)?;
    let mut vision = if sizes.is_empty() {
        None
    } else {
        let vpath = a.mmproj.clone().unwrap_or_else(|| pixtral::gguf::mmproj_path(&path));
        if !vpath.exists() {
            usage!("--image-size needs a vision tower: no mmproj at {} (pass --mmproj)", vpath.display());
        }
        Some(pixtral::model::vision::VisionModel::load(&vpath)?)
    };
    let threads = if a.threads.is_empty() { vec![crate::plan::physical_cores_or_one()] } else { a.threads.clone() };
    let runs = a.repetitions;
    let mut rows = Vec::new();
    for &t in &threads {
        crate::plan::check_threads(Some(t))?;
        // each thread count gets its own pool; 1 is serial (no pool), as `-t 1` everywhere else
        pixtral::ops::set_serial(t == 1);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
        pool.install(|| -> anyhow::Result<()> {
            // prompt processing, then generation: the same row but for what is timed and its rate's unit
            let text_tests = pp.iter().map(|&n| ("pp", n, "GFLOP/s")).chain(tg.iter().map(|&n| ("tg", n, "GB/s")));
            for (kind, n, rate_unit) in text_tests {
                let r = match kind {
                    "pp" => pixtral::bench::prompt_processing(&model, n, runs)?,
                    _ => pixtral::bench::generation(&model, n, runs)?,
                };
                let test = format!("{kind}{n}");
                let (seconds, rate) = (r.seconds, r.rate);
                rows.push(Row { test, threads: t, units: n, seconds, rate, rate_unit, image: None, precision: None });
            }
            if let Some(vm) = vision.as_mut() {
                for (&(w, h), &p) in sizes.iter().flat_map(|s| precisions.iter().map(move |p| (s, p))) {
                    vm.precision = p;
                    let v = pixtral::bench::vit(vm, w, h, runs);
                    let prec = if vm.precision == VitPrecision::F32 {
                        String::new()
                    } else {
                        format!(" {}", vm.precision.name())
                    };
                    rows.push(Row {
                        test: format!("vit {}x{}{prec}", v.encoded_width, v.encoded_height),
                        threads: t,
                        units: v.patches,
                        seconds: v.seconds,
                        rate: v.gflops,
                        rate_unit: "GFLOP/s",
                        image: Some((format!("{w}x{h}"), v.encoded_width, v.encoded_height)),
                        precision: Some(p.name()),
                    });
                }
            }
            Ok(())
        })?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    print(format, &name, &model, &rows)
}

/// `x` with a decimal prefix: 7.23 G, 3.06 M, 512 (llama-bench prints sizes and parameter counts so).
fn human(x: f64, unit: &str) -> String {
    let (v, p) = match x {
        x if x >= 1e9 => (x / 1e9, "G"),
        x if x >= 1e6 => (x / 1e6, "M"),
        x if x >= 1e3 => (x / 1e3, "k"),
        x => (x, ""),
    };
    format!("{v:.2} {p}{unit}").trim_end().to_string()
}

fn print(format: Format, name: &str, model: &pixtral::Model, rows: &[Row]) -> anyhow::Result<()> {
    let isa = pixtral::quant::isa::selected().name();
    let ty = model.weights_label();
    let size_gb = pixtral::bench::weight_bytes(model) as f64 / 1e9;
    let params_b = pixtral::bench::weight_params(model) as f64 / 1e9;
    let out = crate::term::Stream::stdout();
    let mut o = std::io::stdout().lock();
    let json = |r: &Row| {
        let ts: Vec<f64> = r.seconds.iter().map(|s| r.units as f64 / s).collect();
        let (avg, sd) = mean_std(&ts);
        let mut v = serde_json::json!({
            "model": name, "type": ty, "size_gb": size_gb, "params_b": params_b, "isa": isa, "threads": r.threads,
            "test": r.test, "n": r.units, "unit": if r.image.is_some() { "patches" } else { "tokens" },
            "samples_s": r.seconds, "samples_ts": ts, "avg_ts": avg, "stddev_ts": sd, "median_ts": r.units as f64 / median(&r.seconds),
            "rate": r.rate, "rate_unit": r.rate_unit,
        });
        if let Some((asked, w, h)) = &r.image {
            v["image_size"] = serde_json::json!(asked);
            v["encoded_size"] = serde_json::json!(format!("{w}x{h}"));
        }
        if let Some(p) = r.precision {
            v["vit_precision"] = serde_json::json!(p);
        }
        v
    };
    match format {
        Format::Json => {
            let all: Vec<serde_json::Value> = rows.iter().map(json).collect();
            writeln!(o, "{}", serde_json::to_string_pretty(&all)?)?;
        }
        Format::Jsonl => {
            for r in rows {
                writeln!(o, "{}", json(r))?;
            }
        }
        Format::Csv => {
            writeln!(
                o,
                "model,type,size_gb,params_b,isa,threads,test,n,avg_ts,stddev_ts,median_ts,rate,rate_unit,image_size,encoded_size,vit_precision"
            )?;
            for r in rows {
                let v = json(r);
                let csv = |s: &str| {
                    if s.contains([',', '"', '\n']) {
                        format!("\"{}\"", s.replace('"', "\"\""))
                    } else {
                        s.to_string()
                    }
                };
                writeln!(
                    o,
                    "{},{ty},{size_gb:.6},{params_b:.6},{isa},{},{},{},{:.4},{:.4},{:.4},{:.2},{},{},{},{}",
                    csv(&out.text(name)),
                    r.threads,
                    csv(&r.test),
                    r.units,
                    v["avg_ts"].as_f64().unwrap_or(0.0),
                    v["stddev_ts"].as_f64().unwrap_or(0.0),
                    v["median_ts"].as_f64().unwrap_or(0.0),
                    r.rate,
                    r.rate_unit,
                    r.image.as_ref().map(|i| i.0.as_str()).unwrap_or(""),
                    r.image.as_ref().map(|(_, w, h)| format!("{w}x{h}")).unwrap_or_default(),
                    r.precision.unwrap_or("")
                )?;
            }
        }
        Format::Md => {
            writeln!(o, "| model | size | params | type | ISA | threads | test | t/s | median t/s | rate |")?;
            writeln!(o, "|---|---:|---:|---|---|---:|---|---:|---:|---:|")?;
            for r in rows {
                let v = json(r);
                let unit = if r.image.is_some() { " patches" } else { "" };
                let test = match &r.image {
                    Some((asked, w, h)) if asked != &format!("{w}x{h}") => format!("{} (asked {asked})", r.test),
                    _ => r.test.clone(),
                };
                writeln!(
                    o,
                    "| {} | {} | {} | {ty} | {isa} | {} | {test} | {:.2} ± {:.2}{unit} | {:.2} | {:.1} {} |",
                    out.text(name),
                    human(size_gb * 1e9, "B"),
                    human(params_b * 1e9, ""),
                    r.threads,
                    v["avg_ts"].as_f64().unwrap_or(0.0),
                    v["stddev_ts"].as_f64().unwrap_or(0.0),
                    v["median_ts"].as_f64().unwrap_or(0.0),
                    r.rate,
                    r.rate_unit
                )?;
            }
        }
    }
    Ok(())
}
