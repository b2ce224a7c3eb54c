//! What a request's images will cost on this machine before it runs (`estimate:` lines), from the two models'
//! shapes and measured or typical rates, and what this run measured for the next estimate (`rates.json`).

use std::path::Path;

use pixtral::gguf::config::{TextConfig, VisionConfig};
use pixtral::model::vision::VitPrecision;

use crate::plan::{threads_in_use, Loaded, Plan};
use crate::rates;
use crate::ui::Ui;

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
pub fn estimate(
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
pub fn learn_rates(l: &Loaded, grids: &[(usize, usize)], c: &pixtral::Completion) {
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
