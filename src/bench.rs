//! `pixtral bench`: prompt processing (pp), token generation (tg) and ViT encoding, `r` runs each (every
//! run's seconds kept, so callers give mean ± stddev and the median), with the napkin math: tg reads every
//! weight once per token (GB/s), pp and the ViT do 2 flops per weight and token/patch plus attention (GFLOP/s).

use std::time::Instant;

use crate::error::Result;
use crate::image::{preprocess, RgbF32};
use crate::model::text::Model;
use crate::model::vision::VisionModel;
use crate::runtime::session::{Session, SessionOptions};

#[derive(Debug, Clone)]
pub struct Timing {
    pub n: usize,
    /// seconds of each run, in order
    pub seconds: Vec<f64>,
    pub seconds_median: f64,
    pub tps_median: f64,
    /// GB/s (tg) or GFLOP/s (pp), at the median
    pub rate: f64,
}

#[derive(Debug, Clone)]
pub struct VitTiming {
    /// the size asked for
    pub width: usize,
    pub height: usize,
    /// the size encoded: resized to fit the model's `image_size`, then to whole patches
    pub encoded_width: usize,
    pub encoded_height: usize,
    pub patches: usize,
    /// seconds of each run, in order
    pub seconds: Vec<f64>,
    pub seconds_median: f64,
    /// GFLOP/s at the median
    pub gflops: f64,
}

/// The median of runs (the upper one of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Mean and sample standard deviation (0 for one run) of `x`.
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 { x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Bytes of the text weights read per generated token.
pub fn weight_bytes(model: &Model) -> usize {
    let w = &model.weights;
    let mats = w.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
    mats.chain([&w.output]).map(|m| m.rows * m.row_bytes()).sum()
}

/// Multiply-adds per token of the text weights.
pub fn weight_params(model: &Model) -> usize {
    let w = &model.weights;
    let mats = w.layers.iter().flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
    mats.chain([&w.output]).map(|m| m.rows * m.cols).sum()
}

fn tokens(model: &Model, n: usize) -> Vec<u32> {
    // ordinary tokens, deterministic
    let v = model.cfg.vocab_size as u32;
    std::iter::once(model.tokenizer.bos).chain((1..n as u32).map(|i| 1000 + (i * 7919) % (v - 1000))).collect()
}

pub fn prompt_processing(model: &Model, n: usize, runs: usize) -> Result<Timing> {
    let ids = tokens(model, n);
    let mut secs = Vec::new();
    for _ in 0..runs {
        let mut s = Session::new(model, SessionOptions { ctx_size: n + 1, batch: 512, ..Default::default() });
        let t = Instant::now();
        s.eval(&ids, None, None)?;
        secs.push(t.elapsed().as_secs_f64());
    }
    let sec = median(&secs);
    Ok(Timing {
        n,
        seconds: secs,
        seconds_median: sec,
        tps_median: n as f64 / sec,
        rate: 2.0 * weight_params(model) as f64 * n as f64 / sec / 1e9,
    })
}

pub fn generation(model: &Model, n: usize, runs: usize) -> Result<Timing> {
    let ids = tokens(model, n + 1);
    let mut secs = Vec::new();
    for _ in 0..runs {
        let mut s = Session::new(model, SessionOptions { ctx_size: n + 2, ..Default::default() });
        s.eval(&ids[..1], None, None)?;
        let t = Instant::now();
        for id in &ids[1..=n] {
            s.eval(std::slice::from_ref(id), None, None)?;
        }
        secs.push(t.elapsed().as_secs_f64());
    }
    let sec = median(&secs);
    let tps = n as f64 / sec;
    Ok(Timing { n, seconds: secs, seconds_median: sec, tps_median: tps, rate: weight_bytes(model) as f64 * tps / 1e9 })
}

/// A deterministic photo-like RGB image (gradients; resampling-sensitive enough).
pub fn synthetic_image(w: usize, h: usize) -> RgbF32 {
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            data.extend([(x % 256) as f32, (y % 256) as f32, ((x + y) % 256) as f32]);
        }
    }
    RgbF32 { width: w, height: h, data }
}

pub fn vit(vm: &VisionModel, width: usize, height: usize, runs: usize) -> VitTiming {
    let img = preprocess(&synthetic_image(width, height), &vm.preprocess_config(None));
    let n = img.n_patches();
    let flops = crate::cost::vit_flops(&vm.cfg, vm.text_dim, n);
    let mut secs = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(vm.encode(std::slice::from_ref(&img)));
        secs.push(t.elapsed().as_secs_f64());
    }
    let sec = median(&secs);
    VitTiming {
        width,
        height,
        encoded_width: img.width(),
        encoded_height: img.height(),
        patches: n,
        seconds: secs,
        seconds_median: sec,
        gflops: flops / sec / 1e9,
    }
}
