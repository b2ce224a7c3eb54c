//! `pixtral run`, `pixtral logits` and `pixtral encode-image`: one request through the library's path, every
//! check that needs no weights done before they load.

use std::path::PathBuf;

use pixtral::model::kv_cache::KvType;
use pixtral::model::vision::VitPrecision;

use crate::plan::{load, physical_cores_or_one, plan, session_options, Plan};
use crate::pricing::{estimate, image_line, learn_rates};
use crate::ui::{self, usage, Ui, UiArgs};
use crate::{input, term, ImageArgs, ModelArgs, PromptArgs, RunArgs, SamplingArgs};

/// `-n`: a token count, or -1 for no limit.
pub fn max_tokens(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
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

pub fn encode_image(
    model: Option<PathBuf>,
    a: ImageArgs,
    out: PathBuf,
    pixels_out: Option<PathBuf>,
) -> anyhow::Result<()> {
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
    let cfg = pixtral::runtime::engine::preprocessing(Some(&v.cfg), a.image_max_side)?;
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

pub fn run(a: RunArgs) -> anyhow::Result<()> {
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
    let mut enc = encode_with_bar(engine, &prepared.images, decoded, &ui)?;
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
    conv.replace(prepared.raw, prepared.system, prepared.messages, std::mem::take(&mut enc.images));
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
    enc.record(&mut c);
    if a.json {
        let (t, u) = (&c.timings, &c.usage);
        let v = serde_json::json!({
            "model": l.engine.path.display().to_string(),
            "model_name": l.name,
            "answer": c.text,
            "finish_reason": c.finish_reason.as_str(),
            "stop_string": c.stop_string,
            "context_full": c.context_full,
            "usage": u.to_json(),
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

pub fn logits(m: ModelArgs, p: PromptArgs, out: PathBuf, ids_out: Option<PathBuf>) -> anyhow::Result<()> {
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
