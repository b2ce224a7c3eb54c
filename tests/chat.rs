//! `pixtral chat` driven through a pseudo-terminal, as a person uses it, and the library's `Conversation`
//! (KV reuse across turns gives what a fresh evaluation of the whole conversation gives).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::pty::Pty;
use common::TempDir;

const T: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn demo() -> PathBuf {
    root().join("examples/demo/pixtral-demo.gguf")
}

fn chat(dir: &Path, args: &[&str]) -> Pty {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pixtral"));
    cmd.current_dir(root()).arg("chat").args(args).env("XDG_STATE_HOME", dir).env_remove("PIXTRAL_ISA");
    Pty::spawn(cmd)
}

/// Wait for the next prompt; the text up to it must contain `want`.
fn turn(p: &mut Pty, want: &str) -> String {
    let t = p.expect(">>> ", T);
    assert!(t.contains(want), "expected {want:?} before the next prompt; got:\n{t}");
    t
}

/// The number before `label` in `s`, e.g. "12 found in the KV cache".
fn number_before(s: &str, label: &str) -> usize {
    let i = s.find(label).unwrap_or_else(|| panic!("no {label:?} in {s:?}"));
    s[..i].split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn a_conversation_through_a_terminal() {
    let tmp = TempDir::new("chat-pty");
    let saved = tmp.join("conv.json");
    let saved = saved.to_str().unwrap();
    let mut p = chat(tmp.path(), &["--temp", "0", "-n", "32"]);
    let header = p.expect(">>> ", T);
    assert!(header.contains("using the demo model"), "{header}");
    assert!(header.contains("vision:"), "{header}");

    p.send("/image examples/red-circle.png\r");
    let att = p.expect(">>> ", T);
    assert!(att.contains("-> ") && att.contains("attached"), "{att}");
    p.send("What shape is this?\r");
    turn(&mut p, "A circle.");
    p.send("What colour is it?\r");
    turn(&mut p, "Red.");

    // the second turn evaluated only its own tokens
    p.send("/stats\r");
    let st = p.expect(">>> ", T);
    let reused = number_before(&st, "found in the KV cache");
    let evaluated = number_before(&st, "evaluated in");
    assert!(reused > 20 && evaluated < 20, "{st}");

    p.send(&format!("/save {saved}\r"));
    turn(&mut p, "saved 4 messages");
    p.send("/reset\r");
    turn(&mut p, "new conversation");
    p.send(&format!("/load {saved}\r"));
    turn(&mut p, "loaded 4 messages");
    p.send("/undo\r");
    turn(&mut p, "2 messages left");
    // after the undo the image is still the conversation's: ask the other question again
    p.send("Which colour is this shape?\r");
    turn(&mut p, "Red.");

    // Ctrl-C at the prompt throws the line away
    p.send("this line is never sent");
    p.send("\x03");
    p.expect(">>> ", T);
    p.send("/stats\r");
    turn(&mut p, "conversation: 4 messages, 1 images");

    // a multi-line message with a trailing backslash, then a pasted image path, each in a new conversation
    p.send("/reset\r");
    p.expect(">>> ", T);
    p.send("Hello\\\r");
    p.expect("... ", T);
    p.send("!\r");
    turn(&mut p, "Show me an image");
    p.send("/reset\r");
    p.expect(">>> ", T);
    p.send("examples/three-squares.png\r");
    turn(&mut p, "attached");
    p.send("How many shapes are there?\r");
    turn(&mut p, "3");

    p.send("\x04");
    assert!(p.wait(T).success(), "{}", p.out);
    let history = std::fs::read_to_string(tmp.join("pixtral/history")).unwrap();
    assert!(history.contains("What shape is this?") && history.contains("Hello\\n!"), "{history}");
}

#[test]
fn ctrl_c_stops_an_answer_and_the_conversation_goes_on() {
    let tmp = TempDir::new("chat-ctrl-c");
    let mut p = chat(tmp.path(), &["--ignore-eos", "-n", "100000", "-c", "100000", "--seed", "5", "--no-history"]);
    p.expect(">>> ", T);
    p.send("Tell me a story.\r");
    // the answer is streaming (the echo of the line, then some of the answer)
    p.expect("story.", T);
    p.expect(" ", T);
    std::thread::sleep(Duration::from_millis(300));
    p.send("\x03");
    assert!(p.expect(">>> ", T).contains("[stopped; the partial answer stays in the conversation]"));
    p.send("/stats\r");
    let st = p.expect(">>> ", T);
    assert!(st.contains("conversation: 2 messages"), "{st}");
    let answered = number_before(&st, "tokens in");
    assert!(answered > 0 && answered < 100000, "{st}");
    p.send("/set n 4\r");
    turn(&mut p, "seed 5 n 4");
    p.send("Hello\r");
    turn(&mut p, "answer cut at 4 tokens");
    p.send("/quit\r");
    assert!(p.wait(T).success());
}

#[test]
fn conversation_reuse_equals_a_fresh_evaluation() {
    use pixtral::model::kv_cache::KvType;
    use pixtral::{Conversation, EncodedImage, GenerateOptions, Model, SamplerParams, Session, SessionOptions};
    let model = Model::load(demo()).unwrap();
    let vm = pixtral::model::vision::VisionModel::load(pixtral::gguf::mmproj_path(&demo())).unwrap();
    let img = pixtral::image::load(&root().join("examples/blue-triangle.png")).unwrap();
    let pre = pixtral::image::preprocess(&img, &vm.preprocess_config(None));
    let image = EncodedImage::new(None, pre.grid_w, pre.grid_h, vm.encode(std::slice::from_ref(&pre)));
    let opts = SessionOptions { kv_type: KvType::F32, ..Default::default() };

    let mut session = Session::new(&model, opts.clone());
    let mut conv = Conversation::new(None);
    let greedy = || GenerateOptions { max_tokens: 16, sampling: SamplerParams::greedy(), ..Default::default() };
    conv.push_user("What shape is this?", vec![image.clone().into()]);
    let r1 = conv.respond(&mut session, &mut greedy()).unwrap();
    assert_eq!(r1.usage.cached_tokens, 0);
    assert_eq!(r1.text, "A triangle.");
    conv.push_user("What colour is it?", vec![]);
    let r2 = conv.respond(&mut session, &mut greedy()).unwrap();
    assert_eq!(r2.text, "Blue.");
    // the first turn (prompt + answer + EOS) was found in the cache
    assert_eq!(
        r2.usage.cached_tokens,
        r1.usage.cached_tokens + (r1.usage.prompt_tokens - r1.usage.cached_tokens) + r1.tokens.len()
    );
    let after_two = session.context_used().0;

    // the same conversation evaluated from scratch in a new session: the same answer
    let mut fresh = Session::new(&model, opts.clone());
    let mut again = conv.clone();
    again.undo();
    again.push_user("What colour is it?", vec![]);
    let r3 = again.respond(&mut fresh, &mut greedy()).unwrap();
    assert_eq!(r3.usage.cached_tokens, 0);
    assert_eq!(r3.tokens, r2.tokens);

    // undo + a new question rewinds the cache to the end of the first answer
    conv.undo();
    conv.push_user("Describe the image.", vec![]);
    let r4 = conv.respond(&mut session, &mut greedy()).unwrap();
    // (plus the [INST] that opened the dropped question: the new one starts the same way)
    assert_eq!(r4.usage.cached_tokens, r2.usage.cached_tokens + 1);
    assert_eq!(r4.text, "A blue triangle.");
    assert!(session.context_used().0 < after_two + 8);

    // a system prompt goes before the last user message (v3): first everything before it is reused, then,
    // when it moves on to the next message, reuse stops after that message's [INST]
    let fed = r4.usage.cached_tokens + (r4.usage.prompt_tokens - r4.usage.cached_tokens) + r4.tokens.len();
    conv.system = Some("Be brief.".into());
    conv.push_user("What shape is this?", vec![]);
    let r5 = conv.respond(&mut session, &mut greedy()).unwrap();
    assert_eq!(r5.usage.cached_tokens, fed);
    conv.push_user("And its colour?", vec![]);
    let r6 = conv.respond(&mut session, &mut greedy()).unwrap();
    assert_eq!(r6.usage.cached_tokens, fed + 1);
}

#[test]
fn piped_input_with_invalid_utf8_is_replaced_with_a_warning() {
    use std::io::Write;
    let (m, _) = common::tiny_gguf("hf", pixtral::quant::GgmlType::Q8_0, pixtral::quant::GgmlType::F16);
    let mut child = Command::new(env!("CARGO_BIN_EXE_pixtral"))
        .args(["chat", "-m", m.to_str().unwrap(), "--temp", "0", "-n", "4", "--no-history"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"caf\xc3 \xff\xfe hello\n/stats\n\"\"\"\nline one\nline two\n\"\"\"\n/stats\n").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("not valid UTF-8") && err.contains("U+FFFD"), "{err}");
    // two messages answered (the second a """ block), four messages in the conversation
    assert!(err.contains("conversation: 2 messages") && err.contains("conversation: 4 messages"), "{err}");
}
