//! What is known before any weight loads: the files' headers opened, the context chosen (from the model, the
//! image size and the free memory), the threads; then the weights loaded into an [`pixtral::Engine`].

use std::path::{Path, PathBuf};

use anyhow::Context;

use pixtral::gguf::config::{TextConfig, VisionConfig};
use pixtral::gguf::{GgufFile, Value};
use pixtral::model::kv_cache::KvType;
use pixtral::model::vision::VitPrecision;

use crate::ui::{usage, Ui};
use crate::{input, usable_precision, ModelArgs};

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
    check_threads(t)?;
    if let Some(t) = t.or_else(physical_cores) {
        pixtral::runtime::engine::set_threads(t)?;
    }
    Ok(())
}

/// `-t N` within [`pixtral::runtime::engine::max_threads`] (usage error, before anything loads).
pub fn check_threads(t: Option<usize>) -> anyhow::Result<()> {
    let max = pixtral::runtime::engine::max_threads();
    match t {
        Some(t) if t > max => usage!("-t {t}: more than 4 × the {} CPUs this machine offers (at most {max})", max / 4),
        _ => Ok(()),
    }
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
    check_threads(m.threads)?;
    let path = model_path(&m.model, ui)?;
    if let Some(p) = mmproj {
        input::existing_file(p)?;
    }
    let file = GgufFile::open(&path)?;
    // the header's errors name a key or tensor; the file is said first
    let named = |p: &Path| p.display().to_string();
    let cfg = pixtral::gguf::config::TextConfig::from_gguf(&file.header).with_context(|| named(&path))?;
    let tokenizer = pixtral::model::tokenizer::Tokenizer::from_gguf(&file.header).with_context(|| named(&path))?;
    let vpath = mmproj.map(Path::to_path_buf).unwrap_or_else(|| pixtral::gguf::mmproj_path(&path));
    let vision = if vpath.exists() {
        let vfile = GgufFile::open(&vpath)?;
        let (vcfg, text_dim) =
            pixtral::gguf::config::VisionConfig::from_gguf(&vfile.header).with_context(|| named(&vpath))?;
        for w in pixtral::model::check_pair(&file.header, &vfile.header).with_context(|| named(&vpath))? {
            ui.info(format!("warning: {}: {w}", vpath.display()));
        }
        Some(VisionPlan { file: vfile, cfg: vcfg, text_dim })
    } else if need_vision {
        // a missing file (exit 3), as a missing --mmproj FILE is
        let msg = format!(
            "no mmproj found at {}: pass --mmproj, or convert the checkpoint with its vision tower",
            vpath.display()
        );
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, msg).into());
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
    let text_path = file.path.display().to_string();
    let model = pixtral::Model::from_file(file, &Default::default()).with_context(|| text_path)?;
    let vision = match vision {
        Some(v) if with_vision => {
            let vision_path = v.file.path.display().to_string();
            let mut vm = pixtral::model::vision::VisionModel::from_file(v.file, &Default::default())
                .with_context(|| vision_path)?;
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
        model.weights_label(),
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
pub fn session_options(m: &ModelArgs, ctx: usize, keep: usize) -> pixtral::SessionOptions {
    pixtral::SessionOptions {
        ctx_size: ctx,
        context_shift: m.context_shift,
        keep: Some(keep),
        kv_type: m.kv_type,
        ..Default::default()
    }
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
