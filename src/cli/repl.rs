//! `pixtral chat`: the REPL. A thin loop over the library's [`Conversation`]: read a message (line editing and
//! history when stdin is a terminal, plain lines otherwise), run a /command or answer it, stream the answer.
//!
//! Ctrl-C at the prompt clears the line; during an answer it stops the answer (SIGINT sets the cancel flag the
//! session polls), and the partial answer stays in the conversation. Ctrl-D or /quit leaves.
//!
//! Piped (stdin not a terminal), it is a script: a command that fails (an `/image` or `/load` that cannot be
//! done) ends it with that error's exit code, so no message goes out without what it was meant to carry.

use std::borrow::Cow;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pixtral::{Completion, Conversation, EncodedImage, FinishReason, GenerateOptions, ImageSource, SamplerParams};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;

use crate::input::{file_uri, shell_words};
use crate::term::Stream;
use crate::ui::{report, Ui, UiArgs};
use crate::{ModelArgs, SamplingArgs};

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Vision GGUF (default: STEM.mmproj.gguf next to the model); without one, /image is unavailable.
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Longest image side before patching, at least the patch size (default and maximum: the model's).
    #[arg(long, value_parser = crate::parse_positive)]
    image_max_side: Option<usize>,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Maximum tokens per answer; -1: until EOS or a full context.
    #[arg(short = 'n', long, default_value_t = 512, allow_negative_numbers = true, value_parser = crate::parse_n_predict)]
    n_predict: i64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// History file (default: $XDG_STATE_HOME/pixtral/history or ~/.local/state/pixtral/history).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Keep no history file.
    #[arg(long)]
    no_history: bool,
    #[command(flatten)]
    ui: UiArgs,
}

const HELP: &str = "\
Type a message and press Enter. End a line with \\ to continue it on the next line, or put the message
between two lines holding only \"\"\". Pasting the path of an image file (or a file:// URI) attaches it.
Tab completes /commands and paths.
  /image PATH...       attach images to the next message (quote or escape spaces as in a shell)
  /system [TEXT]       set the system prompt (no text: remove it)
  /reset               start a new conversation (keeps the system prompt)
  /undo                drop the last exchange (your message and the answer)
  /save FILE           save the conversation as JSON (images by absolute path)
  /load FILE           load a saved conversation
  /stats               context used, speed of the last answer, what the KV cache saved
  /set [KEY VALUE]     show or set temp, top_k, top_p, min_p, repeat_penalty, seed, n (max answer tokens)
  /help                this text
  /quit                leave (also Ctrl-D)
Ctrl-C stops an answer (what was said stays); at the prompt it clears the line.";

const COMMANDS: &[&str] =
    &["/image", "/system", "/reset", "/undo", "/save", "/load", "/stats", "/set", "/help", "/quit"];

/// Line-editor help: Tab completes `/commands` at the start of a line and paths after them (or anywhere
/// else, for a pasted image path); the prompt is coloured when the terminal takes colour.
struct Helper {
    files: FilenameCompleter,
    colour: bool,
}

impl Completer for Helper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _: &rustyline::Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        if head.starts_with('/') && !head.contains(char::is_whitespace) {
            let c = COMMANDS.iter().filter(|c| c.starts_with(head));
            return Ok((0, c.map(|c| Pair { display: c.to_string(), replacement: format!("{c} ") }).collect()));
        }
        self.files.complete_path(line, pos)
    }
}

impl Hinter for Helper {
    type Hint = String;
}

impl Highlighter for Helper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        if self.colour {
            Cow::Owned(format!("\x1b[1;32m{prompt}\x1b[0m"))
        } else {
            Cow::Borrowed(prompt)
        }
    }
}

impl Validator for Helper {}
impl rustyline::Helper for Helper {}

/// Where input comes from: a line editor on a terminal, plain lines from a pipe.
enum Input {
    Editor { ed: Box<rustyline::Editor<Helper, FileHistory>>, history: Option<PathBuf> },
    Lines(std::io::BufReader<std::io::Stdin>),
}

enum Line {
    Text(String),
    /// Ctrl-C at the prompt
    Cleared,
    Eof,
}

fn default_history() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("pixtral").join("history"))
}

impl Input {
    fn new(history: Option<PathBuf>, ui: &Ui) -> anyhow::Result<Input> {
        if !std::io::stdin().is_terminal() {
            return Ok(Input::Lines(std::io::BufReader::new(std::io::stdin())));
        }
        let cfg = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(10_000)?
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut ed = Box::new(rustyline::Editor::with_config(cfg)?);
        ed.set_helper(Some(Helper { files: FilenameCompleter::new(), colour: Stream::stdout().colour }));
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // a missing file is a first run; anything else is worth a word
            if let Err(e) = ed.load_history(h) {
                if !matches!(&e, ReadlineError::Io(io) if io.kind() == std::io::ErrorKind::NotFound) {
                    ui.info(format!("warning: history {}: {e}", h.display()));
                }
            }
        }
        Ok(Input::Editor { ed, history })
    }

    fn line(&mut self, prompt: &str) -> Line {
        match self {
            Input::Editor { ed, .. } => match ed.readline(prompt) {
                Ok(s) => Line::Text(s),
                Err(ReadlineError::Interrupted) => Line::Cleared,
                Err(ReadlineError::Eof) => Line::Eof,
                Err(e) => {
                    eprintln!("warning: could not read the line ({e}); try again");
                    Line::Cleared
                }
            },
            Input::Lines(r) => {
                let mut buf = Vec::new();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) => Line::Eof,
                    Ok(_) => {
                        while buf.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                            buf.pop();
                        }
                        Line::Text(crate::input::lossy(buf, "the input"))
                    }
                    Err(e) => {
                        eprintln!("error: reading stdin: {e}");
                        Line::Eof
                    }
                }
            }
        }
    }

    /// One message: a line, lines joined by a trailing `\`, or a `"""` block.
    fn message(&mut self) -> Line {
        let mut text = match self.line(">>> ") {
            Line::Text(s) => s,
            other => return other,
        };
        if text.trim() == "\"\"\"" {
            text.clear();
            loop {
                match self.line("... ") {
                    Line::Text(s) if s.trim() == "\"\"\"" => break,
                    Line::Text(s) => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(&s);
                    }
                    Line::Cleared => return Line::Cleared,
                    Line::Eof => break,
                }
            }
        } else {
            while text.ends_with('\\') {
                text.pop();
                text.push('\n');
                match self.line("... ") {
                    Line::Text(s) => text.push_str(&s),
                    Line::Cleared => return Line::Cleared,
                    Line::Eof => break,
                }
            }
        }
        if let Input::Editor { ed, history } = self {
            if !text.trim().is_empty() {
                let _ = ed.add_history_entry(text.as_str());
                // saved at once: a closed terminal never takes the session's lines with it
                if let Some(h) = history {
                    let _ = ed.save_history(h);
                }
            }
        }
        Line::Text(text)
    }

    fn save_history(&mut self) {
        if let Input::Editor { ed, history: Some(h) } = self {
            if let Err(e) = ed.save_history(h) {
                eprintln!("warning: could not save the history to {}: {e}", h.display());
            }
        }
    }
}

/// A line that starts with the path of an existing image file and goes on with a message (`photo.png What is
/// this?`, as Ollama takes it): the path and the message. The first word is the shortest prefix that a shell
/// would take as one word, so quotes and escapes work and an apostrophe later in the message does not matter.
fn image_then_text(line: &str) -> Option<(PathBuf, &str)> {
    let line = line.trim();
    for (i, c) in line.char_indices() {
        if !c.is_whitespace() {
            continue;
        }
        if let Ok(w) = shell_words(&line[..i]) {
            if w.len() == 1 {
                let rest = line[i..].trim();
                return Some((pasted_image(&line[..i])?, rest)).filter(|(_, r)| !r.is_empty());
            }
        }
    }
    None
}

/// A line that is just the path of an existing image file, as a terminal pastes a dragged file: plain, quoted
/// or backslash-escaped as a shell would take it, or a `file://` URI.
fn pasted_image(line: &str) -> Option<PathBuf> {
    let words = shell_words(line.trim()).ok()?;
    let [w] = words.as_slice() else { return None };
    let p = file_uri(w);
    let ext = p.extension()?.to_str()?.to_ascii_lowercase();
    (["png", "jpg", "jpeg", "webp", "gif"].contains(&ext.as_str()) && p.is_file()).then_some(p)
}

struct Repl<'m> {
    ui: Ui,
    /// stderr (everything but answers): cleaned and coloured on a terminal
    err: Stream,
    engine: &'m pixtral::Engine,
    model: &'m pixtral::Model,
    image_max_side: Option<usize>,
    session: pixtral::Session<'m>,
    conv: Conversation,
    /// sampling as set; answer k (from 0, counted since the seed was set) draws with seed + k, so answers differ
    /// and a session replays with the same --seed
    params: SamplerParams,
    answers: u64,
    n_predict: usize,
    stop: Vec<String>,
    /// --context-shift: drop the oldest whole exchanges to make room
    shift: bool,
    /// images attached to the next message
    attached: Vec<Arc<EncodedImage>>,
    /// the last answer, while the conversation still ends with it
    last: Option<Completion>,
    ctx: usize,
}

/// A /command's outcome: done, or failed (in a piped script that ends the run).
type Done = anyhow::Result<()>;

impl Repl<'_> {
    fn error(&self, e: &anyhow::Error) {
        eprintln!("{} {}", self.err.paint("1;31", "error:"), self.err.text(&report(e)));
    }

    fn note(&self, msg: impl std::fmt::Display) {
        eprintln!("{}", self.err.text(&msg.to_string()));
    }

    fn encode_image(&self, path: &Path) -> anyhow::Result<Arc<EncodedImage>> {
        let Some(vm) = &self.engine.vision else {
            crate::ui::usage!(
                "no mmproj next to {}: restart with --mmproj, or convert the checkpoint with its vision tower",
                self.engine.path.display()
            )
        };
        // read once (a pipe or FIFO cannot be read twice), counted from the header before any pixel is decoded
        let mut head = self.engine.inspect(&ImageSource::Path(path.to_path_buf()), self.image_max_side)?;
        let (w, h, gw, gh, need) = (head.width, head.height, head.grid_w, head.grid_h, head.n_tokens());
        let attached: usize = self.attached.iter().map(|a| (a.grid_w + 1) * a.grid_h).sum();
        let have = self.conv.prompt_tokens(&self.model.tokenizer)? + attached;
        if self.shift {
            // older exchanges can be dropped, but the next message's own images must fit with a frame and room
            // for an answer
            let alone = attached + need + 8 + self.answer_room();
            if alone > self.ctx {
                crate::ui::usage!(
                    "{}: {w}x{h} needs {need} tokens ({gw}x{gh} patches); with the {attached} of the images already \
                     attached and room for an answer that is {alone} of the context's {} even after dropping every \
                     older exchange: restart with a smaller --image-max-side or a larger --ctx-size",
                    path.display(),
                    self.ctx
                );
            }
        } else if have + need > self.ctx {
            crate::ui::usage!(
                "{}: {w}x{h} needs {need} tokens ({gw}x{gh} patches) but only {} of the context's {} are free: \
                 /reset, or restart with a smaller --image-max-side, a larger --ctx-size or --context-shift",
                path.display(),
                self.ctx.saturating_sub(have),
                self.ctx
            );
        }
        let threads = crate::plan::threads_in_use();
        let m = self.model;
        let pricing = crate::pricing::Pricing::new(
            &m.cfg,
            &m.file.header,
            &vm.cfg,
            vm.text_dim,
            &vm.file.header,
            threads,
            vm.precision,
        );
        // the new image's tokens and the message around it, after what the cache already holds
        if let Some(line) = pricing.line(&[(w, h)], self.image_max_side, need + 16, have) {
            self.ui.info(line);
        }
        self.ui.info(crate::pricing::image_line(path, w, h, gw, gh));
        // saved conversations name images by absolute path, so /load finds them from any directory
        head.path = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
        let enc = crate::run::encode_with_bar(self.engine, std::slice::from_ref(&head), Vec::new(), &self.ui)?;
        if enc.cached > 0 {
            self.ui.detail("[the image was in the cache of encoded images]");
        }
        Ok(enc.images[0].clone())
    }

    fn attach(&mut self, paths: &[String]) -> Done {
        if paths.is_empty() {
            crate::ui::usage!("usage: /image PATH...");
        }
        for p in paths {
            let path = file_uri(p);
            let img = self.encode_image(&path)?;
            self.attached.push(img);
            self.note(format!("attached {} ({} image(s) for the next message)", path.display(), self.attached.len()));
        }
        Ok(())
    }

    fn set(&mut self, args: &[String]) -> Done {
        let p = &mut self.params;
        match args {
            [] => {}
            [k, v] => {
                let whole = |v: &str| v.parse::<u64>().map_err(|_| format!("{v:?} is not a whole number ≥ 0"));
                let set: Result<(), String> = match k.as_str() {
                    "temp" | "temperature" => crate::parse_temp(v).map(|x| p.temp = x),
                    "top_k" => whole(v).map(|x| p.top_k = x as usize),
                    "top_p" => crate::parse_unit(v).map(|x| p.top_p = x),
                    "min_p" => crate::parse_unit(v).map(|x| p.min_p = x),
                    "repeat_penalty" => crate::parse_penalty(v).map(|x| p.repeat_penalty = x),
                    "seed" => crate::parse_seed(v).map(|x| {
                        p.seed = x as u64;
                        self.answers = 0;
                    }),
                    "n" | "n_predict" => crate::parse_n_predict(v).map(|x| self.n_predict = crate::run::max_tokens(x)),
                    _ => crate::ui::usage!("unknown setting {k:?}; /set lists them"),
                };
                if let Err(e) = set {
                    crate::ui::usage!("/set {k}: {e}");
                }
            }
            _ => crate::ui::usage!("usage: /set KEY VALUE (or /set to list)"),
        }
        let p = &self.params;
        eprintln!(
            "settings: temp {} top_k {} top_p {} min_p {} repeat_penalty {} seed {} n {}",
            p.temp,
            p.top_k,
            p.top_p,
            p.min_p,
            p.repeat_penalty,
            p.seed,
            if self.n_predict == usize::MAX { "-1".to_string() } else { self.n_predict.to_string() }
        );
        Ok(())
    }

    /// The conversation as it stands (not the cache, which follows it lazily at the next answer).
    fn stats(&self) -> Done {
        let used = if self.conv.messages().is_empty() { 0 } else { self.conv.prompt_tokens(&self.model.tokenizer)? };
        let total = self.ctx;
        eprintln!("context: {used}/{total} tokens ({:.1}%)", 100.0 * used as f64 / total.max(1) as f64);
        eprintln!("conversation: {} messages, {} images", self.conv.messages().len(), self.conv.images().count());
        let Some(r) = &self.last else {
            eprintln!("no answer yet");
            return Ok(());
        };
        let (u, t) = (&r.usage, &r.timings);
        let prefilled = u.prompt_tokens - u.cached_tokens;
        let pp = prefilled as f64 / t.prompt_s.max(1e-9);
        eprintln!(
            "last answer: prompt {} tokens: {} found in the KV cache, {prefilled} evaluated in {:.2} s ({:.1} tok/s)",
            u.prompt_tokens, u.cached_tokens, t.prompt_s, pp
        );
        eprintln!(
            "             answer {} tokens in {:.2} s ({:.1} tok/s)",
            u.completion_tokens,
            t.generation_s,
            u.completion_tokens as f64 / t.generation_s.max(1e-9)
        );
        if u.cached_tokens > 0 {
            eprintln!(
                "the cache saved evaluating {} tokens (~{:.2} s at this turn's prompt speed)",
                u.cached_tokens,
                u.cached_tokens as f64 / pp.max(1e-9)
            );
        }
        Ok(())
    }

    fn save(&self, path: &Path) -> Done {
        let json = serde_json::to_string_pretty(&self.conv.to_json(&self.model.tokenizer))?;
        std::fs::write(path, json + "\n").map_err(|e| pixtral::Error::Io { path: path.to_path_buf(), source: e })?;
        eprintln!("saved {} messages to {}", self.conv.messages().len(), path.display());
        Ok(())
    }

    /// Load a saved conversation; image paths that are relative are taken from the JSON file's folder.
    fn load(&mut self, path: &Path) -> Done {
        let io = |e| pixtral::Error::Io { path: path.to_path_buf(), source: e };
        let text = std::fs::read_to_string(path).map_err(io)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let conv = Conversation::from_json(&v, |p| {
            let p = if p.is_relative() { dir.join(p) } else { p.to_path_buf() };
            self.encode_image(&p)
                .map_err(|e| pixtral::Error::Invalid(format!("{}: image {}", path.display(), report(&e))))
        })
        .map_err(|e| match e {
            pixtral::Error::Invalid(m) if m.starts_with(&path.display().to_string()) => pixtral::Error::Invalid(m),
            e => pixtral::Error::Invalid(format!("{}: {e}", path.display())),
        })?;
        eprintln!("loaded {} messages from {}", conv.messages().len(), path.display());
        // the session keeps its cache: the next turn reuses whatever prefix matches
        self.conv = conv;
        self.last = None;
        Ok(())
    }

    /// --context-shift: before a message is sent, drop the oldest whole exchanges (user message, its images
    /// and the answers) until the conversation and room for an answer fit; never part of one, never the new one.
    fn make_room(&mut self) -> Done {
        let tok = &self.model.tokenizer;
        let room = self.answer_room();
        // the new message alone must fit, or nothing is dropped for nothing
        let last = self.conv.messages().last().cloned().into_iter().collect::<Vec<_>>();
        let alone = pixtral::chat::encode_chat(tok, self.conv.system.as_deref(), &last)?.len();
        if alone + room > self.ctx {
            crate::ui::usage!(
                "this message and its images need {alone} tokens, and {room} more for an answer, but the context \
                 holds {}: send fewer or smaller images, or restart with a larger --ctx-size",
                self.ctx
            );
        }
        let mut dropped = (0, 0, 0);
        while self.conv.prompt_tokens(tok)? + room > self.ctx {
            let Some((tokens, images)) = self.conv.drop_oldest_exchange(tok)? else { break };
            dropped = (dropped.0 + 1, dropped.1 + tokens, dropped.2 + images);
        }
        if dropped.0 > 0 {
            self.note(format!(
                "[context shift: dropped the oldest {} exchange(s) ({} tokens, {} image(s)) to make room]",
                dropped.0, dropped.1, dropped.2
            ));
        }
        Ok(())
    }

    /// Tokens kept free for an answer when --context-shift makes room: -n, at most a quarter of the context.
    fn answer_room(&self) -> usize {
        self.n_predict.min(self.ctx / 4).max(1)
    }

    /// Send `text` with the attached images and stream the answer.
    fn respond(&mut self, text: &str) -> Done {
        let images = std::mem::take(&mut self.attached);
        self.conv.push_user(text, images);
        if self.shift {
            if let Err(e) = self.make_room() {
                self.conv.undo();
                return Err(e);
            }
        }
        let cancel = pixtral::gguf::os::interrupt_flag();
        cancel.store(false, Ordering::SeqCst);
        let mut out = crate::ui::AnswerOut::new();
        let mut opts = GenerateOptions {
            max_tokens: self.n_predict,
            stop: self.stop.clone(),
            sampling: SamplerParams { seed: self.params.seed.wrapping_add(self.answers), ..self.params.clone() },
            // a failed write (a closed stdout) ends the answer; the error ends the REPL below
            on_token: Some(Box::new(|t: &pixtral::TokenEvent| out.write(t.text))),
            cancel: Some(cancel),
            ..Default::default()
        };
        let r = self.conv.respond(&mut self.session, &mut opts);
        drop(opts);
        self.answers += 1;
        if r.is_ok() {
            out.write("\n");
        }
        out.result()?;
        match r {
            Ok(r) => {
                match (r.finish_reason, r.context_full) {
                    (FinishReason::Cancelled, _) => self.note("[stopped; the partial answer stays in the conversation]"),
                    (FinishReason::Length, true) if self.shift => {
                        self.note("[the context is full: the next message drops the oldest exchanges]")
                    }
                    (FinishReason::Length, true) => self.note(
                        "[the context is full: /reset or /undo to make room, or restart with a larger --ctx-size or --context-shift]",
                    ),
                    (FinishReason::Length, false) => self.note(format!("[answer cut at {} tokens: /set n to change]", self.n_predict)),
                    (FinishReason::Stop, _) => {}
                }
                let u = &r.usage;
                self.ui.detail(format!(
                    "[{} prompt tokens ({} from the cache), {} answer tokens, {:.1} tok/s]",
                    u.prompt_tokens,
                    u.cached_tokens,
                    u.completion_tokens,
                    u.completion_tokens as f64 / r.timings.generation_s.max(1e-9)
                ));
                self.last = Some(r);
                let used = self.conv.prompt_tokens(&self.model.tokenizer)?;
                let total = self.ctx;
                if used * 10 >= total * 9 && !self.shift {
                    self.note(format!(
                        "warning: the context is {:.0}% full ({used}/{total} tokens): /reset or /undo to make room, or restart with a larger --ctx-size",
                        100.0 * used as f64 / total as f64
                    ));
                }
                Ok(())
            }
            Err(e) => {
                // nothing was answered: the message goes, so it can be sent again
                self.conv.undo();
                match e {
                    pixtral::Error::Cancelled => {
                        self.note("[stopped before the answer began; the message was dropped]");
                        Ok(())
                    }
                    e => Err(anyhow::Error::new(e).context("the message was dropped")),
                }
            }
        }
    }

    /// One line of input: a /command, a pasted image path, or a message.
    fn line(&mut self, text: &str) -> anyhow::Result<bool> {
        let trimmed = text.trim();
        if let Some(path) = pasted_image(trimmed) {
            self.attach(&[path.to_string_lossy().into_owned()])?;
            return Ok(true);
        }
        // a command's first word is never an image file, so this takes only `photo.png question`
        if let Some((path, rest)) = image_then_text(trimmed) {
            self.attach(&[path.to_string_lossy().into_owned()])?;
            self.respond(rest)?;
            return Ok(true);
        }
        let Some(cmd) = trimmed.strip_prefix('/') else {
            self.respond(text)?;
            return Ok(true);
        };
        let (name, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let args = match shell_words(rest) {
            Ok(a) => a,
            Err(e) => crate::ui::usage!("/{name}: {e}"),
        };
        match name {
            "quit" | "exit" | "q" => return Ok(false),
            "help" | "?" => eprintln!("{HELP}"),
            "image" | "img" => self.attach(&args)?,
            "system" => {
                let s = rest.trim();
                self.conv.system = (!s.is_empty()).then(|| s.to_string());
                eprintln!("{}", if s.is_empty() { "system prompt removed" } else { "system prompt set" });
            }
            "reset" | "clear" => {
                self.conv.clear();
                self.attached.clear();
                self.session.reset();
                self.last = None;
                eprintln!("new conversation (context 0/{})", self.ctx);
            }
            "undo" => {
                if self.conv.undo() {
                    self.last = None;
                    eprintln!("dropped the last exchange ({} messages left)", self.conv.messages().len());
                } else {
                    eprintln!("nothing to undo");
                }
            }
            "save" | "load" if args.len() != 1 => crate::ui::usage!("usage: /{name} FILE"),
            "save" => self.save(&file_uri(&args[0]))?,
            "load" => self.load(&file_uri(&args[0]))?,
            "stats" => self.stats()?,
            "set" => self.set(&args)?,
            _ => crate::ui::usage!("unknown command /{name}; /help lists the commands"),
        }
        Ok(true)
    }
}

pub fn chat(a: ChatArgs) -> anyhow::Result<()> {
    let ui = Ui::new(a.ui);
    let plan = crate::plan::plan(&a.m, a.mmproj.as_deref(), false, &ui)?;
    if let Some(v) = &plan.vision {
        // an image budget below one patch is refused now, not at the first /image
        pixtral::runtime::engine::preprocessing(Some(&v.cfg), a.image_max_side)?;
    }
    let ctx = plan.ctx;
    let l = crate::plan::load(plan, &a.m, true, &ui)?;
    let engine = &l.engine;
    let model = &engine.model;
    match &engine.vision {
        Some(vm) => ui.info(format!(
            "vision: {} (images up to {} px a side, {}x{} patches)",
            vm.file.path.display(),
            vm.cfg.image_size,
            vm.cfg.patch_size,
            vm.cfg.patch_size
        )),
        None => {
            ui.info(format!("vision: no mmproj at {}: text only", pixtral::gguf::mmproj_path(&engine.path).display()))
        }
    }
    let params = crate::run::sampler_params(&a.sampling, model.tokenizer.eos);
    ui.info(format!("sampling: temperature {}, seed {}; type /help for commands", params.temp, params.seed));
    // the REPL makes room by dropping whole exchanges, never with the ring (which would cut images)
    let mut opts = crate::plan::session_options(&a.m, ctx, 1);
    opts.context_shift = false;
    let mut session = engine.session(opts)?;
    crate::run::prefill_bar(&mut session, model, &ui);
    let n_predict = crate::run::max_tokens(a.n_predict);
    let mut repl = Repl {
        ui,
        err: Stream::stderr(),
        engine,
        model,
        image_max_side: a.image_max_side,
        session,
        conv: Conversation::new(a.system.clone()),
        params,
        answers: 0,
        n_predict,
        stop: a.sampling.stop.clone(),
        shift: a.m.context_shift,
        attached: Vec::new(),
        last: None,
        ctx,
    };
    let history = if a.no_history { None } else { a.history.clone().or_else(default_history) };
    let mut input = Input::new(history, &ui)?;
    let scripted = matches!(input, Input::Lines(_));
    pixtral::gguf::os::install_sigint_handler();
    let mut result = Ok(());
    loop {
        let text = match input.message() {
            Line::Text(t) => t,
            Line::Cleared => continue,
            Line::Eof => break,
        };
        if text.trim().is_empty() {
            continue;
        }
        match repl.line(&text) {
            Ok(true) => {}
            Ok(false) => break,
            // piped, a failed command ends the script: what follows may depend on it; and nobody reads answers
            // once stdout is gone
            Err(e) if scripted || e.is::<crate::ui::Output>() => {
                result = Err(e);
                break;
            }
            Err(e) => repl.error(&e),
        }
    }
    input.save_history();
    result
}
