//! What a request will cost before it runs: floating-point work from the model's shapes, and seconds from
//! throughput rates (measured on this machine when the caller has them, else a tier's typical figures).
//!
//! Work counted (a multiply-add is 2 flops):
//! - ViT, per image of `n` patches: `2n` per weight applied to each patch (patch embedding, every block's
//!   q/k/v/o and SwiGLU, the adapter) plus attention `4n²d` per block;
//! - decoder prefill of `n` tokens after `past`: `2n` per text weight (matmuls), plus causal attention
//!   `4·hd·H·L` per (query, key) pair, `Σ_{i<n} (past + i + 1)` pairs.
//!
//! Attention is priced apart because it runs at another rate (tiles through the f32 micro-kernel, while the
//! matmuls run int8 kernels) and grows with the square of the prompt.

use crate::gguf::config::{TextConfig, VisionConfig};
use crate::quant::Isa;

/// Throughputs in GFLOP/s for the whole process (all its threads).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// ViT and adapter, including their attention
    pub vit: f64,
    /// decoder matmuls during prefill
    pub matmul: f64,
    /// decoder prefill attention
    pub attention: f64,
}

impl Rates {
    /// Typical rates of an ISA tier with `threads` threads, from runs of the 12B-shape files on a 2-core Xeon
    /// (README "Speed": ViT 250 GFLOP/s on 2 threads with AVX-512, 158 with AVX2; prefill pp512 Q4_0 20 tok/s
    /// = ~470 GFLOP/s; pp4096 16.5 tok/s, its attention ~130 GFLOP/s). Rough by nature: a measured rate replaces
    /// them.
    pub fn typical(isa: Isa, threads: usize) -> Rates {
        let per_thread = match isa.name() {
            "avx512" => Rates { vit: 125.0, matmul: 200.0, attention: 65.0 },
            "avx2" => Rates { vit: 75.0, matmul: 110.0, attention: 35.0 },
            "neon" => Rates { vit: 15.0, matmul: 20.0, attention: 6.0 },
            _ => Rates { vit: 1.5, matmul: 2.0, attention: 0.5 },
        };
        let t = threads.max(1) as f64;
        Rates { vit: per_thread.vit * t, matmul: per_thread.matmul * t, attention: per_thread.attention * t }
    }
}

/// Weights applied to every patch: patch embedding, blocks, adapter.
pub fn vit_params(cfg: &VisionConfig, text_dim: usize) -> f64 {
    let (d, f, td, p) = (cfg.dim as f64, cfg.ffn_dim as f64, text_dim as f64, cfg.patch_size as f64);
    3.0 * p * p * d + cfg.n_layers as f64 * (4.0 * d * d + 3.0 * d * f) + d * td + td * td
}

/// Flops of encoding one image of `n_patches` (as [`crate::bench::vit`] counts them).
pub fn vit_flops(cfg: &VisionConfig, text_dim: usize, n_patches: usize) -> f64 {
    let n = n_patches as f64;
    2.0 * n * vit_params(cfg, text_dim) + cfg.n_layers as f64 * 4.0 * n * n * cfg.dim as f64
}

/// Text weights applied to every token (the embedding is a lookup, not a matmul).
pub fn text_params(cfg: &TextConfig) -> f64 {
    let (d, q, kv, f) = (
        cfg.dim as f64,
        (cfg.n_heads * cfg.head_dim) as f64,
        (cfg.n_heads_kv * cfg.head_dim) as f64,
        cfg.ffn_dim as f64,
    );
    cfg.n_layers as f64 * (2.0 * d * q + 2.0 * d * kv + 3.0 * d * f) + d * cfg.vocab_size as f64
}

/// `(matmul, attention)` flops of prefilling `n` tokens after `past` cached ones.
pub fn prefill_flops(cfg: &TextConfig, n: usize, past: usize) -> (f64, f64) {
    let (n, past) = (n as f64, past as f64);
    let pairs = n * past + n * (n + 1.0) / 2.0;
    let per_pair = 4.0 * (cfg.head_dim * cfg.n_heads * cfg.n_layers) as f64;
    (2.0 * n * text_params(cfg), pairs * per_pair)
}

/// Seconds to prefill `n` tokens after `past` at `rates`.
pub fn prefill_seconds(cfg: &TextConfig, n: usize, past: usize, rates: &Rates) -> f64 {
    let (mm, attn) = prefill_flops(cfg, n, past);
    mm / (rates.matmul * 1e9) + attn / (rates.attention * 1e9)
}

/// Seconds to encode images of these patch counts at `rates` (each image attends within itself).
pub fn vit_seconds(cfg: &VisionConfig, text_dim: usize, patches: &[usize], rates: &Rates) -> f64 {
    patches.iter().map(|&n| vit_flops(cfg, text_dim, n)).sum::<f64>() / (rates.vit * 1e9)
}

/// Fold one measured prefill (`n` tokens after 0, `seconds`) into `rates`: the share the model gives to
/// attention at the current attention rate is taken off, and the rest updates the matmul rate for short
/// prompts; for long prompts (attention over a third of the estimate) it is the attention rate that is updated.
/// A measurement that leaves less than a fifth of its time to the part being updated changes nothing.
pub fn learn_prefill(cfg: &TextConfig, n: usize, seconds: f64, rates: &mut Rates) {
    let (mm, attn) = prefill_flops(cfg, n, 0);
    let (t_mm, t_attn) = (mm / (rates.matmul * 1e9), attn / (rates.attention * 1e9));
    if t_attn * 2.0 < t_mm {
        let rest = seconds - t_attn;
        if rest > 0.2 * seconds {
            rates.matmul = mm / rest / 1e9;
        }
    } else {
        let rest = seconds - t_mm;
        if rest > 0.2 * seconds {
            rates.attention = attn / rest / 1e9;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nemo() -> TextConfig {
        TextConfig::pixtral_12b()
    }

    #[test]
    fn mistral_nemo_has_twelve_billion_weights_per_token_and_quadratic_attention() {
        let p = text_params(&nemo());
        // 40 layers × (2·5120·4096 + 2·5120·1024 + 3·5120·14336) + the 5120·131072 head = 11.58e9; the input
        // embedding (another 0.67e9, a lookup) makes the 12.2e9 of the name
        assert!((p - 11.576e9).abs() < 0.001e9, "{p}");
        let (_, a1) = prefill_flops(&nemo(), 1000, 0);
        let (_, a2) = prefill_flops(&nemo(), 2000, 0);
        assert!((a2 / a1 - 4.0).abs() < 0.01, "{}", a2 / a1);
        // one token after 99 sees 100 keys: 4·128·32·40 flops each
        assert_eq!(prefill_flops(&nemo(), 1, 99).1, 100.0 * 4.0 * 128.0 * 32.0 * 40.0);
    }

    #[test]
    fn a_measured_prefill_updates_the_rate_it_measures() {
        let c = nemo();
        let mut r = Rates { vit: 1.0, matmul: 100.0, attention: 10.0 };
        // a short prompt measured at exactly twice the modelled matmul time
        let (mm, attn) = prefill_flops(&c, 64, 0);
        learn_prefill(&c, 64, 2.0 * mm / 100e9 + attn / 10e9, &mut r);
        assert!((r.matmul - 50.0).abs() < 1e-6 && r.attention == 10.0, "{r:?}");
        // a long one: attention dominates, its rate moves
        let (mm, attn) = prefill_flops(&c, 8192, 0);
        learn_prefill(&c, 8192, mm / 50e9 + attn / 5e9, &mut r);
        assert!((r.attention - 5.0).abs() < 1e-6 && (r.matmul - 50.0).abs() < 1e-6, "{r:?}");
    }
}
