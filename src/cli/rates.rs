//! Throughputs measured on this machine, kept between runs for the cost estimates printed before an image is
//! encoded: `$XDG_CACHE_HOME/pixtral/rates.json` (else `~/.cache/pixtral/rates.json`), one entry per
//! (kernel version, ISA tier, threads, text and vision weights' type and shape, ViT precision), written after each
//! `run` that did enough work to time.
//! A missing or unreadable file means the tier's typical rates ([`Rates::typical`]); a write that fails is
//! ignored (the estimate is a courtesy, never a reason to fail).

use pixtral::model::vision::VitPrecision;
use std::path::PathBuf;

use pixtral::cost::Rates;

fn file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("pixtral").join("rates.json"))
}

/// Bumped when the kernels change what a rate means, so rates measured by older builds are not used: 2 = prefill
/// attention as tiles (2026-12; version 1's attention rates were 20× lower).
const VERSION: u32 = 2;

/// The key of one configuration: kernel version, tier, threads, the text and vision weights (type and shape, e.g.
/// `Q4_0:5120x14336`), and the vision tower's arithmetic.
pub fn key(threads: usize, text_type: &str, vision_type: &str, vit: VitPrecision) -> String {
    let isa = pixtral::quant::isa::selected().name();
    format!("v{VERSION}/{isa}/{threads}t/{text_type}/{vision_type}/{}", vit.name())
}

fn read_all() -> serde_json::Map<String, serde_json::Value> {
    file()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

/// The measured rates of `key`, each positive and finite, or the typical ones; and whether they were measured.
pub fn load(key: &str, threads: usize) -> (Rates, bool) {
    let typical = Rates::typical(pixtral::quant::isa::selected(), threads);
    let all = read_all();
    let Some(e) = all.get(key) else { return (typical, false) };
    let get = |k: &str, d: f64| e.get(k).and_then(|v| v.as_f64()).filter(|x| x.is_finite() && *x > 0.0).unwrap_or(d);
    let r = Rates {
        vit: get("vit_gflops", typical.vit),
        matmul: get("matmul_gflops", typical.matmul),
        attention: get("attention_gflops", typical.attention),
    };
    (r, true)
}

pub fn save(key: &str, r: &Rates) {
    let Some(path) = file() else { return };
    let mut all = read_all();
    all.insert(
        key.to_string(),
        serde_json::json!({"vit_gflops": r.vit, "matmul_gflops": r.matmul, "attention_gflops": r.attention}),
    );
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // write then rename: two processes never leave half a file
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    if std::fs::write(&tmp, serde_json::Value::Object(all).to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}
