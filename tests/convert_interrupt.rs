//! An interrupted conversion (SIGINT, or `request_interrupt` from a library user) leaves nothing at OUT and no
//! partial file. Its own test binary: the interrupt flag is process-wide.

mod common;

use common::{fixtures, TempDir};
use pixtral::convert::{convert, ConvertError, Options};
use pixtral::gguf::os;
use pixtral::quant::GgmlType;

#[test]
fn interrupt_leaves_nothing_behind() {
    let dir = TempDir::new("interrupt");
    let out = dir.join("o.gguf");
    let opts = Options {
        src: fixtures().join("tiny/mistral"),
        out: out.clone(),
        outtype: GgmlType::Q8_0,
        vision_type: GgmlType::F16,
        force: false,
        progress: false,
        vision_act: None,
        mix: None,
    };
    os::request_interrupt();
    let e = convert(&opts).err();
    os::clear_interrupt();
    assert!(matches!(e, Some(ConvertError::Interrupted)), "{e:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing at OUT, no .partial");
    // and the same conversion then completes
    convert(&opts).unwrap();
    assert!(out.exists());

    // `pixtral quantize` the same way (in this test: the flag is process-wide)
    use pixtral::convert::quantize::{quantize, Mix, Options as QOptions};
    let qout = dir.join("q.gguf");
    let q = QOptions {
        input: out.clone(),
        output: qout.clone(),
        mix: Mix::from_name("Q4_0").unwrap(),
        allow_requantize: true,
        force: false,
    };
    os::request_interrupt();
    let e = quantize(&q).err();
    os::clear_interrupt();
    assert!(matches!(e, Some(ConvertError::Interrupted)), "{e:?}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "OUT and its mmproj only, no q.gguf or q.gguf.partial: {left:?}");
    quantize(&q).unwrap();
    assert!(qout.exists());
}

#[test]
fn sigint_to_the_cli_stops_it_cleanly() {
    // a real signal to a real process: the handler turns SIGINT into the same clean stop
    let dir = TempDir::new("sigint");
    let out = dir.join("o.gguf");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_pixtral"))
        .args(["convert", fixtures().join("tiny/mistral").to_str().unwrap(), "-o", out.to_str().unwrap()])
        .spawn()
        .unwrap();
    // std has no signal API: kill(1) sends it
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait_with_output().unwrap().status;
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    // either the signal came before the end (error, nothing left) or after (complete files)
    if status.success() {
        assert!(pixtral::gguf::GgufFile::open(&out).is_ok());
    } else {
        assert!(left.is_empty(), "left behind: {left:?}");
    }
    assert!(!left.iter().any(|n| n.to_string_lossy().ends_with(".partial")));
}
