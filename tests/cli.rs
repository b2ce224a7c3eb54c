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
