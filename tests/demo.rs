//! The committed demo model (examples/demo/, trained by scripts/train_demo.py) on the 100 held-out questions of
//! tests/fixtures/demo/eval.json (images drawn with another seed than any training image): the Rust runtime, with
//! the committed Q8_0 text + F16 mmproj files and default settings, answers at least 95 exactly right, and its
//! greedy answers equal the PyTorch model's (F32) on all 100.

mod common;

use std::path::PathBuf;

use pixtral::chat::{encode_chat, Chunk, Message};
use pixtral::model::vision::VisionModel;
use pixtral::{Model, Sampler, SamplerParams, Session, SessionOptions};

#[test]
fn the_demo_model_answers_held_out_questions_like_pytorch() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(root.join("examples/demo/pixtral-demo.gguf")).unwrap();
    let vm = VisionModel::load(root.join("examples/demo/pixtral-demo.mmproj.gguf")).unwrap();
    let dir = common::fixtures().join("demo");
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    let items = eval["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    let (mut right, mut as_torch) = (0, 0);
    let mut wrong = Vec::new();
    for it in items {
        let img = pixtral::image::load(&dir.join("eval").join(it["image"].as_str().unwrap())).unwrap();
        let pre = pixtral::image::preprocess(&img, &vm.preprocess_config(None));
        let embeds = vm.encode(std::slice::from_ref(&pre));
        let q = it["question"].as_str().unwrap();
        let msg =
            Message::user_chunks(vec![Chunk::Image { grid_w: pre.grid_w, grid_h: pre.grid_h }, Chunk::Text(q.into())]);
        let ids = encode_chat(&model.tokenizer, None, &[msg]).unwrap();
        let mut s = Session::new(&model, SessionOptions::default());
        let mut greedy = Sampler::new(SamplerParams::greedy());
        let g = s.generate_with_images(&ids, &embeds, &mut greedy, 24, None, |_| true).unwrap();
        let got = g.text.trim();
        right += (got == it["answer"].as_str().unwrap()) as usize;
        as_torch += (got == it["torch"].as_str().unwrap()) as usize;
        if got != it["answer"].as_str().unwrap() || got != it["torch"].as_str().unwrap() {
            wrong.push(format!("{}: {q:?} -> {got:?} (want {}, PyTorch {})", it["image"], it["answer"], it["torch"]));
        }
    }
    eprintln!("demo model: {right}/100 right, {as_torch}/100 equal to PyTorch\n{}", wrong.join("\n"));
    assert!(right >= 95, "{right}/100 right:\n{}", wrong.join("\n"));
    assert_eq!(as_torch, 100, "answers differing from PyTorch:\n{}", wrong.join("\n"));
}
