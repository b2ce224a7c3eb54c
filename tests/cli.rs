//! The `pixtral` binary end to end: convert → run (exact greedy answer) → logits (the parity tool's files).

mod common;

use std::process::Command;

use common::{fixtures, TempDir};

fn pixtral(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pixtral")).args(args).output().unwrap()
}

#[test]
fn convert_run_and_logits_from_the_command_line() {
    let dir = TempDir::new("cli");
    let model = dir.join("tiny.gguf");
    let m = model.to_str().unwrap();
    let src = fixtures().join("tiny/mistral");
    let out = pixtral(&["convert", src.to_str().unwrap(), "--outtype", "q8_0", "-o", m]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("tiny.mmproj.gguf").exists());

    let out = pixtral(&["run", "-m", m, "-p", "Describe a red circle in one word.", "--temp", "0", "-t", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Round.\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("finish: stop (EOS)") && err.contains("tok/s"), "{err}");

    let npy = dir.join("l.npy");
    let ids = dir.join("ids.json");
    let out = pixtral(&[
        "logits",
        "-m",
        m,
        "-p",
        "Hi there",
        "--system",
        "Be brief.",
        "--out",
        npy.to_str().unwrap(),
        "--ids-out",
        ids.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(&ids).unwrap()).unwrap();
    assert_eq!(&ids[..3], &[1, 3, 1066], "BOS, [INST], then the system text");
    assert_eq!(*ids.last().unwrap(), 4, "[/INST]");
    let (shape, data) = pixtral::npy::read_f32(&npy).unwrap();
    assert_eq!(shape, vec![ids.len(), 2048]);
    assert!(data.iter().all(|x| x.is_finite()));

    // errors are sentences with a non-zero exit
    let out = pixtral(&["run", "-m", dir.join("tiny.mmproj.gguf").to_str().unwrap(), "-p", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mmproj"));
    let out = pixtral(&["run", "-m", m, "--raw", "-p", &"word ".repeat(50), "-c", "8"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("context holds 8"));
}

#[test]
fn image_prompts_and_encode_image_from_the_command_line() {
    let dir = TempDir::new("cli-img");
    let model = dir.join("tiny.gguf");
    let m = model.to_str().unwrap();
    let out = pixtral(&["convert", fixtures().join("tiny/hf").to_str().unwrap(), "--vision-type", "f32", "-o", m]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img1 = fixtures().join("images/rgb_100x60.png");
    let img2 = fixtures().join("images/gray_64x64.png");
    let (i1, i2) = (img1.to_str().unwrap(), img2.to_str().unwrap());

    // encode-image: the adapter output, equal to HF's for this image on every ISA tier this CPU runs (each has
    // its own f32 micro-kernel and softmax; the scalar tier runs the twins)
    let emb = dir.join("emb.npy");
    let px = dir.join("px.npy");
    for isa in pixtral_quant::Isa::available() {
        let out = Command::new(env!("CARGO_BIN_EXE_pixtral"))
            .args(["encode-image", "-m", m, "--image", i1, "--out", emb.to_str().unwrap()])
            .args(["--pixels-out", px.to_str().unwrap()])
            .env("PIXTRAL_ISA", isa.name())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (shape, got) = pixtral::npy::read_f32(&emb).unwrap();
        assert_eq!(shape, vec![28, 64]);
        let (_, want) = pixtral::npy::read_f32(&fixtures().join("tiny/vision/img1.emb.npy")).unwrap();
        let scale = want.iter().fold(0f32, |a, b| a.max(b.abs()));
        let err = got.iter().zip(&want).fold(0f32, |e, (a, b)| e.max((a - b).abs())) / scale;
        assert!(err <= 1e-4, "{isa:?}: max |Δ| {err} of the largest value");
        assert_eq!(pixtral::npy::read_f32(&px).unwrap().0, vec![3, 64, 112]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("7x4 patches (32 tokens)"));
    }

    // run with two images placed by markers; logits of the same prompt have one row per token
    let out = pixtral(&[
        "run",
        "-m",
        m,
        "--image",
        i1,
        "--image",
        i2,
        "-p",
        "<image> and <image>?",
        "--temp",
        "0",
        "-n",
        "3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("4x4 patches (20 tokens)") && err.contains("image encode"), "{err}");
    let npy = dir.join("l.npy");
    let out = pixtral(&["logits", "-m", m, "--image", i1, "-p", "What shape is this?", "--out", npy.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(pixtral::npy::read_f32(&npy).unwrap().0, vec![44, 2048], "BOS [INST] 32 image tokens, 10 text, [/INST]");

    // mistakes are sentences
    let out = pixtral(&["run", "-m", m, "--image", i1, "-p", "<image> <image>"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 <image> markers but 1 image"));
    let out = pixtral(&["run", "-m", m, "--image", i1, "--mmproj", dir.join("none.gguf").to_str().unwrap(), "-p", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("none.gguf: No such file"));
    assert_eq!(out.status.code(), Some(3), "a missing file");
    let lone = dir.join("lone.gguf");
    std::fs::copy(&model, &lone).unwrap();
    let out = pixtral(&["run", "-m", lone.to_str().unwrap(), "--image", i1, "-p", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mmproj found"));
    // a header error names the file it is about first (here a text model given as the mmproj)
    let out = pixtral(&["run", "-m", m, "--image", i1, "--mmproj", m, "-p", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("error: {m}: clip.projector_type")), "{err}");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.status.code(), Some(3), "a missing mmproj is a missing file, as README says");
    let out = pixtral(&["run", "-m", m, "--image", m, "-p", "x"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not a PNG, JPEG, WebP or GIF image")
    );
}

#[test]
fn exit_codes_tell_usage_input_and_success_apart_and_errors_say_what_to_do() {
    let dir = TempDir::new("cli-exit");
    let model = dir.join("tiny.gguf");
    let m = model.to_str().unwrap();
    let src = fixtures().join("tiny/hf");
    assert!(pixtral(&["convert", src.to_str().unwrap(), "-o", m]).status.success());
    let code = |args: &[&str]| {
        let o = pixtral(args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    // usage: an unknown flag, a prompt that cannot fit, a context the memory cannot hold, marker mismatch
    assert_eq!(code(&["run", "--no-such-flag"]).0, Some(2));
    let (c, e, _) = code(&["run", "-m", m, "-c", "4", "-p", "a prompt longer than four tokens"]);
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("but the context holds 4") && e.contains("--ctx-size"), "{e}");
    let (c, e, _) = code(&["run", "-m", m, "-c", "2000000000", "-p", "hi"]);
    assert_eq!(c, Some(2), "{e}");
    assert!(e.contains("MB of memory are available") && e.contains("smaller --ctx-size"), "{e}");
    let img = fixtures().join("images/rgb_100x60.png");
    let (c, e, _) = code(&["run", "-m", m, "--image", img.to_str().unwrap(), "-p", "<image> and <image>"]);
    assert_eq!(c, Some(2), "{e}");
    // input: a missing model, a file that is not GGUF, a missing image, a missing mmproj
    let (c, e, _) = code(&["run", "-m", "/nonexistent/m.gguf", "-p", "hi"]);
    assert_eq!(c, Some(3), "{e}");
    assert!(e.contains("/nonexistent/m.gguf"), "{e}");
    let (c, e, _) = code(&["run", "-m", img.to_str().unwrap(), "-p", "hi"]);
    assert_eq!(c, Some(3), "{e}");
    assert!(e.contains("not a GGUF file"), "{e}");
    let (c, e, _) = code(&["run", "-m", m, "--image", "/nonexistent.png", "-p", "hi"]);
    assert_eq!(c, Some(3), "{e}");
    let (c, e, _) =
        code(&["run", "-m", m, "--mmproj", "/nonexistent.mmproj.gguf", "--image", img.to_str().unwrap(), "-p", "hi"]);
    assert_eq!(c, Some(3), "{e}");
    assert!(e.contains("/nonexistent.mmproj.gguf: No such file"), "{e}");
    // success, and --quiet prints the answer only
    let (c, e, out) = code(&["run", "-m", m, "-p", "Describe a red circle in one word.", "--temp", "0", "--quiet"]);
    assert_eq!(c, Some(0), "{e}");
    assert_eq!((out.as_str(), e.as_str()), ("Round.\n", ""));
    let (_, e, _) = code(&["run", "-m", m, "-p", "Describe a red circle in one word.", "--temp", "0", "--verbose"]);
    assert!(e.contains("prompt ids: [1, 3,") && e.contains("ISA") && e.contains("KV"), "{e}");
}

/// The quirks of published checkpoint files, from the command line: a config that says vision gelu is refused
/// (exit 3, saying how to override) and converts with --vision-act; a llama3-pattern tokenizer.json is
/// converted with a note.
#[test]
fn checkpoint_quirks_from_the_command_line() {
    let dir = TempDir::new("cli-quirks");
    let src = dir.join("src");
    common::copy_dir(&fixtures().join("tiny/hf"), &src);
    let edit = |file: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let p = src.join(file);
        let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut j);
        std::fs::write(&p, j.to_string()).unwrap();
    };
    edit("config.json", &|j| j["vision_config"]["hidden_act"] = "gelu".into());
    edit("tokenizer.json", &|j| {
        j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = pixtral::convert::tokenizer::LLAMA3_PATTERN.into()
    });
    let model = dir.join("q.gguf");
    let m = model.to_str().unwrap();
    let out = pixtral(&["convert", src.to_str().unwrap(), "-o", m]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("vision_config.hidden_act") && err.contains("--vision-act silu"), "{err}");
    assert!(!model.exists());
    let out = pixtral(&["convert", src.to_str().unwrap(), "--vision-act", "silu", "-o", m]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("note:") && err.contains("llama3") && err.contains("hidden_act"), "{err}");
}

/// `run` warns on an mmproj of another checkpoint and refuses one of another width.
#[test]
fn mismatched_pairs_from_the_command_line() {
    use pixtral::gguf::Value;
    let dir = TempDir::new("cli-pairs");
    let model = dir.join("q.gguf");
    let m = model.to_str().unwrap();
    assert!(pixtral(&["convert", fixtures().join("tiny/hf").to_str().unwrap(), "-o", m]).status.success());
    let run = |mmproj: &std::path::Path| {
        pixtral(&["run", "-m", m, "--mmproj", mmproj.to_str().unwrap(), "-p", "Hi", "-n", "1", "-t", "1"])
    };
    let mp = dir.join("q.mmproj.gguf");
    let out = run(&mp);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("warning"));
    let other = dir.join("other.mmproj.gguf");
    common::rewrite(&mp, &other, |meta, _| {
        common::set(meta, "pixtral.checkpoint.fingerprint", Value::String("0123456789abcdef".into()))
    });
    let out = run(&other);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning:") && err.contains("different checkpoints"), "{err}");
    let narrow = dir.join("narrow.mmproj.gguf");
    common::rewrite(&mp, &narrow, |meta, _| common::set(meta, "clip.vision.projection_dim", Value::U32(32)));
    let out = run(&narrow);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("clip.vision.projection_dim"), "{err}");
}
