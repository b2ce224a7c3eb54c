//! `pixtral convert` on the tiny fixtures (`scripts/gen_tiny_models.py`): cross-layout identity, exact values,
//! format bounds, type policy, metadata, determinism, and bad inputs that must leave nothing behind.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{copy_dir, fixtures, fnv1a64, TempDir};
use pixtral::convert::{convert, ConvertError, Options};
use pixtral::gguf::{mmproj_path, GgufFile, Value};
use pixtral::quant::{dequantize_row_ref, roundtrip_bound, GgmlType};

const LAYOUTS: [&str; 3] = ["hf", "hf-sharded", "mistral"];

fn tiny(layout: &str) -> PathBuf {
    fixtures().join("tiny").join(layout)
}

fn expect() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny/expect.json")).unwrap()).unwrap()
}

fn opts(src: &Path, out: &Path, outtype: GgmlType, vision_type: GgmlType) -> Options {
    Options {
        src: src.into(),
        out: out.into(),
        outtype,
        vision_type,
        force: false,
        progress: false,
        vision_act: None,
        mix: None,
    }
}

fn run(src: &Path, out: &Path, outtype: GgmlType, vision_type: GgmlType) -> (GgufFile, GgufFile) {
    convert(&opts(src, out, outtype, vision_type)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    (GgufFile::open(out).unwrap(), GgufFile::open(mmproj_path(out)).unwrap())
}

fn dequant(f: &GgufFile, name: &str) -> Vec<f32> {
    let (t, data) = f.tensor_data(name).unwrap();
    let mut out = vec![0f32; t.n_elements() as usize];
    dequantize_row_ref(t.ty, data, &mut out).unwrap();
    out
}

/// The metadata but `general.name` (the folder's name) and `tokenizer.ggml.padding_token_id`, which llama.cpp's
/// converter (and ours) takes from different files per layout: mistral-common's `<pad>` in `tekken.json`, the
/// `pad_token` of `tokenizer_config.json`, which the tiny HF checkpoint does not name
/// (`pad_token_is_read_from_each_layout_as_llama_cpp_reads_it`).
fn meta_without_name(f: &GgufFile) -> Vec<(String, Value)> {
    let skip = ["general.name", "tokenizer.ggml.padding_token_id"];
    f.header.metadata.iter().filter(|(k, _)| !skip.contains(&k.as_str())).cloned().collect()
}

#[test]
fn pad_token_is_read_from_each_layout_as_llama_cpp_reads_it() {
    let dir = TempDir::new("pad");
    let pad = |f: &GgufFile| f.header.get("tokenizer.ggml.padding_token_id").cloned();
    // Mistral layout: tekken.json's <pad> (id 11)
    let (m, _) = run(&tiny("mistral"), &dir.join("m.gguf"), GgmlType::F32, GgmlType::F32);
    assert_eq!(pad(&m), Some(Value::U32(11)));
    // HF without a pad_token: none, as llama.cpp's own file of this checkpoint
    let (h, _) = run(&tiny("hf"), &dir.join("h.gguf"), GgmlType::F32, GgmlType::F32);
    assert_eq!(pad(&h), None);
    // HF naming one in tokenizer_config.json, as a string or as {"content": …}
    for (i, (file, edit)) in [
        ("tokenizer_config.json", r#""pad_token": "<pad>","#),
        ("tokenizer_config.json", r#""pad_token": {"content": "<pad>", "special": true},"#),
    ]
    .into_iter()
    .enumerate()
    {
        let src = dir.join("hf-pad");
        let _ = std::fs::remove_dir_all(&src);
        copy_dir(&tiny("hf"), &src);
        let p = src.join(file);
        let text = std::fs::read_to_string(&p).unwrap().replacen('{', &format!("{{{edit}"), 1);
        std::fs::write(&p, text).unwrap();
        let (f, _) = run(&src, &dir.join(&format!("p{i}.gguf")), GgmlType::F32, GgmlType::F32);
        assert_eq!(pad(&f), Some(Value::U32(11)), "{edit}");
    }
}

fn assert_same_files(a: &GgufFile, b: &GgufFile, what: &str) {
    assert_eq!(meta_without_name(a), meta_without_name(b), "{what}: metadata");
    assert_eq!(a.header.tensors, b.header.tensors, "{what}: tensor infos");
    for t in &a.header.tensors {
        assert!(a.data(t) == b.data(t), "{what}: tensor {} differs", t.name);
    }
}

#[test]
fn all_layouts_give_identical_files_at_every_outtype() {
    let dir = TempDir::new("layouts");
    for outtype in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0] {
        let files: Vec<(GgufFile, GgufFile)> = LAYOUTS
            .iter()
            .map(|l| run(&tiny(l), &dir.join(&format!("{l}-{outtype}.gguf")), outtype, GgmlType::F16))
            .collect();
        for (l, f) in LAYOUTS.iter().zip(&files).skip(1) {
            assert_same_files(&files[0].0, &f.0, &format!("{outtype} text, hf vs {l}"));
            assert_same_files(&files[0].1, &f.1, &format!("{outtype} mmproj, hf vs {l}"));
        }
    }
}

/// GGUF name → Mistral-native name, restated here independently of the converter's mapping.
fn mistral_name(gguf: &str) -> (String, Option<usize>) {
    let fixed: &[(&str, &str)] = &[
        ("token_embd.weight", "tok_embeddings.weight"),
        ("output_norm.weight", "norm.weight"),
        ("output.weight", "output.weight"),
        ("v.patch_embd.weight", "vision_encoder.patch_conv.weight"),
        ("v.pre_ln.weight", "vision_encoder.ln_pre.weight"),
        ("mm.1.weight", "vision_language_adapter.w_in.weight"),
        ("mm.1.bias", "vision_language_adapter.w_in.bias"),
        ("mm.2.weight", "vision_language_adapter.w_out.weight"),
        ("mm.2.bias", "vision_language_adapter.w_out.bias"),
    ];
    if let Some((_, m)) = fixed.iter().find(|(g, _)| *g == gguf) {
        return (m.to_string(), None);
    }
    if gguf == "v.token_embd.img_break" {
        return ("tok_embeddings.weight".into(), Some(12));
    }
    let text: &[(&str, &str)] = &[
        ("attn_norm", "attention_norm"),
        ("attn_q", "attention.wq"),
        ("attn_k", "attention.wk"),
        ("attn_v", "attention.wv"),
        ("attn_output", "attention.wo"),
        ("ffn_norm", "ffn_norm"),
        ("ffn_gate", "feed_forward.w1"),
        ("ffn_up", "feed_forward.w3"),
        ("ffn_down", "feed_forward.w2"),
    ];
    let vision: &[(&str, &str)] = &[
        ("ln1", "attention_norm"),
        ("attn_q", "attention.wq"),
        ("attn_k", "attention.wk"),
        ("attn_v", "attention.wv"),
        ("attn_out", "attention.wo"),
        ("ln2", "ffn_norm"),
        ("ffn_gate", "feed_forward.w1"),
        ("ffn_up", "feed_forward.w3"),
        ("ffn_down", "feed_forward.w2"),
    ];
    let parts: Vec<&str> = gguf.split('.').collect();
    if parts[0] == "blk" {
        let m = text.iter().find(|(g, _)| *g == parts[2]).unwrap().1;
        (format!("layers.{}.{m}.weight", parts[1]), None)
    } else {
        let m = vision.iter().find(|(g, _)| *g == parts[3]).unwrap().1;
        (format!("vision_encoder.transformer.layers.{}.{m}.weight", parts[2]), None)
    }
}

fn load_safetensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            assert_eq!(v.dtype(), safetensors::Dtype::BF16);
            let vals = v
                .data()
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect();
            (name, (v.shape().to_vec(), vals))
        })
        .collect()
}

#[test]
fn f32_output_equals_the_mistral_checkpoint_exactly() {
    let dir = TempDir::new("exact");
    let (text, vision) = run(&tiny("mistral"), &dir.join("m.gguf"), GgmlType::F32, GgmlType::F32);
    let src = load_safetensors(&tiny("mistral").join("consolidated.safetensors"));
    let mut used = std::collections::BTreeSet::new();
    for f in [&text, &vision] {
        for t in &f.header.tensors {
            assert_eq!(t.ty, GgmlType::F32, "{}", t.name);
            let (m, row) = mistral_name(&t.name);
            let (shape, vals) = &src[&m];
            used.insert(m.clone());
            let want: &[f32] = match row {
                Some(r) => &vals[r * shape[1]..(r + 1) * shape[1]],
                None => {
                    let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
                    assert_eq!(t.ne, ne, "{}: ne is the reversed torch shape", t.name);
                    vals
                }
            };
            assert_eq!(dequant(f, &t.name), want, "{}", t.name);
        }
    }
    assert_eq!(used.len(), src.len(), "every source tensor lands in a file");
}

#[test]
fn hf_q_and_k_are_unpermuted_to_the_interleaved_layout() {
    let e = expect();
    let dir = TempDir::new("unpermute");
    let (text, vision) = run(&tiny("hf"), &dir.join("h.gguf"), GgmlType::F32, GgmlType::F32);
    let row = |f: &GgufFile, name: &str, r: usize| {
        let v = dequant(f, name);
        let n = f.header.tensor(name).unwrap().ne[0] as usize;
        v[r * n..(r + 1) * n].to_vec()
    };
    let want = |k: &str| -> Vec<f32> { e[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect() };
    assert_eq!(row(&text, "blk.0.attn_q.weight", 1), want("blk0_attn_q_row1"));
    assert_eq!(row(&text, "blk.0.attn_k.weight", 1), want("blk0_attn_k_row1"));
    assert_eq!(row(&vision, "v.blk.1.attn_k.weight", 3), want("v_blk1_attn_k_row3"));
    assert_eq!(dequant(&vision, "v.token_embd.img_break"), want("img_break_row"));
}

#[test]
fn quantized_tensors_are_within_their_format_bound_and_follow_the_type_policy() {
    let dir = TempDir::new("bounds");
    let (ref_text, ref_vision) = run(&tiny("mistral"), &dir.join("ref.gguf"), GgmlType::F32, GgmlType::F32);
    for (outtype, vtype) in [
        (GgmlType::F16, GgmlType::F16),
        (GgmlType::BF16, GgmlType::F32),
        (GgmlType::Q8_0, GgmlType::Q8_0),
        (GgmlType::Q4_0, GgmlType::F16),
    ] {
        let (text, vision) = run(&tiny("hf"), &dir.join(&format!("{outtype}-{vtype}.gguf")), outtype, vtype);
        for (f, r) in [(&text, &ref_text), (&vision, &ref_vision)] {
            for t in &f.header.tensors {
                let want_ty = if t.ne.len() == 1 {
                    GgmlType::F32
                } else if t.name == "output.weight" && outtype == GgmlType::Q4_0 {
                    GgmlType::Q8_0
                } else if t.name == "v.patch_embd.weight" && vtype == GgmlType::Q8_0 {
                    GgmlType::F16 // rows of 16 are not whole Q8_0 blocks
                } else if t.name.starts_with("v.") || t.name.starts_with("mm.") {
                    vtype
                } else {
                    outtype
                };
                assert_eq!(t.ty, want_ty, "{outtype}/{vtype}: type of {}", t.name);
                let x = dequant(r, &t.name);
                let y = dequant(f, &t.name);
                for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
                    let bound = roundtrip_bound(t.ty, xb);
                    let worst = xb.iter().zip(yb).map(|(a, c)| (a - c).abs()).fold(0f32, f32::max);
                    assert!(worst <= bound, "{outtype}: {} block {b}: error {worst} > bound {bound}", t.name);
                }
            }
        }
    }
}

#[test]
fn files_hold_exactly_the_manifest_and_the_config() {
    let e = expect();
    let dir = TempDir::new("manifest");
    let (text, vision) = run(&tiny("hf"), &dir.join("h.gguf"), GgmlType::Q8_0, GgmlType::F16);
    // 1 embedding + 9 per layer × 2 + norm + head; 2 + 9 × 2 + 4 adapter + the [IMG_BREAK] row
    assert_eq!(text.header.tensors.len(), 21);
    assert_eq!(vision.header.tensors.len(), 25);
    let ck = pixtral::convert::checkpoint::Checkpoint::detect(&tiny("hf")).unwrap();
    let want_text = pixtral::gguf::manifest::text_tensors(&ck.text);
    let want_vision = pixtral::gguf::manifest::vision_tensors(ck.vision.as_ref().unwrap(), ck.text.dim);
    for (f, want) in [(&text, want_text), (&vision, want_vision)] {
        let got: Vec<(String, Vec<u64>)> = f.header.tensors.iter().map(|t| (t.name.clone(), t.ne.clone())).collect();
        let want: Vec<(String, Vec<u64>)> = want.iter().map(|e| (e.name.clone(), e.ne())).collect();
        assert_eq!(got, want);
    }
    let h = &text.header;
    let t = &e["text"];
    let u = |k: &str| t[k].as_u64().unwrap() as u32;
    assert_eq!(h.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(h.get_u32("llama.block_count").unwrap(), u("num_hidden_layers"));
    assert_eq!(h.get_u32("llama.embedding_length").unwrap(), u("hidden_size"));
    assert_eq!(h.get_u32("llama.feed_forward_length").unwrap(), u("intermediate_size"));
    assert_eq!(h.get_u32("llama.attention.head_count").unwrap(), u("num_attention_heads"));
    assert_eq!(h.get_u32("llama.attention.head_count_kv").unwrap(), u("num_key_value_heads"));
    assert_eq!(h.get_u32("llama.attention.key_length").unwrap(), u("head_dim"));
    assert_eq!(h.get_u32("llama.attention.value_length").unwrap(), u("head_dim"));
    assert_eq!(h.get_u32("llama.rope.dimension_count").unwrap(), u("head_dim"));
    assert_eq!(h.get_u32("llama.vocab_size").unwrap(), 2048);
    assert_eq!(h.get_u32("llama.context_length").unwrap(), u("max_position_embeddings"));
    assert_eq!(h.get_f32("llama.rope.freq_base").unwrap(), t["rope_theta"].as_f64().unwrap() as f32);
    assert_eq!(h.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(), 1e-5);
    assert_eq!(h.get_u32("general.file_type").unwrap(), 7);
    // tokenizer, against the HF tokenizer.json read here
    let tj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny("hf").join("tokenizer.json")).unwrap()).unwrap();
    let tokens = h.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 2048);
    for (s, id) in tj["model"]["vocab"].as_object().unwrap() {
        assert_eq!(tokens[id.as_u64().unwrap() as usize], s);
    }
    assert_eq!(
        (tokens[1], tokens[10], tokens[12], tokens[13], tokens[999]),
        ("<s>", "[IMG]", "[IMG_BREAK]", "[IMG_END]", "<SPECIAL_999>")
    );
    let merges = h.get_str_array("tokenizer.ggml.merges").unwrap();
    let want_merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect();
    assert_eq!(merges, want_merges);
    match h.get("tokenizer.ggml.token_type").unwrap() {
        Value::Array(_, types) => {
            assert!(types[..1000].iter().all(|t| *t == Value::I32(3)), "reserved ids are CONTROL");
            assert!(types[1000..].iter().all(|t| *t == Value::I32(1)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(h.get_str("tokenizer.ggml.pre").unwrap(), "tekken");
    assert_eq!(h.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(h.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);
    assert_eq!(h.get_u32("tokenizer.ggml.unknown_token_id").unwrap(), 0);
    assert!(h.get_str("tokenizer.chat_template").unwrap().contains("[INST]"));
    let v = &vision.header;
    let ev = &e["vision"];
    assert_eq!(v.get_str("general.architecture").unwrap(), "clip");
    assert_eq!(v.get_str("clip.projector_type").unwrap(), "pixtral");
    assert!(v.get_bool("clip.use_silu").unwrap());
    assert_eq!(v.get_u32("clip.vision.block_count").unwrap(), ev["num_hidden_layers"].as_u64().unwrap() as u32);
    assert_eq!(v.get_u32("clip.vision.embedding_length").unwrap(), 64);
    assert_eq!(v.get_u32("clip.vision.feed_forward_length").unwrap(), 96);
    assert_eq!(v.get_u32("clip.vision.attention.head_count").unwrap(), 2);
    assert_eq!(v.get_u32("clip.vision.projection_dim").unwrap(), 64);
    assert_eq!(v.get_u32("clip.vision.image_size").unwrap(), 256);
    assert_eq!(v.get_u32("clip.vision.patch_size").unwrap(), 16);
    assert_eq!(v.get_f32("clip.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(v.get_f32_array("clip.vision.image_mean").unwrap(), pixtral::gguf::config::IMAGE_MEAN.to_vec());
    assert_eq!(v.get_f32_array("clip.vision.image_std").unwrap(), pixtral::gguf::config::IMAGE_STD.to_vec());
    assert_eq!(
        (
            v.get_u32("pixtral.image_token_id").unwrap(),
            v.get_u32("pixtral.image_break_token_id").unwrap(),
            v.get_u32("pixtral.image_end_token_id").unwrap()
        ),
        (10, 12, 13)
    );
}

#[test]
fn tekken_digit_pattern_replaces_the_old_transformers_regex() {
    let dir = TempDir::new("digits");
    let src = dir.join("src");
    copy_dir(&tiny("hf"), &src);
    let p = src.join("tokenizer.json");
    let text = std::fs::read_to_string(&p).unwrap();
    let old = text.replace(r"|\\p{N}|", r"|\\p{N}{1,3}|");
    assert_ne!(text, old, "fixture carries the single-digit pattern");
    std::fs::write(&p, old).unwrap();
    let (f, _) = run(&src, &dir.join("o.gguf"), GgmlType::Q8_0, GgmlType::F16);
    assert_eq!(f.header.get_str("pixtral.tokenizer.pattern").unwrap(), pixtral::gguf::vocab::TEKKEN_PATTERN);
}

#[test]
fn reconversion_is_byte_identical() {
    let dir = TempDir::new("determinism");
    for out in ["a.gguf", "b.gguf"] {
        run(&tiny("hf-sharded"), &dir.join(out), GgmlType::Q4_0, GgmlType::Q8_0);
    }
    assert!(std::fs::read(dir.join("a.gguf")).unwrap() == std::fs::read(dir.join("b.gguf")).unwrap());
    assert!(std::fs::read(dir.join("a.mmproj.gguf")).unwrap() == std::fs::read(dir.join("b.mmproj.gguf")).unwrap());
}

#[test]
fn full_tekken_vocabulary_and_merges_match_transformers() {
    let fx = fixtures().join("tekken-full");
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.join("expect.json")).unwrap()).unwrap();
    let dir = TempDir::new("tekken-full");
    let path = common::write_full_tekken(&dir);
    let v = pixtral::convert::tokenizer::from_tekken(&path, 131072).unwrap();
    assert_eq!(v.tokens.len(), e["n_tokens"].as_u64().unwrap() as usize);
    assert_eq!(v.tokens[1000], e["token_1000"].as_str().unwrap());
    assert_eq!(v.tokens[131071], e["token_131071"].as_str().unwrap());
    assert_eq!(v.merges.len(), e["n_merges"].as_u64().unwrap() as usize);
    assert_eq!(v.merges.last().unwrap(), e["last_merge"].as_str().unwrap());
    assert_eq!(format!("{:016x}", fnv1a64(v.tokens.join("\n").as_bytes())), e["tokens_fnv"].as_str().unwrap());
    assert_eq!(format!("{:016x}", fnv1a64(v.merges.join("\n").as_bytes())), e["merges_fnv"].as_str().unwrap());
    assert_eq!(v.pattern, pixtral::gguf::vocab::TEKKEN_PATTERN);
    assert_eq!((v.bos, v.eos, v.unk), (1, 2, 0));
}

// ---- bad inputs: the promised error, and nothing at OUT ----

/// Rewrite a safetensors file through `f(name, dtype, shape, bytes)`; `None` drops the tensor.
fn rewrite(
    path: &Path,
    f: impl Fn(&str, safetensors::Dtype, Vec<usize>, Vec<u8>) -> Option<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = vec![];
    for (name, v) in st.tensors() {
        if let Some(t) = f(&name, v.dtype(), v.shape().to_vec(), v.data().to_vec()) {
            owned.push(t);
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, out).unwrap();
}

/// Convert a broken copy of `layout` and return the error text; assert nothing was left behind.
fn broken(layout: &str, break_it: impl Fn(&Path)) -> (ConvertError, String) {
    let dir = TempDir::new("bad");
    let src = dir.join("src");
    copy_dir(&tiny(layout), &src);
    break_it(&src);
    let out = dir.join("out.gguf");
    let e = convert(&opts(&src, &out, GgmlType::Q4_0, GgmlType::F16))
        .expect_err("conversion of a broken checkpoint failed");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "src")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} after {e}");
    let msg = e.to_string();
    (e, msg)
}

const CONSOLIDATED: &str = "consolidated.safetensors";

#[test]
fn missing_tensor_is_named() {
    let (e, msg) = broken("mistral", |s| {
        rewrite(&s.join(CONSOLIDATED), |n, d, sh, b| {
            (n != "layers.1.feed_forward.w2.weight").then(|| (n.into(), d, sh, b))
        })
    });
    assert!(matches!(e, ConvertError::MissingTensor { .. }), "{e:?}");
    assert!(msg.contains("layers.1.feed_forward.w2.weight") && msg.contains("[64, 96]"), "{msg}");
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let (e, msg) = broken("mistral", |s| {
        rewrite(&s.join(CONSOLIDATED), |n, d, sh, b| {
            if n == "layers.0.attention.wk.weight" {
                Some((n.into(), d, vec![32, 128], b))
            } else {
                Some((n.into(), d, sh, b))
            }
        })
    });
    assert!(matches!(e, ConvertError::ShapeMismatch { .. }), "{e:?}");
    assert!(
        msg.contains("layers.0.attention.wk.weight") && msg.contains("[32, 128]") && msg.contains("[64, 64]"),
        "{msg}"
    );
}

#[test]
fn nan_is_named_and_leaves_no_partial_file() {
    // output.weight is the last text tensor: the partial file exists when the NaN is met
    let (e, msg) = broken("mistral", |s| {
        rewrite(&s.join(CONSOLIDATED), |n, d, sh, mut b| {
            if n == "output.weight" {
                b[200] = 0xC0; // bf16 0x7FC0 = NaN at element 100
                b[201] = 0x7F;
            }
            Some((n.into(), d, sh, b))
        })
    });
    assert!(matches!(e, ConvertError::NonFinite { index: 100, .. }), "{e:?}");
    assert!(msg.contains("output.weight"), "{msg}");
}

#[test]
fn unexpected_tensor_is_refused() {
    let (_, msg) = broken("mistral", |s| {
        let mut t = load_raw(&s.join(CONSOLIDATED));
        t.push(("layers.9.extra.weight".into(), safetensors::Dtype::BF16, vec![4], vec![0; 8]));
        write_raw(&s.join(CONSOLIDATED), t);
    });
    assert!(msg.contains("layers.9.extra.weight") && msg.contains("manifest"), "{msg}");
}

fn load_raw(p: &Path) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect()
}

fn write_raw(p: &Path, t: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(p, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn disallowed_dtype_is_named() {
    let (_, msg) = broken("mistral", |s| {
        let mut t = load_raw(&s.join(CONSOLIDATED));
        for x in t.iter_mut().filter(|x| x.0 == "norm.weight") {
            x.1 = safetensors::Dtype::I16;
        }
        write_raw(&s.join(CONSOLIDATED), t);
    });
    assert!(msg.contains("norm.weight") && msg.contains("I16"), "{msg}");
}

#[test]
fn truncated_safetensors_is_refused() {
    let (e, msg) = broken("mistral", |s| {
        let p = s.join(CONSOLIDATED);
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    });
    assert!(matches!(e, ConvertError::Input { .. }), "{e:?}");
    assert!(msg.contains(CONSOLIDATED) && msg.contains("truncated (an interrupted download?)"), "{msg}");
    // cut inside the header
    let (_, msg) = broken("mistral", |s| {
        let p = s.join(CONSOLIDATED);
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..40]).unwrap();
    });
    assert!(msg.contains("ends inside its header (40 bytes)"), "{msg}");
}

#[test]
fn overlapping_offsets_are_refused() {
    let (_, msg) = broken("mistral", |s| {
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[0u8; 12]);
        std::fs::write(s.join(CONSOLIDATED), b).unwrap();
    });
    assert!(msg.contains(CONSOLIDATED) && msg.contains("not a valid safetensors file"), "{msg}");
}

#[test]
fn shard_names_must_be_plain_file_names() {
    for bad in ["../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors", ""] {
        let (_, msg) = broken("hf-sharded", |s| {
            let p = s.join("model.safetensors.index.json");
            let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            j["weight_map"]["lm_head.weight"] = serde_json::Value::String(bad.into());
            std::fs::write(&p, j.to_string()).unwrap();
        });
        assert!(msg.contains("not a plain file name") && msg.contains("index.json"), "{bad}: {msg}");
    }
}

#[test]
fn a_tensor_in_two_shards_is_refused() {
    let (_, msg) = broken("hf-sharded", |s| {
        let a = s.join("model-00001-of-00002.safetensors");
        let b = s.join("model-00002-of-00002.safetensors");
        let mut tb = load_raw(&b);
        let dup = load_raw(&a).into_iter().next().unwrap();
        let name = dup.0.clone();
        tb.push(dup);
        write_raw(&b, tb);
        assert!(!name.is_empty());
    });
    assert!(msg.contains("exactly one shard"), "{msg}");
}

#[test]
fn index_and_shard_contents_must_agree() {
    let (_, msg) = broken("hf-sharded", |s| {
        let p = s.join("model.safetensors.index.json");
        let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        j["weight_map"]["model.language_model.norm.weight"] =
            serde_json::Value::String("model-00001-of-00002.safetensors".into());
        j["weight_map"]["model.language_model.layers.0.mlp.up_proj.weight"] =
            serde_json::Value::String("model-00002-of-00002.safetensors".into());
        std::fs::write(&p, j.to_string()).unwrap();
    });
    assert!(msg.contains("index says shard") || msg.contains("not found in shard"), "{msg}");
}

#[test]
fn pickle_checkpoints_are_refused() {
    let (_, msg) = broken("hf", |s| {
        std::fs::remove_file(s.join("model.safetensors")).unwrap();
        std::fs::write(s.join("pytorch_model.bin"), b"not really a pickle").unwrap();
    });
    assert!(msg.contains("pickle") && msg.contains("pytorch_model.bin"), "{msg}");
}

#[test]
fn bad_config_fields_are_named() {
    let (_, msg) = broken("mistral", |s| {
        let p = s.join("params.json");
        let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        j["n_kv_heads"] = serde_json::json!(3);
        std::fs::write(&p, j.to_string()).unwrap();
    });
    assert!(msg.contains("params.json") && msg.contains("kv heads"), "{msg}");
    let (_, msg) = broken("mistral", |s| {
        let p = s.join("params.json");
        let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        j["vision_encoder"]["patch_size"] = serde_json::json!(-16);
        std::fs::write(&p, j.to_string()).unwrap();
    });
    assert!(msg.contains("vision_encoder.patch_size"), "{msg}");
    let (_, msg) = broken("hf", |s| std::fs::write(s.join("config.json"), "{ not json").unwrap());
    assert!(msg.contains("config.json") && msg.contains("invalid JSON"), "{msg}");
}

#[test]
fn existing_output_needs_force() {
    let dir = TempDir::new("force");
    let out = dir.join("o.gguf");
    std::fs::write(mmproj_path(&out), b"keep me").unwrap();
    let e = convert(&opts(&tiny("mistral"), &out, GgmlType::Q8_0, GgmlType::F16)).err().unwrap();
    assert!(matches!(e, ConvertError::Exists { .. }) && e.to_string().contains("--force"), "{e}");
    assert_eq!(std::fs::read(mmproj_path(&out)).unwrap(), b"keep me");
    assert!(!out.exists());
    let mut o = opts(&tiny("mistral"), &out, GgmlType::Q8_0, GgmlType::F16);
    o.force = true;
    convert(&o).unwrap();
    assert!(GgufFile::open(mmproj_path(&out)).is_ok());
}

/// `consolidated.safetensors` replaced by a header-length prefix, a header and `data` bytes.
fn raw_safetensors(s: &Path, header_len: u64, header: &str, data: usize) {
    let mut b = header_len.to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(0u8, data));
    std::fs::write(s.join(CONSOLIDATED), b).unwrap();
}

#[test]
fn hostile_safetensors_headers_are_refused_naming_the_file() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    type Break = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Break)> = vec![
        // a header length of 2^60: must not allocate it
        ("oversized header length", Box::new(move |s| raw_safetensors(s, 1 << 60, h, 8))),
        ("header longer than the file", Box::new(move |s| raw_safetensors(s, h.len() as u64 + 100, h, 8))),
        (
            "offsets past the end",
            Box::new(|s| {
                let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8000]}}"#;
                raw_safetensors(s, h.len() as u64, h, 8)
            }),
        ),
        (
            "size != shape x dtype",
            Box::new(|s| {
                let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
                raw_safetensors(s, h.len() as u64, h, 8)
            }),
        ),
        ("header not JSON", Box::new(|s| raw_safetensors(s, 5, "{nope", 0))),
        ("empty file", Box::new(|s| std::fs::write(s.join(CONSOLIDATED), b"").unwrap())),
    ];
    for (what, f) in cases {
        let (_, msg) = broken("mistral", f);
        assert!(msg.contains(CONSOLIDATED), "{what}: {msg}");
    }
}

#[test]
fn a_missing_shard_is_named() {
    let (_, msg) = broken("hf-sharded", |s| std::fs::remove_file(s.join("model-00002-of-00002.safetensors")).unwrap());
    assert!(msg.contains("model-00002-of-00002.safetensors"), "{msg}");
}

// ---- quirks of the published checkpoints' files ----

fn edit_json(p: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    f(&mut j);
    std::fs::write(p, serde_json::to_string_pretty(&j).unwrap()).unwrap();
}

/// One string of `tests/fixtures/tekken-full/llama3_regex.json` (scripts/gen_tokenizer_quirks.py).
struct Case {
    text: String,
    /// mistral-common, full vocabulary
    ids: Vec<u32>,
    /// HF tokenizers with the llama3 pattern, full vocabulary
    llama3: Vec<u32>,
    /// mistral-common, the tiny fixture's vocabulary
    tiny_ids: Vec<u32>,
}

fn llama3_cases() -> Vec<Case> {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tekken-full/llama3_regex.json")).unwrap())
            .unwrap();
    assert_eq!(j["llama3_pattern"], pixtral::convert::tokenizer::LLAMA3_PATTERN);
    assert_eq!(j["tekken_pattern"], pixtral::gguf::vocab::TEKKEN_PATTERN);
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    j["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_owned(),
            ids: ids(&c["ids"]),
            llama3: ids(&c["llama3"]),
            tiny_ids: ids(&c["tiny_ids"]),
        })
        .collect()
}

/// The published `mistral-community/pixtral-12b` `tokenizer.json` splits with the llama3 pattern: the tiny HF
/// checkpoint with that pattern converts to Tekken's, says so, and tokenizes as mistral-common and as the
/// Mistral-layout conversion do.
#[test]
fn llama3_split_pattern_of_an_hf_tokenizer_is_replaced_by_tekkens() {
    use pixtral::model::tokenizer::Tokenizer;
    let dir = TempDir::new("llama3-regex");
    let src = dir.join("hf-llama3-regex");
    copy_dir(&tiny("hf"), &src);
    edit_json(&src.join("tokenizer.json"), |j| {
        j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pixtral::convert::tokenizer::LLAMA3_PATTERN.into()
    });
    let s = convert(&opts(&src, &dir.join("h.gguf"), GgmlType::Q8_0, GgmlType::F16)).unwrap();
    assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
    assert!(s.notes[0].contains("tokenizer.json") && s.notes[0].contains("llama3"), "{}", s.notes[0]);
    let (m, _) = run(&tiny("mistral"), &dir.join("m.gguf"), GgmlType::Q8_0, GgmlType::F16);
    let h = GgufFile::open(dir.join("h.gguf")).unwrap();
    assert_eq!(h.header.get_str("pixtral.tokenizer.pattern").unwrap(), pixtral::gguf::vocab::TEKKEN_PATTERN);
    assert_same_files(&h, &m, "HF with the llama3 pattern vs Mistral");
    let (th, tm) = (Tokenizer::from_gguf(&h.header).unwrap(), Tokenizer::from_gguf(&m.header).unwrap());
    for Case { text, tiny_ids, .. } in llama3_cases() {
        assert_eq!(th.encode(&text), tiny_ids, "{text:?} vs mistral-common");
        assert_eq!(th.encode(&text), tm.encode(&text), "{text:?} vs the Mistral-layout conversion");
    }
    // a tokenizer.json that already carries Tekken's pattern converts without a note
    let s = convert(&opts(&tiny("hf"), &dir.join("plain.gguf"), GgmlType::Q8_0, GgmlType::F16)).unwrap();
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

/// The tiny vocabulary has no token across the pieces the two patterns disagree on, so the ids are checked on
/// the full 131072-token Tekken vocabulary, spelled as an HF `tokenizer.json` with the llama3 pattern.
#[test]
fn full_vocabulary_tokenizer_json_with_the_llama3_pattern_gives_mistral_common_ids() {
    use pixtral::convert::tokenizer::{from_hf_noted, from_tekken, LLAMA3_PATTERN};
    use pixtral::gguf::vocab::{token_type, TEKKEN_PATTERN};
    use pixtral::model::tokenizer::Tokenizer;
    let dir = TempDir::new("llama3-full");
    let v = from_tekken(&common::write_full_tekken(&dir), 131072).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = (0..v.tokens.len())
        .filter(|&i| v.types[i] != token_type::CONTROL)
        .map(|i| (v.tokens[i].clone(), serde_json::json!(i)))
        .collect();
    let added: Vec<serde_json::Value> = (0..v.tokens.len())
        .filter(|&i| v.types[i] == token_type::CONTROL)
        .map(|i| serde_json::json!({"id": i, "content": v.tokens[i], "special": true}))
        .collect();
    let tj = serde_json::json!({
        "added_tokens": added,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "model": {"type": "BPE", "vocab": vocab, "merges": v.merges},
    });
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    let (hf, note) = from_hf_noted(dir.path(), 131072).unwrap();
    assert!(note.is_some_and(|n| n.contains("llama3")));
    assert_eq!(hf.pattern, TEKKEN_PATTERN);
    let fixed = Tokenizer::from_vocab(&hf).unwrap();
    // negative control: the file's own pattern gives HF tokenizers' ids, and they differ where expected
    let as_written =
        Tokenizer::from_vocab(&pixtral::gguf::vocab::Vocab { pattern: LLAMA3_PATTERN.into(), ..hf }).unwrap();
    let mut differ = vec![];
    for Case { text, ids: want, llama3, .. } in llama3_cases() {
        assert_eq!(fixed.encode(&text), want, "{text:?} vs mistral-common");
        assert_eq!(as_written.encode(&text), llama3, "{text:?}: the llama3 pattern vs HF tokenizers");
        if want != llama3 {
            differ.push(text);
        }
    }
    for t in ["नमस्ते", "ภาษาไทย", ".\n//!"] {
        assert!(differ.iter().any(|d| d.starts_with(t)), "{t:?} should tokenize differently under llama3: {differ:?}");
    }
}

fn set_vision_act(src: &Path, act: &str) {
    edit_json(&src.join("config.json"), |j| j["vision_config"]["hidden_act"] = act.into());
}

/// HF configs made before October 2024 say vision `hidden_act: "gelu"`; Pixtral's vision FFN is SiLU.
#[test]
fn explicit_gelu_vision_act_is_refused_naming_file_field_and_override() {
    let (e, msg) = broken("hf", |s| set_vision_act(s, "gelu"));
    assert!(matches!(e, ConvertError::Field { .. }), "{e:?}");
    for want in ["config.json", "vision_config.hidden_act", "SiLU", "--vision-act silu", "--vision-act gelu"] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
}

#[test]
fn vision_act_override_wins_over_the_config() {
    use pixtral::gguf::config::VisionAct;
    let dir = TempDir::new("vision-act");
    let src = dir.join("src");
    copy_dir(&tiny("hf"), &src);
    set_vision_act(&src, "gelu");
    for (act, silu) in [(VisionAct::Silu, true), (VisionAct::Gelu, false)] {
        let out = dir.join(&format!("{}.gguf", act.as_str()));
        let o = Options { vision_act: Some(act), ..opts(&src, &out, GgmlType::Q8_0, GgmlType::F16) };
        let s = convert(&o).unwrap();
        let v = GgufFile::open(mmproj_path(&out)).unwrap();
        assert_eq!(v.header.get("clip.use_silu"), Some(&Value::Bool(silu)), "{act:?}");
        assert_eq!(v.header.get("clip.use_gelu"), Some(&Value::Bool(!silu)), "{act:?}");
        // overriding what the file says is said; agreeing with it is not
        assert_eq!(s.notes.iter().any(|n| n.contains("hidden_act")), silu, "{:?}", s.notes);
    }
    // with SiLU the gelu-config copy is the model itself: same files as the Mistral layout
    let (m, mv) = run(&tiny("mistral"), &dir.join("m.gguf"), GgmlType::Q8_0, GgmlType::F16);
    assert_same_files(&GgufFile::open(dir.join("silu.gguf")).unwrap(), &m, "text");
    assert_same_files(&GgufFile::open(dir.join("silu.mmproj.gguf")).unwrap(), &mv, "mmproj");
    // the Mistral layout has no field; the override applies there too
    let o = Options {
        vision_act: Some(VisionAct::Gelu),
        ..opts(&tiny("mistral"), &dir.join("mg.gguf"), GgmlType::Q8_0, GgmlType::F16)
    };
    convert(&o).unwrap();
    let v = GgufFile::open(dir.join("mg.mmproj.gguf")).unwrap();
    assert_eq!(v.header.get("clip.use_gelu"), Some(&Value::Bool(true)));
}

/// Both files carry one fingerprint of the checkpoint: equal across layouts, dtypes and outtypes of one model,
/// different for another checkpoint (here: one embedding value changed).
#[test]
fn checkpoint_fingerprint_is_per_checkpoint_not_per_layout_or_type() {
    let dir = TempDir::new("fingerprint");
    let fp = |f: &GgufFile| f.header.get_str("pixtral.checkpoint.fingerprint").unwrap().to_owned();
    let mut seen = vec![];
    for (i, (layout, t)) in
        [("hf", GgmlType::Q8_0), ("hf-sharded", GgmlType::Q4_0), ("mistral", GgmlType::F32)].into_iter().enumerate()
    {
        let (text, vision) = run(&tiny(layout), &dir.join(&format!("{i}.gguf")), t, GgmlType::F16);
        assert_eq!(fp(&text), fp(&vision), "{layout}");
        assert_eq!(fp(&text).len(), 16);
        seen.push(fp(&text));
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    let src = dir.join("other");
    copy_dir(&tiny("mistral"), &src);
    rewrite(&src.join("consolidated.safetensors"), |name, d, s, mut b| {
        if name == "tok_embeddings.weight" {
            b[1] ^= 0x01; // element 0 (bf16, little-endian): its lowest exponent bit, the value doubles or halves
        }
        Some((name.to_owned(), d, s, b))
    });
    let (text, vision) = run(&src, &dir.join("other.gguf"), GgmlType::Q8_0, GgmlType::F16);
    assert_eq!(fp(&text), fp(&vision));
    assert_ne!(fp(&text), seen[0]);
}

/// `general.name` from the checkpoint, never an HF cache snapshot's commit hash.
#[test]
fn general_name_comes_from_the_checkpoint_not_a_hash_folder() {
    use pixtral::convert::checkpoint::checkpoint_name;
    let hash = "8b0f6c1e2a3d4f5b6c7d8e9f0a1b2c3d4e5f6a7b";
    let dir = TempDir::new("name");
    // an HF hub cache: models--ORG--NAME/snapshots/<commit>
    let snap = dir.path().join("models--mistral-community--pixtral-12b").join("snapshots").join(hash);
    copy_dir(&tiny("hf"), &snap);
    let out = dir.join("a.gguf");
    let (t, v) = run(&snap, &out, GgmlType::Q8_0, GgmlType::F16);
    assert_eq!(t.header.get_str("general.name").unwrap(), "pixtral-12b");
    assert_eq!(v.header.get_str("general.name").unwrap(), "pixtral-12b");
    // a bare hash folder: the config's _name_or_path, else a generic name, never the hash
    let bare = dir.path().join(hash);
    copy_dir(&tiny("hf"), &bare);
    edit_json(&bare.join("config.json"), |j| j["_name_or_path"] = "mistral-community/pixtral-12b".into());
    let (t, _) = run(&bare, &dir.join("b.gguf"), GgmlType::Q8_0, GgmlType::F16);
    assert_eq!(t.header.get_str("general.name").unwrap(), "pixtral-12b");
    let mi = dir.path().join("m").join(hash);
    copy_dir(&tiny("mistral"), &mi);
    let (t, _) = run(&mi, &dir.join("c.gguf"), GgmlType::Q8_0, GgmlType::F16);
    assert_eq!(t.header.get_str("general.name").unwrap(), "Pixtral");
    // the rules on their own
    assert_eq!(checkpoint_name(&bare, Some("/home/me/ckpts/my-pixtral/")), "my-pixtral");
    assert_eq!(checkpoint_name(&bare, Some(&format!("/cache/snapshots/{hash}"))), "Pixtral");
    assert_eq!(checkpoint_name(&tiny("mistral"), None), "mistral");
}

/// `--outtype <mix>`: the text tensors `pixtral quantize` writes from the F32 conversion (same types and bytes;
/// those are llama.cpp's, `tests/llama_cpp_quants.rs`), and the mix's `general.file_type`.
#[test]
fn outtype_mix_stores_the_tensors_quantize_writes() {
    use pixtral::convert::quantize::{quantize, Mix};
    let dir = TempDir::new("mix");
    let (f32_file, _) = run(&tiny("hf"), &dir.join("f32.gguf"), GgmlType::F32, GgmlType::F16);
    drop(f32_file);
    for name in ["Q4_K_M", "Q2_K", "Q6_K", "Q5_1"] {
        let mix = Mix::from_name(name).unwrap();
        let out = dir.join(&format!("{name}.gguf"));
        convert(&Options { mix: Some(mix), ..opts(&tiny("hf"), &out, mix.base, GgmlType::F16) }).unwrap();
        let q = dir.join(&format!("{name}-q.gguf"));
        let o = pixtral::convert::quantize::Options {
            input: dir.join("f32.gguf"),
            output: q.clone(),
            mix,
            allow_requantize: false,
            force: false,
        };
        quantize(&o).unwrap();
        let (a, b) = (GgufFile::open(&out).unwrap(), GgufFile::open(&q).unwrap());
        assert_eq!(a.header.get("general.file_type"), Some(&Value::U32(mix.ftype)), "{name}");
        for t in &b.header.tensors {
            let u = a.header.tensor(&t.name).unwrap();
            assert_eq!(u.ty, t.ty, "{name} {}", t.name);
            assert!(a.data(u) == b.data(t), "{name} {}: bytes differ", t.name);
        }
    }
}
