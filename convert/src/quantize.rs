//! `pixtral quantize IN.gguf OUT.gguf TYPE`: a text GGUF requantized into one of llama-quantize's mixes, with its
//! per-tensor type rules (`llama_tensor_get_type` in llama.cpp's `src/llama-quant.cpp`, the dense-model branches)
//! and ggml's reference quantizers, so that without an importance matrix the tensors are llama.cpp's, byte for
//! byte. Streaming (a chunk of rows at a time, through f32) and atomic (`OUT.partial`, synced, renamed), like
//! [`crate::convert`].

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::Instant;

use pixtral_gguf::{keys, GgufFile, GgufWriter, TensorInfo, TensorSpec, Value};
use pixtral_quant::GgmlType;
use rayon::prelude::*;

use crate::error::{io_err, ConvertError, Result};

/// A llama-quantize mix: its name, its `LLAMA_FTYPE_MOSTLY_*` id (written as `general.file_type`) and the type
/// of the tensors no rule singles out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub name: &'static str,
    pub ftype: u32,
    pub base: GgmlType,
}

/// The mixes this quantizer writes (llama-quantize's names). The IQ1–IQ3 mixes are not: their quantizers need an
/// importance matrix and search lattice grids we do not port (nor run).
pub const MIXES: &[Mix] = &[
    Mix { name: "F32", ftype: 0, base: GgmlType::F32 },
    Mix { name: "F16", ftype: 1, base: GgmlType::F16 },
    Mix { name: "Q4_0", ftype: 2, base: GgmlType::Q4_0 },
    Mix { name: "Q4_1", ftype: 3, base: GgmlType::Q4_1 },
    Mix { name: "Q8_0", ftype: 7, base: GgmlType::Q8_0 },
    Mix { name: "Q5_0", ftype: 8, base: GgmlType::Q5_0 },
    Mix { name: "Q5_1", ftype: 9, base: GgmlType::Q5_1 },
    Mix { name: "Q2_K", ftype: 10, base: GgmlType::Q2_K },
    Mix { name: "Q3_K_S", ftype: 11, base: GgmlType::Q3_K },
    Mix { name: "Q3_K_M", ftype: 12, base: GgmlType::Q3_K },
    Mix { name: "Q3_K_L", ftype: 13, base: GgmlType::Q3_K },
    Mix { name: "Q4_K_S", ftype: 14, base: GgmlType::Q4_K },
    Mix { name: "Q4_K_M", ftype: 15, base: GgmlType::Q4_K },
    Mix { name: "Q5_K_S", ftype: 16, base: GgmlType::Q5_K },
    Mix { name: "Q5_K_M", ftype: 17, base: GgmlType::Q5_K },
    Mix { name: "Q6_K", ftype: 18, base: GgmlType::Q6_K },
    Mix { name: "IQ4_NL", ftype: 25, base: GgmlType::IQ4_NL },
    Mix { name: "IQ4_XS", ftype: 30, base: GgmlType::IQ4_XS },
    Mix { name: "BF16", ftype: 32, base: GgmlType::BF16 },
];

impl Mix {
    /// The mix named `s` (case-insensitive; `Q4_K` and `Q3_K` mean their `_M` mix, as llama-quantize's aliases).
    pub fn from_name(s: &str) -> Option<Mix> {
        let s = s.to_ascii_uppercase();
        let s = match s.as_str() {
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            "Q3_K" => "Q3_K_M",
            other => other,
        };
        MIXES.iter().copied().find(|m| m.name == s)
    }

    pub fn names() -> String {
        MIXES.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub input: PathBuf,
    pub output: PathBuf,
    pub mix: Mix,
    /// Quantize tensors that are already quantized (through f32; llama-quantize's `--allow-requantize`).
    pub allow_requantize: bool,
    pub force: bool,
}

/// What [`quantize`] did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub n_tensors: usize,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub seconds: f64,
    /// (tensor type, count) in the output
    pub types: Vec<(GgmlType, usize)>,
    /// tensors whose rows are not whole blocks of the mix's type and took llama.cpp's fallback type
    pub fallbacks: usize,
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third one between.
fn use_more_bits(i: i64, n: i64) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Whether llama.cpp quantizes a tensor (`tensor_allows_quantization`, the branches a Mistral/Pixtral file meets).
fn quantizable(name: &str, ne: &[u64]) -> bool {
    // ggml_n_dims: up to the last dimension larger than 1
    let n_dims = ne.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    n_dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains(".position_embd")
        && !name.contains(".patch_embd")
}

/// llama.cpp's order of a file's tensors: its loader's weight map, sorted by layer (non-layer tensors first), then
/// by name. The rules' counters run in this order, and `llama_model_quantize` writes the tensors in it.
fn llama_order(a: &str, b: &str) -> std::cmp::Ordering {
    let layer = |n: &str| -> i64 {
        n.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|d| d.parse().ok()).unwrap_or(-1)
    };
    (layer(a), a.as_bytes()).cmp(&(layer(b), b.as_bytes()))
}

/// The type `mix` gives each of a text model's tensors (`(name, ggml ne)`, any order), for a model of `n_layer`
/// layers and `n_head / n_head_kv` query heads per KV head: `None` for a tensor llama.cpp leaves as it is (norms).
/// What `pixtral convert --outtype <mix>` stores, so that it writes `pixtral quantize`'s (and llama.cpp's) tensors.
pub fn mix_types(
    mix: Mix,
    n_layer: usize,
    n_head: usize,
    n_head_kv: usize,
    tensors: &[(String, Vec<u64>)],
) -> Vec<Option<GgmlType>> {
    let mut rules = Rules {
        mix,
        n_gqa: (n_head / n_head_kv.max(1)) as u32,
        n_attn_v: tensors.iter().filter(|(n, _)| n.contains("attn_v.weight")).count() as i64,
        i_attn_v: 0,
        n_layer: n_layer as i64,
        i_ffn_down: 0,
        fallbacks: 0,
    };
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| llama_order(&tensors[a].0, &tensors[b].0));
    let mut out = vec![None; tensors.len()];
    for i in order {
        let (name, ne) = &tensors[i];
        if quantizable(name, ne) {
            out[i] = Some(rules.pick(name, ne));
        }
    }
    out
}

/// The per-tensor rules of a mix: llama.cpp's counters over the file's tensors in order.
struct Rules {
    mix: Mix,
    n_gqa: u32,
    n_attn_v: i64,
    i_attn_v: i64,
    n_layer: i64,
    i_ffn_down: i64,
    fallbacks: usize,
}

impl Rules {
    fn pick(&mut self, name: &str, ne: &[u64]) -> GgmlType {
        use GgmlType::*;
        let m = self.mix.name;
        let mut ty = self.mix.base;
        if !ty.is_float() {
            if name == "output.weight" {
                ty = if !(ne[0] as usize).is_multiple_of(ty.block_size()) {
                    Q8_0
                } else if ty != Q8_0 {
                    Q6_K
                } else {
                    ty
                };
            } else if name.contains("attn_v.weight") || name.contains("attn_qkv.weight") {
                let i = self.i_attn_v;
                ty = match m {
                    "Q2_K" => {
                        if self.n_gqa >= 4 {
                            Q4_K
                        } else {
                            Q3_K
                        }
                    }
                    "Q3_K_M" => {
                        if i < 2 {
                            Q5_K
                        } else {
                            Q4_K
                        }
                    }
                    "Q3_K_L" => Q5_K,
                    "IQ4_NL" | "IQ4_XS" if self.n_gqa >= 4 => Q5_K,
                    "Q4_K_M" | "Q5_K_M" if use_more_bits(i, self.n_attn_v) => Q6_K,
                    "Q4_K_S" if i < 4 => Q5_K,
                    _ => ty,
                };
                self.i_attn_v += 1;
            } else if name.contains("ffn_down") {
                let (i, n) = (self.i_ffn_down, self.n_layer);
                ty = match m {
                    "Q2_K" => Q3_K,
                    "Q3_K_M" => {
                        if i < n / 16 {
                            Q5_K
                        } else {
                            Q4_K
                        }
                    }
                    "Q3_K_L" => Q5_K,
                    "Q4_K_M" | "Q5_K_M" if use_more_bits(i, n) => Q6_K,
                    // (llama.cpp's rule without an importance matrix, which we never have)
                    "IQ4_NL" | "IQ4_XS" if i < n / 8 => Q5_K,
                    "Q4_K_S" if i < n / 8 => Q5_K,
                    _ => ty,
                };
                self.i_ffn_down += 1;
            } else if name.contains("attn_output.weight") {
                ty = match m {
                    "Q2_K" => Q3_K,
                    "Q3_K_M" => Q4_K,
                    "Q3_K_L" => Q5_K,
                    _ => ty,
                };
            }
        }
        // rows of partial blocks: llama.cpp's `tensor_type_fallback`
        let ncols = ne[0] as usize;
        if !ncols.is_multiple_of(ty.block_size()) {
            self.fallbacks += 1;
            ty = match ty {
                IQ4_XS => IQ4_NL,
                Q2_K | Q3_K => Q4_0,
                Q4_K => Q5_0,
                Q5_K => Q5_1,
                Q6_K => Q8_0,
                other => other,
            };
            if !ncols.is_multiple_of(ty.block_size()) {
                ty = F16;
            }
        }
        ty
    }
}

/// Quantize `opts.input` into `opts.output` (see the module notes).
pub fn quantize(opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    let input = &opts.input;
    let f = GgufFile::open(input).map_err(|e| {
        // the reader's message names the file already
        let msg = e.to_string();
        let prefix = format!("{}: ", input.display());
        ConvertError::Input { path: input.clone(), msg: msg.strip_prefix(&prefix).unwrap_or(&msg).to_owned() }
    })?;
    let h = &f.header;
    let bad = |msg: String| ConvertError::Input { path: input.clone(), msg };
    let arch = h.get_str(keys::GENERAL_ARCHITECTURE).map_err(|e| bad(e.to_string()))?.to_owned();
    if arch != "llama" {
        return Err(bad(format!(
            "general.architecture is {arch:?}: `pixtral quantize` writes text models (llama); an mmproj keeps \
             `pixtral convert --vision-type`'s types"
        )));
    }
    let u32_key = |k: &str| h.get_u32(k).map_err(|e| bad(e.to_string()));
    let n_layer = u32_key(keys::LLAMA_BLOCK_COUNT)? as i64;
    let n_head = u32_key(keys::LLAMA_HEAD_COUNT)?;
    let n_head_kv = u32_key(keys::LLAMA_HEAD_COUNT_KV)?.max(1);
    if opts.output.exists() && std::fs::canonicalize(&opts.output).ok() == std::fs::canonicalize(input).ok() {
        return Err(ConvertError::Usage("the output would overwrite the input: name another file".into()));
    }
    if opts.output.is_dir() {
        return Err(ConvertError::Usage(format!("{} is a folder: name the output file", opts.output.display())));
    }
    match opts.output.parent() {
        Some(d) if !d.as_os_str().is_empty() && !d.is_dir() => {
            return Err(ConvertError::Usage(format!("the output folder {} does not exist", d.display())));
        }
        _ => {}
    }
    if opts.output.exists() && !opts.force {
        return Err(ConvertError::Exists { path: opts.output.clone() });
    }

    // ---- plan: every tensor's output type, refused before anything is written ----
    let mut rules = Rules {
        mix: opts.mix,
        n_gqa: n_head / n_head_kv,
        n_attn_v: h.tensors.iter().filter(|t| t.name.contains("attn_v.weight")).count() as i64,
        i_attn_v: 0,
        n_layer,
        i_ffn_down: 0,
        fallbacks: 0,
    };
    let mut tensors: Vec<&TensorInfo> = h.tensors.iter().collect();
    tensors.sort_by(|a, b| llama_order(&a.name, &b.name));
    let mut plan = Vec::with_capacity(tensors.len());
    for t in tensors.iter().copied() {
        let ty = if quantizable(&t.name, &t.ne) { rules.pick(&t.name, &t.ne) } else { t.ty };
        if ty != t.ty {
            if !t.ty.supported() {
                return Err(bad(format!("tensor {}: type {} cannot be read", t.name, t.ty)));
            }
            if !t.ty.is_float() && !opts.allow_requantize {
                return Err(bad(format!(
                    "tensor {} is already quantized ({}): requantizing loses more than quantizing the original F16/BF16/F32 \
                     file; pass --allow-requantize to do it anyway",
                    t.name, t.ty
                )));
            }
            if pixtral_quant::GgmlType::row_bytes(ty, t.ne[0] as usize).is_none() || !has_quantizer(ty) {
                return Err(bad(format!("tensor {}: no quantizer for {ty}", t.name)));
            }
        }
        plan.push(TensorSpec { name: t.name.clone(), ty, ne: t.ne.clone() });
    }

    // ---- metadata: the input's, then the quantization version and the mix's file type, moved to the end as
    // llama.cpp's `gguf_set_val_u32` does (it removes a key before appending it) ----
    let mut meta: Vec<(String, Value)> = h.metadata.clone();
    for (k, v) in [(keys::GENERAL_QUANTIZATION_VERSION, 2), (keys::GENERAL_FILE_TYPE, opts.mix.ftype)] {
        meta.retain(|(key, _)| key != k);
        meta.push((k.to_owned(), Value::U32(v)));
    }

    // ---- write: OUT.partial, a chunk of rows at a time ----
    let tmp = {
        let mut s = opts.output.as_os_str().to_owned();
        s.push(".partial");
        PathBuf::from(s)
    };
    struct Guard(PathBuf, bool);
    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.1 {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }
    let mut guard = Guard(tmp.clone(), false);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let werr = |source| ConvertError::Write { path: tmp.clone(), source };
    let mut w = GgufWriter::new(BufWriter::with_capacity(8 << 20, file), &meta, &plan).map_err(werr)?;
    let mut rows_f32: Vec<f32> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    for (t, spec) in tensors.iter().copied().zip(&plan) {
        // SIGINT/SIGTERM (the CLI routes them here) or `request_interrupt`: stop between chunks; the guard
        // removes OUT.partial
        if pixtral_gguf::os::interrupted() {
            return Err(ConvertError::Interrupted);
        }
        let data = f.data(t);
        if spec.ty == t.ty {
            w.write_data(data).map_err(werr)?;
            continue;
        }
        let cols = t.ne[0] as usize;
        let (in_rb, out_rb) = (t.ty.row_bytes(cols).expect("checked"), spec.ty.row_bytes(cols).expect("checked"));
        let rows = data.len() / in_rb;
        // ~64 MB of f32 per chunk: flat memory whatever the tensor
        let chunk = ((16 << 20) / cols).max(1);
        for r0 in (0..rows).step_by(chunk) {
            if pixtral_gguf::os::interrupted() {
                return Err(ConvertError::Interrupted);
            }
            let n = chunk.min(rows - r0);
            rows_f32.resize(n * cols, 0.0);
            out.resize(n * out_rb, 0);
            let src = &data[r0 * in_rb..(r0 + n) * in_rb];
            rows_f32
                .par_chunks_mut(cols)
                .zip(src.par_chunks(in_rb))
                .zip(out.par_chunks_mut(out_rb))
                .try_for_each(|((x, s), o)| -> std::result::Result<(), pixtral_quant::QuantError> {
                    pixtral_quant::dequantize_row_ref(t.ty, s, x)?;
                    pixtral_quant::quantize_row_ref(spec.ty, x, o)
                })
                .map_err(|e| bad(format!("tensor {}: {e}", t.name)))?;
            w.write_data(&out).map_err(werr)?;
        }
    }
    let bw = w.finish().map_err(werr)?;
    let file = bw.into_inner().map_err(|e| ConvertError::Io { path: tmp.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    // re-read before it takes the name
    let check = GgufFile::open(&tmp).map_err(|e| bad(format!("the written file fails verification: {e}")))?;
    if check.header.tensors.len() != plan.len() {
        return Err(bad("the written file fails verification: tensor count".into()));
    }
    std::fs::rename(&tmp, &opts.output).map_err(io_err(&opts.output))?;
    guard.1 = true;
    let mut types: Vec<(GgmlType, usize)> = Vec::new();
    for s in &plan {
        match types.iter_mut().find(|(t, _)| *t == s.ty) {
            Some(e) => e.1 += 1,
            None => types.push((s.ty, 1)),
        }
    }
    Ok(Summary {
        n_tensors: plan.len(),
        in_bytes: std::fs::metadata(input).map(|m| m.len()).unwrap_or(0),
        out_bytes: std::fs::metadata(&opts.output).map(|m| m.len()).unwrap_or(0),
        seconds: start.elapsed().as_secs_f64(),
        types,
        fallbacks: rules.fallbacks,
    })
}

fn has_quantizer(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | IQ4_NL | IQ4_XS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_ids_are_llama_cpp_file_types() {
        for m in MIXES {
            assert_eq!(pixtral_gguf::llama_ftype_name(m.ftype), Some(m.name), "{m:?}");
        }
    }
}
