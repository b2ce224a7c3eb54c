//! The `pixtral` binary as a person who uses llama.cpp every day drives it: flags checked before the model
//! loads, the prompt and images from standard input and pipes, a closed stdout, `--json`, `--stop`, `-n -1`,
//! `--help` texts, terminal-safe output, the REPL's paths and scripts, context shift that never cuts an image,
//! and `bench` lists and formats. Run against the committed demo model, so every case is a real run.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::pty::Pty;
use common::TempDir;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo() -> String {
    root().join("examples/demo/pixtral-demo.gguf").to_str().unwrap().to_string()
}

fn red_circle() -> String {
    root().join("examples/red-circle.png").to_str().unwrap().to_string()
}

/// The binary with `args`, `stdin` piped in (None: no standard input), a private cache folder.
fn px(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let cache = std::env::temp_dir().join(format!("pixtral-test-cache-{}", std::process::id()));
    let mut c = Command::new(env!("CARGO_BIN_EXE_pixtral"));
    c.args(args).env("XDG_CACHE_HOME", &cache).env_remove("PIXTRAL_ISA").stdout(Stdio::piped()).stderr(Stdio::piped());
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = c.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut s = child.stdin.take().unwrap();
        // the child may stop reading early (an error): a broken pipe here is its business
        let _ = s.write_all(bytes);
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The answer, the stderr and the exit code of a greedy run.
fn run(args: &[&str], stdin: Option<&[u8]>) -> (String, String, i32) {
    let d = demo();
    let mut a = vec!["run", "-m", &d, "--temp", "0"];
    a.extend_from_slice(args);
    let o = px(&a, stdin);
    (text(&o.stdout), text(&o.stderr), o.status.code().unwrap_or(-1))
}

#[test]
fn flags_and_files_are_checked_before_the_model_loads_with_exit_2_for_usage_and_3_for_files() {
    let img = red_circle();
    let dir = TempDir::new("daily-precheck");
    // a PNG whose header is fine and whose data stops short: found by decoding, still before the model loads
    let png = std::fs::read(&img).unwrap();
    let truncated = dir.join("cut.png").to_str().unwrap().to_string();
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--top-p", "1.5", "-p", "hi"], 2, "not a number in [0, 1]"),
        (&["--min-p", "-0.1", "-p", "hi"], 2, "--min-p"),
        (&["--repeat-penalty", "0", "-p", "hi"], 2, "not a number > 0"),
        (&["--temp", "-1", "-p", "hi"], 2, "--temp"),
        (&["-t", "0", "-p", "hi"], 2, "not a whole number ≥ 1"),
        // a typo must not create a hundred thousand threads
        (&["-t", "100000", "-p", "hi"], 2, "-t 100000: more than 4 × the"),
        (&["-n", "-2", "-p", "hi"], 2, "-1 for no limit"),
        (&["--seed", "-5", "-p", "hi"], 2, "seed"),
        (&["--image", &img, "--image-max-side", "8", "-p", "hi"], 2, "below the model's patch size (16 px)"),
        (&["--image", &img, "-p", "<image> and <image>"], 2, "2 <image> markers but 1 image"),
        (&["--image", "/nonexistent.png", "-p", "hi"], 3, "/nonexistent.png: No such file"),
        (&["--image", "/tmp", "-p", "hi"], 3, "/tmp: is a directory"),
        (
            &["--image", &img, "--mmproj", "/nonexistent.mmproj.gguf", "-p", "hi"],
            3,
            "/nonexistent.mmproj.gguf: No such file",
        ),
        (&["-f", "/nonexistent.txt"], 3, "/nonexistent.txt: No such file"),
        (&["-p", "hi", "-f", "/etc/hostname"], 2, "cannot be used with"),
        (
            &["--image", &img, "--image", "-", "--image", "-", "-p", "hi"],
            2,
            "only one --image can be read from standard input",
        ),
        (&["-c", "2000000000", "-p", "hi"], 2, "MB of memory are available"),
        (
            &["-c", "8", "--context-shift", "-p", "a prompt longer than eight tokens, surely"],
            2,
            "use a larger --ctx-size",
        ),
        (&["-c", "100", "--context-shift", "--keep", "100", "-p", "hi"], 2, "--keep 100 must be below"),
        (&["--stop", "", "-p", "hi"], 2, "a stop string cannot be empty"),
        (&["--image", &truncated, "-p", "hi"], 3, "cannot decode image"),
    ];
    for (args, code, want) in cases {
        let (_, err, c) = run(args, None);
        assert_eq!(c, *code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        // found before the weights load: no header line
        assert!(!err.contains("loaded in"), "{args:?} loaded the model first: {err}");
    }
    // a directory or a non-GGUF file as the model, and inspect of a non-GGUF file: bad input, named
    for (args, want) in [
        (vec!["run", "-m", dir.path().to_str().unwrap(), "-p", "hi"], "is a directory, not a GGUF file"),
        (vec!["run", "-m", &img, "-p", "hi"], "not a GGUF file"),
        (vec!["inspect", &img], "not a GGUF file"),
        (vec!["inspect", "/nonexistent.gguf"], "/nonexistent.gguf: No such file"),
        (vec!["logits", "-p", "hi", "--out", "/nonexistent/l.npy"], "the folder /nonexistent does not exist"),
    ] {
        let o = px(&args, None);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.contains(want) && !err.contains("loaded in"), "{args:?}: {err}");
    }
}

#[test]
fn the_prompt_comes_from_p_p_dash_f_or_a_piped_stdin_and_images_from_stdin_and_pipes() {
    let q = "What shape is this?";
    let img = red_circle();
    let (want, err, c) = run(&["--image", &img, "-p", q, "-q"], None);
    assert_eq!(c, 0, "{err}");
    assert!(!want.trim().is_empty());
    // -p -, a piped stdin without -p, -f FILE: the same answer
    let dir = TempDir::new("daily-stdin");
    let f = dir.join("q.txt");
    std::fs::write(&f, q).unwrap();
    for (args, stdin) in [
        (vec!["--image", &img, "-p", "-", "-q"], Some(q.as_bytes())),
        (vec!["--image", &img, "-q"], Some(q.as_bytes())),
        (vec!["--image", &img, "-f", f.to_str().unwrap(), "-q"], None),
    ] {
        let (got, err, c) = run(&args, stdin);
        assert_eq!((c, got.as_str()), (0, want.as_str()), "{args:?}: {err}");
    }
    // the image from stdin (`-`), and through non-seekable paths: /dev/stdin on a pipe, a FIFO
    let png = std::fs::read(&img).unwrap();
    for args in [vec!["--image", "-", "-p", q, "-q"], vec!["--image", "/dev/stdin", "-p", q, "-q"]] {
        let (got, err, c) = run(&args, Some(&png));
        assert_eq!((c, got.as_str()), (0, want.as_str()), "{args:?}: {err}");
    }
    let fifo = dir.join("img.fifo");
    let cpath = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    let writer = {
        let (fifo, png) = (fifo.clone(), png.clone());
        std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo).unwrap().write_all(&png))
    };
    let (got, err, c) = run(&["--image", fifo.to_str().unwrap(), "-p", q, "-q"], None);
    writer.join().unwrap().unwrap();
    assert_eq!((c, got.as_str()), (0, want.as_str()), "{err}");
    // stdin cannot be both; an empty piped prompt is an error, not a run
    let (_, err, c) = run(&["--image", "-", "-p", "-"], Some(&png));
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("cannot be both the prompt and an image"), "{err}");
    let (_, err, c) = run(&["-p", "-"], Some(b"  \n"));
    assert_eq!(c, 2, "{err}");
    // the 20 MB bound holds for stdin too
    let big = vec![0u8; (20 << 20) + 1];
    let (_, err, c) = run(&["--image", "-", "-p", q], Some(&big));
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("<stdin>: the image file is larger than the 20 MB limit"), "{err}");
}

#[test]
fn a_closed_stdout_stops_generation_at_once_and_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixtral"))
        .args(["run", "-m", &demo(), "-p", "Hello", "--ignore-eos", "-n", "-1", "-c", "100000", "--context-shift"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    // without the stop it would generate forever (-n -1, a ring cache): it must end by itself, exit 0, no panic
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "still generating after stdout closed");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    // the same for chat, and a full disk is an error (exit 1), not a silent loss
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixtral"))
        .args(["chat", "-m", &demo(), "--no-history", "--ignore-eos", "-n", "-1", "-c", "100000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello\nHello\n").unwrap();
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
    if Path::new("/dev/full").exists() {
        for args in [vec!["run", "-m", &demo(), "-p", "Hello"], vec!["inspect", &demo()]] {
            let o = Command::new(env!("CARGO_BIN_EXE_pixtral"))
                .args(&args)
                .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains("writing to standard output: No space left on device"), "{args:?}: {err}");
        }
    }
}

#[test]
fn json_stop_strings_unlimited_n_seeds_and_the_verbose_prompt() {
    let img = red_circle();
    // --json: one object, the answer not streamed
    let (out, err, c) = run(&["--image", &img, "-p", "Describe the image.", "--json", "--seed", "7", "-q"], None);
    assert_eq!(c, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let answer = v["answer"].as_str().unwrap().to_string();
    assert!(!answer.is_empty(), "{v}");
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["seed"], 7);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 54, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 2, "{v}");
    assert!(
        v["timings"]["generation_tok_s"].as_f64().unwrap() > 0.0 && v["model"].as_str().unwrap().ends_with(".gguf")
    );
    // the streamed answer is the same text
    let (streamed, _, _) = run(&["--image", &img, "-p", "Describe the image.", "-q"], None);
    assert_eq!(streamed, format!("{answer}\n"));
    // --stop (and -r) ends the answer before the stop string, which is not printed
    let (hello, _, _) = run(&["-p", "Hello", "-q"], None);
    let hello = hello.trim_end().to_string();
    let mid = hello.char_indices().nth(hello.chars().count() / 2).unwrap().0;
    let stop: String = hello[mid..].chars().take(3).collect();
    let before = &hello[..hello.find(&stop).unwrap()];
    for flag in ["--stop", "-r"] {
        let (out, err, c) = run(&["-p", "Hello", "-q", flag, &stop], None);
        assert_eq!((c, out.as_str()), (0, format!("{before}\n").as_str()), "{flag} {stop:?}: {err}");
    }
    let (out, err, _) = run(&["-p", "Hello", "--stop", &stop, "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["answer"].as_str().unwrap(), v["finish_reason"].as_str().unwrap()), (before, "stop"), "{err}");
    assert_eq!(v["stop_string"].as_str(), Some(stop.as_str()));
    assert!(err.contains("finish: stop (a --stop string)"), "{err}");
    // -n -1 runs to EOS, as a large -n does
    let (a, err, _) = run(&["-p", "Hello", "-n", "-1"], None);
    assert_eq!(a.trim_end(), hello);
    assert!(err.contains("finish: stop (EOS)"), "{err}");
    // --seed -1 draws a seed and prints it; that seed repeats the run
    let d = demo();
    let sampled = |seed: &str| px(&["run", "-m", &d, "-p", "Hello", "--temp", "1.5", "--seed", seed, "-n", "12"], None);
    let o = sampled("-1");
    let err = text(&o.stderr);
    let seed = err.split("seed ").nth(1).unwrap_or_else(|| panic!("{err}")).split(',').next().unwrap().to_string();
    assert_eq!(text(&o.stdout), text(&sampled(&seed).stdout), "seed {seed}");
    // --verbose-prompt: the template with its special tokens, an image as rows of [IMG]
    let (_, err, _) = run(&["--image", &img, "-p", "What shape is this?", "--verbose-prompt", "-q", "-n", "1"], None);
    assert!(
        err.contains("<s>[INST][IMG]×8[IMG_BREAK][IMG]×8") && err.contains("[IMG_END]What shape is this?[/INST]"),
        "{err}"
    );
}

/// The option lines of a `--help` text that have no description.
fn undocumented(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut bad = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        // options and arguments start at column 2 or 6; their descriptions at column 10
        let indent = l.len() - t.len();
        if indent > 6 || !(t.starts_with('-') || t.starts_with('[') || t.starts_with('<')) {
            continue;
        }
        // "  -x, --flag <V>  text" on one line, or the text on the next, more indented line
        let same = t.split_once("  ").map(|(_, d)| d.trim()).filter(|d| !d.is_empty() && !d.starts_with("[default"));
        let next = lines.get(i + 1).filter(|n| {
            let ind = n.len() - n.trim_start().len();
            ind > l.len() - t.len() && !n.trim().is_empty() && !n.trim_start().starts_with("[default")
        });
        if same.is_none() && next.is_none() {
            bad.push(l.to_string());
        }
    }
    bad
}

#[test]
fn every_flag_is_documented_and_version_names_the_commit_and_tiers() {
    for cmd in ["run", "chat", "convert", "inspect", "bench", "logits", "encode-image"] {
        let o = px(&[cmd, "--help"], None);
        assert!(o.status.success());
        let help = text(&o.stdout);
        let bad = undocumented(&help);
        assert!(bad.is_empty(), "pixtral {cmd} --help has options without text: {bad:#?}\n{help}");
    }
    let help = text(&px(&["run", "--help"], None).stdout);
    for flag in ["--top-k", "--top-p", "--min-p", "--repeat-penalty", "--stop", "--json", "--verbose-prompt", "--file"]
    {
        assert!(help.contains(flag), "{flag}");
    }
    let help = text(&px(&["convert", "--help"], None).stdout);
    assert!(help.contains("q4_0") && help.contains("q8_0") && help.contains("bf16"), "{help}");
    let help = text(&px(&["--help"], None).stdout);
    assert!(help.contains("PIXTRAL_ISA") && help.contains("PIXTRAL_REPACK") && help.contains("NO_COLOR"), "{help}");
    let v = text(&px(&["--version"], None).stdout);
    assert!(v.contains("commit ") && v.contains("ISA tiers on this CPU: scalar"), "{v}");
    assert!(!v.contains("commit unknown"), "built from a git checkout: {v}");
}

/// A copy of the demo model whose `general.name` and an extra key carry terminal control sequences.
fn hostile_names(dir: &TempDir) -> PathBuf {
    let evil = "\x1b]0;PWNED\x07\x1b[1A\x1b[2K";
    let dst = dir.join("evil.gguf");
    common::rewrite(Path::new(&demo()), &dst, |meta, _| {
        common::set(meta, "general.name", pixtral::gguf::Value::String(format!("demo{evil}")));
        common::set(meta, &format!("evil{evil}.key"), pixtral::gguf::Value::U32(1));
    });
    std::fs::copy(root().join("examples/demo/pixtral-demo.mmproj.gguf"), dir.join("evil.mmproj.gguf")).unwrap();
    dst
}

#[test]
fn control_characters_from_files_never_reach_a_terminal_raw() {
    let dir = TempDir::new("daily-ansi");
    let m = hostile_names(&dir);
    let m = m.to_str().unwrap();
    for args in [vec!["run", "-m", m, "-p", "Hello", "-n", "4"], vec!["inspect", m]] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pixtral"));
        c.args(&args).env("NO_COLOR", "1");
        let mut p = Pty::spawn(c);
        let status = p.wait(Duration::from_secs(60));
        let out = p.out.clone();
        assert!(status.success(), "{args:?}: {out}");
        assert!(
            !out.contains('\x1b') && !out.contains('\x07'),
            "{args:?}: raw control bytes reached the terminal:\n{out:?}"
        );
        assert!(out.contains("PWNED"), "{args:?}: {out}");
    }
    // to a pipe, the metadata prints escaped (Debug) and the answer is data: byte-exact
    let o = px(&["inspect", m], None);
    assert!(text(&o.stdout).contains(r"\u{1b}]0;PWNED\u{7}"), "{}", text(&o.stdout));
}

#[test]
fn a_prompt_image_is_never_cut_by_context_shift() {
    let img = red_circle();
    // the image cannot fit: refused, without suggesting --context-shift
    let (_, err, c) = run(&["-c", "50", "--context-shift", "--image", &img, "-p", "What colour is the shape?"], None);
    assert_eq!(c, 2, "{err}");
    assert!(
        err.contains("54 for images") && err.contains("never cut to fit") && !err.contains("--context-shift"),
        "{err}"
    );
    // it fits, and the answer runs past the context: the ring keeps everything through the image
    let (_, err, c) = run(
        &[
            "-c",
            "80",
            "--context-shift",
            "--image",
            &img,
            "-p",
            "What colour is the shape?",
            "--ignore-eos",
            "-n",
            "40",
        ],
        None,
    );
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("context shift keeps the first 56 tokens (through the last image)"), "{err}");
    // chat drops whole exchanges, and says so; the image goes with its exchange, never in part
    let shift = ["--temp", "0", "-c", "100", "--context-shift", "--no-history", "-n", "8"];
    let script = format!(
        "/image {img}\nWhat colour is the shape?\n/stats\nWhat shape is this?\nDescribe the image.\nHow many shapes are there?\n/stats\n"
    );
    let (_, err, c) = chat_with(&shift, &root(), &script, &[]);
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("[context shift: dropped the oldest 1 exchange(s)") && err.contains("1 image(s))"), "{err}");
    let stats: Vec<&str> = err.lines().filter(|l| l.starts_with("conversation:")).collect();
    assert_eq!(stats.first(), Some(&"conversation: 2 messages, 1 images"), "{err}");
    assert!(stats.last().unwrap().ends_with(", 0 images"), "{err}");
    // images that cannot fit even after dropping every older exchange: refused up front, the history kept
    let ex = |f: &str| root().join("examples").join(f).to_str().unwrap().to_string();
    let script = format!(
        "/image {img}\nWhat colour is the shape?\n/image {} {}\n",
        ex("green-star.png"),
        ex("three-squares.png")
    );
    let (_, err, c) = chat_with(&shift, &root(), &script, &[]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("three-squares.png") && err.contains("even after dropping every older exchange"), "{err}");
    assert!(!err.contains("dropped the oldest"), "{err}");
}

/// `pixtral chat -m DEMO ARGS` in `cwd` with `script` piped in and `env` set: its stdout, stderr and exit code.
fn chat_with(args: &[&str], cwd: &Path, script: &str, env: &[(&str, &Path)]) -> (String, String, i32) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pixtral"));
    c.current_dir(cwd).args(["chat", "-m", &demo()]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    (text(&o.stdout), text(&o.stderr), o.status.code().unwrap_or(-1))
}

/// A piped greedy chat session: its stdout, stderr and exit code.
fn chat_script(cwd: &Path, script: &str, extra: &[&str]) -> (String, String, i32) {
    let mut args = vec!["--temp", "0", "--no-history", "-n", "12"];
    args.extend_from_slice(extra);
    chat_with(&args, cwd, script, &[])
}

#[test]
fn repl_paths_split_like_a_shell_and_saved_conversations_load_from_anywhere() {
    let dir = TempDir::new("daily-repl");
    let spaced = dir.join("my photo.png");
    std::fs::copy(red_circle(), &spaced).unwrap();
    let d = dir.path().to_str().unwrap();
    let uri = format!("file://{}", d.replace(' ', "%20")) + "/my%20photo.png";
    let script = format!(
        "/image '{d}/my photo.png'\n/image \"{d}/my photo.png\"\n/image {}/my\\ photo.png\n/image {uri}\n{uri}\n/stats\n/reset\n",
        d.replace(' ', "\\ ")
    );
    let (_, err, c) = chat_script(&root(), &script, &[]);
    assert_eq!(c, 0, "{err}");
    for n in 1..=5 {
        assert!(err.contains(&format!("({n} image(s) for the next message)")), "{n}: {err}");
    }
    // a path then a question on one line attaches the image and asks (as Ollama takes it); /set takes -1 for n
    let (out, err, c) = chat_script(&root(), "/set n -1\nexamples/red-circle.png What shape is this?\n/stats\n", &[]);
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("n -1") && err.contains("(1 image(s) for the next message)"), "{err}");
    assert!(err.contains("conversation: 2 messages, 1 images") && !out.trim().is_empty(), "{err}");
    let (_, err, c) = chat_script(&root(), "/set top_p 3\n", &[]);
    assert_eq!(c, 2, "{err}");
    assert!(err.contains("/set top_p: \"3\" is not a number in [0, 1]"), "{err}");
    // /image reads a FIFO once (it used to read the header, then open the FIFO again and wait forever)
    let fifo = dir.join("img.fifo");
    let cpath = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o600) }, 0);
    let writer = {
        let (fifo, png) = (fifo.clone(), std::fs::read(red_circle()).unwrap());
        std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo).unwrap().write_all(&png))
    };
    let (_, err, c) = chat_script(&root(), &format!("/image {}\n", fifo.display()), &[]);
    writer.join().unwrap().unwrap();
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("(1 image(s) for the next message)"), "{err}");
    // a conversation saved with a relative image path loads from another working directory
    let saved = dir.join("conv.json");
    let script = format!("/image examples/red-circle.png\nWhat shape is this?\n/save {}\n", saved.display());
    let (out, err, c) = chat_script(&root(), &script, &[]);
    assert_eq!(c, 0, "{err}");
    assert!(!out.trim().is_empty());
    let json = std::fs::read_to_string(&saved).unwrap();
    assert!(
        json.contains(&format!("\"{}\"", root().join("examples/red-circle.png").canonicalize().unwrap().display())),
        "{json}"
    );
    let (_, err, c) = chat_script(Path::new("/"), &format!("/load {}\n/stats\n", saved.display()), &[]);
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("loaded 2 messages") && err.contains("conversation: 2 messages, 1 images"), "{err}");
    // a hand-written file names its image relative to itself
    std::fs::write(
        dir.join("rel.json"),
        r#"{"format": "pixtral-conversation-1", "system": null, "messages": [{"role": "user", "content": [{"type": "image", "path": "my photo.png"}, {"type": "text", "text": "What shape is this?"}]}]}"#,
    )
    .unwrap();
    let (_, err, c) = chat_script(Path::new("/"), &format!("/load {}\n", dir.join("rel.json").display()), &[]);
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("loaded 1 messages"), "{err}");
    // a missing image: its cause said once
    std::fs::remove_file(&spaced).unwrap();
    let (_, err, c) = chat_script(Path::new("/"), &format!("/load {}\n", dir.join("rel.json").display()), &["-q"]);
    assert_eq!(c, 3, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn a_piped_chat_stops_at_a_failed_command_and_stats_follow_reset_and_undo() {
    // the message meant for the image is not sent without it
    let (out, err, c) = chat_script(&root(), "/image /nonexistent.png\nWhat shape is this?\n", &[]);
    assert_eq!(c, 3, "{err}");
    assert!(out.is_empty(), "answered without its image: {out}");
    let (_, err, c) = chat_script(&root(), "/load /nonexistent.json\nHello\n", &[]);
    assert_eq!(c, 3, "{err}");
    // /stats shows the conversation as it is after /undo and /reset
    let script =
        format!("/image {}\nWhat shape is this?\n/stats\n/undo\n/stats\nHello\n/reset\n/stats\n", red_circle());
    let (_, err, c) = chat_script(&root(), &script, &[]);
    assert_eq!(c, 0, "{err}");
    // the /stats blocks ("context: USED/TOTAL"), not the header's "context: 4096 tokens"
    let blocks: Vec<&str> =
        err.split("context: ").skip(1).filter(|b| b.split(' ').next().unwrap().contains('/')).collect();
    assert_eq!(blocks.len(), 3, "{err}");
    assert!(blocks[0].contains("2 messages, 1 images") && blocks[0].contains("last answer"), "{}", blocks[0]);
    assert!(blocks[1].starts_with("0/4096") && blocks[1].contains("no answer yet"), "{}", blocks[1]);
    assert!(
        blocks[2].starts_with("0/4096") && blocks[2].contains("0 messages") && blocks[2].contains("no answer yet"),
        "{}",
        blocks[2]
    );
}

#[test]
fn the_terminal_repl_completes_commands_and_colours_unless_no_color() {
    let dir = TempDir::new("daily-tab");
    for no_color in [false, true] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pixtral"));
        c.current_dir(root()).args(["chat", "-m", &demo(), "--no-history"]).env("XDG_STATE_HOME", dir.path());
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let mut p = Pty::spawn(c);
        let head = p.expect(">>> ", Duration::from_secs(60));
        assert_eq!(head.contains("\x1b[1;32m"), !no_color, "{head:?}");
        // Tab completes the command, Enter runs it
        p.send("/sta\t");
        p.expect("stats", Duration::from_secs(60));
        p.send("\r");
        p.expect("no answer yet", Duration::from_secs(60));
        p.send("/quit\r");
        assert!(p.wait(Duration::from_secs(60)).success());
    }
}

#[test]
fn bench_takes_lists_formats_and_reports_the_size_it_encoded() {
    let o = px(
        &["bench", "-p", "8,16", "-n", "4", "-r", "2", "-t", "1,2", "--image-size", "1024x1024", "-o", "jsonl"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rows: Vec<serde_json::Value> = text(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tests: Vec<String> = rows.iter().map(|r| format!("{}@{}", r["test"].as_str().unwrap(), r["threads"])).collect();
    assert_eq!(tests, ["pp8@1", "pp16@1", "tg4@1", "vit 128x128@1", "pp8@2", "pp16@2", "tg4@2", "vit 128x128@2"]);
    for r in &rows {
        assert_eq!(r["samples_ts"].as_array().unwrap().len(), 2, "{r}");
        assert!(r["avg_ts"].as_f64().unwrap() > 0.0 && r["stddev_ts"].as_f64().unwrap() >= 0.0, "{r}");
    }
    assert_eq!(
        (rows[3]["image_size"].as_str(), rows[3]["encoded_size"].as_str()),
        (Some("1024x1024"), Some("128x128"))
    );
    let o = px(&["bench", "-p", "8", "-n", "0", "-r", "1", "--image-size", "1024x1024"], None);
    let md = text(&o.stdout);
    assert!(md.contains("| vit 128x128 (asked 1024x1024) |") && md.contains(" ± "), "{md}");
    assert!(md.contains(" MB | ") && md.contains(" M | "), "the demo's size and parameters in MB and M: {md}");
    let o = px(&["bench", "-p", "8", "-n", "2", "-r", "1", "-o", "csv"], None);
    let csv = text(&o.stdout);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("model,type,") && csv.lines().all(|l| l.split(',').count() == 16), "{csv}");
    // ViT rows name their precision; --vit-precision without an image size is a usage error
    assert_eq!(rows[3]["vit_precision"].as_str(), Some("f32"));
    assert!(rows[0].get("vit_precision").is_none());
    let o = px(&["bench", "-p", "8", "-n", "0", "--vit-precision", "bf16"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("give --image-size too"), "{}", text(&o.stderr));
    let o = px(&["bench", "-p", "0", "-n", "0"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("nothing to measure"), "{}", text(&o.stderr));
}

#[test]
fn an_image_is_priced_before_the_wait() {
    // measured rates, planted for this configuration: ~0.1 GFLOP/s makes the demo's image a visible cost
    let cache = TempDir::new("daily-rates");
    std::fs::create_dir_all(cache.join("pixtral")).unwrap();
    let plant = |key: &str| {
        let rates = r#"{"vit_gflops": 0.01, "matmul_gflops": 0.01, "attention_gflops": 0.01}"#;
        std::fs::write(cache.join("pixtral/rates.json"), format!(r#"{{"{key}": {rates}}}"#)).unwrap();
    };
    let priced = || {
        Command::new(env!("CARGO_BIN_EXE_pixtral"))
            .args(["run", "-m", &demo(), "--image", &red_circle(), "-p", "What shape is this?", "-t", "1", "-n", "1"])
            .env("XDG_CACHE_HOME", cache.path())
            .env("PIXTRAL_ISA", "scalar")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // rates measured by an older build (version 1's key, before tiled attention) are not used
    plant("scalar/1t/Q8_0/F16");
    let err = text(&priced().stderr);
    assert!(!err.contains("measured rates"), "{err}");
    let ffn = |file: &str, t: &str| {
        let f = pixtral::gguf::GgufFile::open(Path::new(file)).unwrap();
        let t = f.header.tensor(t).unwrap();
        format!("{}:{}x{}", t.ty.name(), t.ne[0], t.ne[1])
    };
    let mmproj = pixtral::gguf::mmproj_path(Path::new(&demo()));
    let (text_w, vision_w) =
        (ffn(&demo(), "blk.0.ffn_up.weight"), ffn(mmproj.to_str().unwrap(), "v.blk.0.ffn_up.weight"));
    // the same types with another model's shape are not this model's rates
    plant(&format!("v2/scalar/1t/Q8_0:5120x14336/{vision_w}/f32"));
    let err = text(&priced().stderr);
    assert!(!err.contains("measured rates"), "{err}");
    plant(&format!("v2/scalar/1t/{text_w}/{vision_w}/f32"));
    let o = priced();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    let est = err.lines().find(|l| l.starts_with("estimate:")).unwrap_or_else(|| panic!("no estimate: {err}"));
    assert!(est.contains("54 image tokens of a 66-token prompt") && est.contains("measured rates"), "{est}");
    assert!(est.contains("--image-max-side 64: 15 image tokens"), "{est}");
    // printed before the model loads
    assert!(err.find("estimate:").unwrap() < err.find("loaded in").unwrap(), "{err}");
    // and in the REPL, before /image encodes
    let env = [("XDG_CACHE_HOME", cache.path()), ("PIXTRAL_ISA", Path::new("scalar"))];
    let (_, err, c) = chat_with(&["-t", "1", "--no-history"], &root(), &format!("/image {}\n", red_circle()), &env);
    assert_eq!(c, 0, "{err}");
    let est = err.lines().find(|l| l.starts_with("estimate:")).unwrap_or_else(|| panic!("no estimate: {err}"));
    assert!(est.contains("54 image tokens of a 70-token prompt"), "{est}");
    assert!(err.find("estimate:").unwrap() < err.find("attached").unwrap(), "{err}");
}

#[test]
fn convert_names_its_layout_first_and_refuses_an_mmproj_name_as_its_output() {
    let dir = TempDir::new("daily-convert");
    let src = common::fixtures().join("tiny/hf");
    let bad = dir.join("x.mmproj.gguf");
    let o = px(&["convert", src.to_str().unwrap(), "-o", bad.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("-o names the text GGUF"), "{}", text(&o.stderr));
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written");
    let out = dir.join("x.gguf");
    let o = px(&["convert", src.to_str().unwrap(), "-o", out.to_str().unwrap()], None);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("HF (Llava) checkpoint,") && err.contains("wrote "), "{err}");
}

/// `--vit-precision`: bf16 answers about the picture as f32 does (the demo model's greedy answer), or says it
/// fell back to f32 where the CPU has no BF16 dot products; a bad value is a usage error before the model loads.
#[test]
fn vit_precision_bf16_answers_like_f32_or_says_it_fell_back() {
    let img = red_circle();
    let q = ["--image", &img, "-p", "What shape is this?"];
    let (f32_answer, _, code) = run(&q, None);
    assert_eq!(code, 0);
    let (answer, err, code) = run(&[&q[..], &["--vit-precision", "bf16"]].concat(), None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(answer, f32_answer, "{err}");
    let bf16 = pixtral::model::vision::VitPrecision::Bf16.available();
    assert_eq!(err.contains("--vit-precision bf16:"), !bf16, "{err}");
    assert_eq!(err.contains("vision tower: bf16 matmuls"), bf16, "{err}");
    let (_, err, code) = run(&[&q[..], &["--vit-precision", "f64"]].concat(), None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected f32 or bf16") && !err.contains("loaded in"), "{err}");
}
