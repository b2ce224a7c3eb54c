//! The conversion driver.
//!
//! Memory: one tensor chunk at a time (≈ 16 MB of f32 rows plus its encoded bytes), read with `pread`, so
//! peak RSS does not grow with the checkpoint. Rows of a chunk are encoded in parallel (rayon) with the
//! reference quantizers only, so the output bytes are the same on every machine and thread count.
//!
//! Safety: outputs are written to `OUT.partial`, fsynced and renamed; any error, panic or interrupt removes
//! the partial files (a guard's `Drop`), so nothing is ever left at OUT but a complete file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use pixtral_gguf::config::{TextConfig, VisionAct, VisionConfig};
use pixtral_gguf::manifest::{self, Entry};
use pixtral_gguf::vocab::Vocab;
use pixtral_gguf::{keys, mmproj_path, os, GgufFile, GgufWriter, TensorSpec, Value};
use pixtral_quant::GgmlType;
use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, Layout};
use crate::error::{io_err, ConvertError, Result};
use crate::mapping::{self, Transform};
use crate::policy;
use crate::source::{RowBuf, SourceSet, SourceTensor};

/// f32 elements per chunk: 4 Mi (16 MB), the unit of reading, encoding and writing.
const CHUNK_ELEMS: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub src: PathBuf,
    pub out: PathBuf,
    /// Text 2-D weights: F32, F16, BF16, Q8_0 or Q4_0.
    pub outtype: GgmlType,
    /// Vision tower and adapter: F32, F16 or Q8_0.
    pub vision_type: GgmlType,
    pub force: bool,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// The vision FFN activation whatever the config says (`--vision-act`); `None`: the config's, where an
    /// explicit "gelu" in an HF config is refused (see [`crate::checkpoint`]).
    pub vision_act: Option<VisionAct>,
    /// A llama-quantize mix for the text weights (`--outtype q4_k_m` …), which then replaces `outtype`: each
    /// tensor takes the type the mix's rules give it ([`crate::quantize::mix_types`]), so the file holds the
    /// tensors `pixtral quantize` (and llama.cpp's `llama-quantize`) would write from a BF16/F32 conversion.
    pub mix: Option<crate::quantize::Mix>,
}

#[derive(Debug, Clone)]
pub struct OutputSummary {
    pub path: PathBuf,
    pub n_tensors: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub layout: Layout,
    pub outputs: Vec<OutputSummary>,
    pub source_bytes: u64,
    pub seconds: f64,
    /// What the converter changed or chose that the user should hear about, one line each.
    pub notes: Vec<String>,
}

/// One output tensor: what to write and where it comes from.
struct Item {
    entry: Entry,
    ty: GgmlType,
    source: String,
    src: SourceTensor,
    transform: Transform,
}

impl Item {
    fn row_len(&self) -> usize {
        *self.entry.shape.last().expect("manifest shapes are non-empty")
    }
    fn n_rows(&self) -> usize {
        self.entry.shape.iter().product::<usize>() / self.row_len()
    }
    fn spec(&self) -> TensorSpec {
        TensorSpec { name: self.entry.name.clone(), ty: self.ty, ne: self.entry.ne() }
    }
    /// Bytes read from the checkpoint for this tensor.
    fn source_bytes(&self) -> u64 {
        (self.n_rows() * self.src.shape.last().copied().unwrap_or(1) * (self.src.dtype.bitsize() / 8)) as u64
    }
    fn out_bytes(&self) -> u64 {
        self.spec().n_bytes().expect("policy keeps block types on whole blocks")
    }
}

/// One output file: where, its metadata, its tensors in file order.
struct Output {
    path: PathBuf,
    meta: Vec<(String, Value)>,
    items: Vec<Item>,
}

/// Removes its file on drop unless committed.
struct Partial {
    path: PathBuf,
    committed: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn partial_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn open_sources(ck: &Checkpoint) -> Result<SourceSet> {
    let dir = &ck.dir;
    let (index, single) = match ck.layout {
        Layout::Hf => ("model.safetensors.index.json", "model.safetensors"),
        Layout::Mistral => ("consolidated.safetensors.index.json", "consolidated.safetensors"),
    };
    if dir.join(index).is_file() {
        return SourceSet::sharded(dir, &dir.join(index));
    }
    if dir.join(single).is_file() {
        return SourceSet::single(dir, dir.join(single));
    }
    let pickles: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin") || n.ends_with(".pt") || n.ends_with(".pth"))
        .collect();
    let msg = if pickles.is_empty() {
        format!("no {single} or {index} found")
    } else {
        format!(
            "found only pickle weights ({}): they can run arbitrary code when loaded, so pixtral refuses them; \
             convert them to safetensors first (e.g. transformers' save_pretrained(safe_serialization=True))",
            pickles.join(", ")
        )
    };
    Err(ConvertError::Input { path: dir.clone(), msg })
}

fn plan(ck: &Checkpoint, src: &SourceSet, opts: &Options) -> Result<(Vec<Item>, Vec<Item>)> {
    let text_entries = manifest::text_tensors(&ck.text);
    let vision_entries = match &ck.vision {
        Some(v) => manifest::vision_tensors(v, ck.text.dim),
        None => vec![],
    };
    let sources = mapping::sources(ck, &text_entries, &vision_entries, &src.tensors);
    let mut used = std::collections::BTreeSet::new();
    let mut items = Vec::with_capacity(sources.len());
    let mixed: Vec<Option<GgmlType>> = match opts.mix {
        Some(mix) => {
            // ggml order of the shapes (ne[0] = row length)
            let named: Vec<(String, Vec<u64>)> = text_entries
                .iter()
                .map(|e| (e.name.clone(), e.shape.iter().rev().map(|&d| d as u64).collect()))
                .collect();
            crate::quantize::mix_types(mix, ck.text.n_layers, ck.text.n_heads, ck.text.n_heads_kv, &named)
        }
        None => vec![None; text_entries.len()],
    };
    for (entry, (source, transform)) in text_entries.iter().chain(&vision_entries).zip(sources) {
        let t = src.tensors.get(&source).ok_or_else(|| ConvertError::MissingTensor {
            dir: ck.dir.clone(),
            tensor: source.clone(),
            shape: entry.shape.clone(),
        })?;
        let want = match transform {
            Transform::Row(_) => vec![ck.text.vocab_size, ck.text.dim],
            _ => entry.shape.clone(),
        };
        if t.shape != want {
            return Err(ConvertError::ShapeMismatch {
                path: src.path_of(t).into(),
                tensor: source,
                want,
                got: t.shape.clone(),
            });
        }
        if let Transform::Row(r) = transform {
            if r >= ck.text.vocab_size {
                return Err(ConvertError::Input {
                    path: ck.dir.clone(),
                    msg: format!("[IMG_BREAK] id {r} is outside the vocabulary of {}", ck.text.vocab_size),
                });
            }
        }
        if let Transform::Unpermute { n_heads } = transform {
            if want[0] % (2 * n_heads) != 0 {
                return Err(ConvertError::ShapeMismatch {
                    path: src.path_of(t).into(),
                    tensor: source,
                    want,
                    got: t.shape.clone(),
                });
            }
        }
        let ty = match mixed.get(items.len()).copied().flatten() {
            Some(ty) => ty,
            None => policy::target_type(entry.role, *entry.shape.last().unwrap_or(&1), opts.outtype, opts.vision_type),
        };
        used.insert(source.clone());
        items.push(Item { entry: entry.clone(), ty, source, src: t.clone(), transform });
    }
    if let Some(extra) = src.tensors.keys().find(|k| !used.contains(*k)) {
        let t = &src.tensors[extra];
        return Err(ConvertError::Tensor {
            path: src.path_of(t).into(),
            tensor: extra.clone(),
            msg: "not part of the Pixtral tensor manifest for this config (unexpected tensor; refusing to drop weights silently)".into(),
        });
    }
    let vision = items.split_off(text_entries.len());
    Ok((items, vision))
}

/// 64-bit FNV-1a, streamed.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Rows of the token embedding hashed into the fingerprint (evenly spaced, always row 0 and the last).
const FINGERPRINT_ROWS: usize = 1024;

/// `pixtral.checkpoint.fingerprint`: FNV-1a 64 over the config's shapes, up to [`FINGERPRINT_ROWS`] evenly
/// spaced rows of the token embedding and the whole vision patch convolution, as f32 little-endian values.
///
/// Why these: the embedding is what makes a text file this checkpoint's and the patch convolution what makes an
/// mmproj this checkpoint's; both are stored unpermuted in both layouts and hashed as f32, so the HF (BF16 or
/// F32) and Mistral layouts of one model, at any outtype, give the same value, while two trained checkpoints
/// differ in every row. Cost: ≈ 1024 × 5120 + 786432 values read (≈ 12 MB of BF16 for Pixtral-12B), not the
/// whole checkpoint a second time. Not a security digest: it catches accidental mismatches, nothing forged.
fn fingerprint(ck: &Checkpoint, src: &SourceSet, text: &[Item], vision: &[Item]) -> Result<String> {
    let mut h = Fnv::new();
    let t = &ck.text;
    let mut shape = vec![t.dim, t.n_layers, t.n_heads, t.n_heads_kv, t.head_dim, t.ffn_dim, t.vocab_size];
    if let Some(v) = &ck.vision {
        shape.extend([v.dim, v.n_layers, v.n_heads, v.ffn_dim, v.patch_size]);
    }
    for x in shape {
        h.put(&(x as u64).to_le_bytes());
    }
    let mut buf = RowBuf::default();
    let mut put_rows = |h: &mut Fnv, item: &Item, row0: usize, n: usize| -> Result<()> {
        src.read_rows(&item.source, &item.src, item.row_len(), row0, n, &mut buf)?;
        for x in &buf.rows {
            h.put(&x.to_le_bytes());
        }
        Ok(())
    };
    if let Some(e) = text.iter().find(|i| i.entry.name == "token_embd.weight") {
        let n = e.n_rows();
        let k = FINGERPRINT_ROWS.min(n);
        for j in 0..k {
            let r = if k > 1 { j * (n - 1) / (k - 1) } else { 0 };
            put_rows(&mut h, e, r, 1)?;
        }
    }
    if let Some(c) = vision.iter().find(|i| i.entry.name == "v.patch_embd.weight") {
        put_rows(&mut h, c, 0, c.n_rows())?;
    }
    Ok(format!("{:016x}", h.0))
}

/// `general.size_label` as llama.cpp's converter writes it (gguf-py `model_weight_count_rounded_notation`): the
/// parameter count in K, M, B or T with at least two significant digits ("348K", "12B").
fn size_label(n: u64) -> String {
    let n = n as f64;
    let (x, suffix) = match n {
        n if n > 1e12 => (n * 1e-12, "T"),
        n if n > 1e9 => (n * 1e-9, "B"),
        n if n > 1e6 => (n * 1e-6, "M"),
        n => (n * 1e-3, "K"),
    };
    let digits = format!("{}", x.round_ties_even() as u64).trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{x:.fix$}{suffix}")
}

/// General keys, then the config's ([`TextConfig::to_gguf`]), then the vocabulary.
fn text_metadata(ck: &Checkpoint, opts: &Options) -> Vec<(String, Value)> {
    let t: &TextConfig = &ck.text;
    let v: &Vocab = &ck.vocab;
    let mut meta = vec![
        (keys::GENERAL_ARCHITECTURE.into(), Value::String(TextConfig::ARCHITECTURE.into())),
        (keys::GENERAL_TYPE.into(), Value::String("model".into())),
        (keys::GENERAL_NAME.into(), Value::String(ck.name.clone())),
        (keys::GENERAL_FILE_TYPE.into(), Value::U32(opts.mix.map_or(policy::file_type(opts.outtype), |m| m.ftype))),
        (keys::GENERAL_QUANTIZATION_VERSION.into(), Value::U32(2)),
    ];
    meta.extend(t.to_gguf());
    if let Some(pad) = v.pad {
        meta.push((keys::TOKENIZER_PAD_ID.into(), Value::U32(pad)));
    }
    meta.extend([
        (keys::TOKENIZER_MODEL.into(), Value::String("gpt2".into())),
        (keys::TOKENIZER_PRE.into(), Value::String("tekken".into())),
        (keys::TOKENIZER_TOKENS.into(), Value::str_array(&v.tokens)),
        (keys::TOKENIZER_TOKEN_TYPE.into(), Value::i32_array(&v.types)),
        (keys::TOKENIZER_MERGES.into(), Value::str_array(&v.merges)),
        (keys::TOKENIZER_BOS_ID.into(), Value::U32(v.bos)),
        (keys::TOKENIZER_EOS_ID.into(), Value::U32(v.eos)),
        (keys::TOKENIZER_UNK_ID.into(), Value::U32(v.unk)),
        (keys::TOKENIZER_ADD_BOS.into(), Value::Bool(v.add_bos)),
        (keys::TOKENIZER_ADD_EOS.into(), Value::Bool(false)),
        (keys::TOKENIZER_CHAT_TEMPLATE.into(), Value::String(v.chat_template.clone())),
        (keys::PIXTRAL_TOKENIZER_PATTERN.into(), Value::String(v.pattern.clone())),
    ]);
    meta
}

/// General keys, then the config's ([`VisionConfig::to_gguf`]).
fn vision_metadata(ck: &Checkpoint, v: &VisionConfig, opts: &Options) -> Vec<(String, Value)> {
    let mut meta = vec![
        (keys::GENERAL_ARCHITECTURE.into(), Value::String(VisionConfig::ARCHITECTURE.into())),
        (keys::GENERAL_TYPE.into(), Value::String("mmproj".into())),
        (keys::GENERAL_NAME.into(), Value::String(ck.name.clone())),
        (keys::GENERAL_FILE_TYPE.into(), Value::U32(policy::file_type(opts.vision_type))),
        (keys::GENERAL_QUANTIZATION_VERSION.into(), Value::U32(2)),
    ];
    meta.extend(v.to_gguf(ck.text.dim));
    meta
}

/// Upper bound on a file's size: data with padding, plus the metadata strings with their framing.
fn size_bound(meta: &[(String, Value)], items: &[Item]) -> u64 {
    fn value_bound(v: &Value) -> u64 {
        match v {
            Value::String(s) => 8 + s.len() as u64,
            Value::Array(_, xs) => 12 + xs.iter().map(value_bound).sum::<u64>(),
            _ => 8,
        }
    }
    let meta: u64 = meta.iter().map(|(k, v)| 12 + k.len() as u64 + value_bound(v)).sum();
    let infos: u64 = items.iter().map(|i| 8 + i.entry.name.len() as u64 + 4 + 32 + 4 + 8).sum();
    let data: u64 = items.iter().map(|i| i.out_bytes() + 32).sum();
    24 + meta + infos + data + 4096
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(enabled: bool, total: u64) -> Progress {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "[{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar }
    }
    fn tensor(&self, i: usize, n: usize, name: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("tensor {}/{n} {name}", i + 1));
        }
    }
    fn add(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Scratch buffers reused across chunks.
#[derive(Default)]
struct Buffers {
    src: RowBuf,
    permuted: Vec<f32>,
    encoded: Vec<u8>,
}

/// Stream one tensor: read a chunk of rows, fix its layout, encode it in parallel, write it.
fn write_tensor<W: Write>(
    w: &mut GgufWriter<W>,
    src: &SourceSet,
    item: &Item,
    buf: &mut Buffers,
    progress: &Progress,
    out: &Path,
) -> Result<()> {
    let row_len = item.row_len();
    let n_rows = item.n_rows();
    let row_bytes = item.ty.row_bytes(row_len).expect("policy keeps block types on whole blocks");
    let src_row_len = match item.transform {
        Transform::Row(_) => item.src.shape[1],
        _ => row_len,
    };
    // chunks of whole heads when un-permuting, so the permutation never crosses a chunk
    let unit = match item.transform {
        Transform::Unpermute { n_heads } => n_rows / n_heads,
        _ => 1,
    };
    let chunk_rows = ((CHUNK_ELEMS / row_len.max(1)) / unit).max(1) * unit;
    let mut row0 = 0;
    while row0 < n_rows {
        if os::interrupted() {
            return Err(ConvertError::Interrupted);
        }
        let n = chunk_rows.min(n_rows - row0);
        let src_row0 = match item.transform {
            Transform::Row(r) => r,
            _ => row0,
        };
        src.read_rows(&item.source, &item.src, src_row_len, src_row0, n, &mut buf.src)?;
        let rows: &[f32] = match item.transform {
            Transform::Unpermute { .. } => {
                buf.permuted.resize(buf.src.rows.len(), 0.0);
                for (r, dst) in buf.permuted.chunks_exact_mut(row_len).enumerate() {
                    let s = Transform::unpermuted_row(r, unit);
                    dst.copy_from_slice(&buf.src.rows[s * row_len..(s + 1) * row_len]);
                }
                &buf.permuted
            }
            _ => &buf.src.rows,
        };
        buf.encoded.resize(n * row_bytes, 0);
        buf.encoded
            .par_chunks_mut(row_bytes)
            .zip(rows.par_chunks(row_len))
            .with_min_len(16)
            .for_each(|(dst, x)| pixtral_quant::quantize_row_ref(item.ty, x, dst).expect("lengths from the plan"));
        w.write_data(&buf.encoded).map_err(|source| ConvertError::Write { path: out.into(), source })?;
        progress.add((n * src_row_len * (item.src.dtype.bitsize() / 8)) as u64);
        row0 += n;
    }
    Ok(())
}

/// Write one output to its `.partial` and verify it. A failed write (full disk, file size limit, I/O error)
/// reports what the file needs and what there was room for; the `.partial` goes when the guard drops.
fn write_file(o: &Output, src: &SourceSet, progress: &Progress, done: &mut usize, total: usize) -> Result<Partial> {
    let (meta, items) = (&o.meta, &o.items);
    let tmp = partial_path(&o.path);
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let guard = Partial { path: tmp.clone(), committed: false };
    let specs: Vec<TensorSpec> = items.iter().map(Item::spec).collect();
    let write = || -> Result<()> {
        let werr = |source| ConvertError::Write { path: tmp.clone(), source };
        let mut w = GgufWriter::new(BufWriter::with_capacity(8 << 20, file), meta, &specs).map_err(werr)?;
        let mut buf = Buffers::default();
        for item in items {
            progress.tensor(*done, total, &item.entry.name);
            write_tensor(&mut w, src, item, &mut buf, progress, &tmp)?;
            *done += 1;
        }
        let bw = w.finish().map_err(werr)?;
        let file = bw.into_inner().map_err(|e| ConvertError::Io { path: tmp.clone(), source: e.into_error() })?;
        file.sync_all().map_err(io_err(&tmp))
    };
    match write() {
        Ok(()) => {}
        Err(e @ ConvertError::Write { .. }) => return Err(write_failed(o, &tmp, e)),
        Err(e @ ConvertError::Io { .. }) if matches!(&e, ConvertError::Io { path, .. } if *path == tmp) => {
            return Err(write_failed(o, &tmp, e))
        }
        Err(e) => return Err(e),
    }
    verify(&tmp, meta, &specs)?;
    Ok(guard)
}

fn write_failed(o: &Output, tmp: &Path, e: ConvertError) -> ConvertError {
    let dir = match tmp.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    ConvertError::WriteFailed {
        path: tmp.to_path_buf(),
        need: size_bound(&o.meta, &o.items),
        written: std::fs::metadata(tmp).map(|m| m.len()).unwrap_or(0),
        available: os::available_space(&dir).unwrap_or(0),
        msg: e.to_string(),
    }
}

/// Re-read a finished output with the strict reader before it is renamed into place: every key present,
/// every tensor where it belongs, as large and as typed as planned.
fn verify(path: &Path, meta: &[(String, Value)], specs: &[TensorSpec]) -> Result<()> {
    let bad = |msg: String| ConvertError::Input {
        path: path.into(),
        msg: format!("the written file fails verification: {msg}"),
    };
    let f = GgufFile::open(path).map_err(|e| bad(e.to_string()))?;
    let h = &f.header;
    if let Some((k, _)) = meta.iter().find(|(k, _)| h.get(k).is_none()) {
        return Err(bad(format!("metadata key {k:?} is missing")));
    }
    if h.tensors.len() != specs.len() {
        return Err(bad(format!("{} tensors, {} written", h.tensors.len(), specs.len())));
    }
    for (t, s) in h.tensors.iter().zip(specs) {
        if t.name != s.name || t.ty != s.ty || t.ne != s.ne || Some(t.n_bytes) != s.n_bytes() {
            return Err(bad(format!(
                "tensor {:?} reads back as {:?} {:?} {} bytes, written as {:?} {:?} {:?} bytes",
                s.name,
                t.ty,
                t.ne,
                t.n_bytes,
                s.ty,
                s.ne,
                s.n_bytes()
            )));
        }
    }
    Ok(())
}

/// Convert `opts.src` to `opts.out` (+ `mmproj_path(opts.out)` when the checkpoint has a vision tower).
pub fn convert(opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    if opts.mix.is_none()
        && !matches!(opts.outtype, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0)
    {
        return Err(ConvertError::Usage(format!(
            "--outtype {} is not one of f32, f16, bf16, q8_0, q4_0",
            opts.outtype
        )));
    }
    if !matches!(opts.vision_type, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0) {
        return Err(ConvertError::Usage(format!("--vision-type {} is not one of f32, f16, q8_0", opts.vision_type)));
    }
    if opts.out.to_string_lossy().ends_with(".mmproj.gguf") {
        return Err(ConvertError::Usage(format!(
            "-o {} names an mmproj file: -o names the text GGUF, and its mmproj goes next to it as STEM.mmproj.gguf",
            opts.out.display()
        )));
    }
    let ck = Checkpoint::detect_with(&opts.src, opts.vision_act)?;
    let src = open_sources(&ck)?;
    let (text_items, vision_items) = plan(&ck, &src, opts)?;
    let fp = fingerprint(&ck, &src, &text_items, &vision_items)?;
    let fp_entry = || (keys::PIXTRAL_CHECKPOINT_FINGERPRINT.to_string(), Value::String(fp.clone()));

    let mut text_meta = text_metadata(&ck, opts);
    let n_params: u64 = text_items.iter().map(|i| i.entry.shape.iter().product::<usize>() as u64).sum();
    text_meta.insert(4, (keys::GENERAL_SIZE_LABEL.into(), Value::String(size_label(n_params))));
    text_meta.push(fp_entry());
    let mut outputs = vec![Output { path: opts.out.clone(), meta: text_meta, items: text_items }];
    if let Some(v) = &ck.vision {
        let mut meta = vision_metadata(&ck, v, opts);
        meta.push(fp_entry());
        outputs.push(Output { path: mmproj_path(&opts.out), meta, items: vision_items });
    }
    for o in &outputs {
        if o.path.exists() && !opts.force {
            return Err(ConvertError::Exists { path: o.path.clone() });
        }
    }
    let need: u64 = outputs.iter().map(|o| size_bound(&o.meta, &o.items)).sum();
    let dir = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let available = os::available_space(&dir).map_err(io_err(&dir))?;
    if need > available {
        return Err(ConvertError::DiskSpace { dir, need, available });
    }

    let all_items = || outputs.iter().flat_map(|o| &o.items);
    let total_tensors = all_items().count();
    let source_bytes: u64 = all_items().map(Item::source_bytes).sum();
    let progress = Progress::new(opts.progress, source_bytes);
    let mut done = 0;
    let mut partials = Vec::new();
    for o in &outputs {
        partials.push(write_file(o, &src, &progress, &mut done, total_tensors)?);
    }
    progress.finish();
    // all complete and synced: rename into place (mmproj first, text last)
    let mut summaries = Vec::new();
    for (o, guard) in outputs.iter().zip(partials.iter_mut()).rev() {
        std::fs::rename(&guard.path, &o.path).map_err(io_err(&o.path))?;
        guard.committed = true;
        let bytes = std::fs::metadata(&o.path).map_err(io_err(&o.path))?.len();
        summaries.push(OutputSummary { path: o.path.clone(), n_tensors: o.items.len(), bytes });
    }
    summaries.reverse();
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Summary {
        layout: ck.layout,
        outputs: summaries,
        source_bytes,
        seconds: start.elapsed().as_secs_f64(),
        notes: ck.notes,
    })
}
