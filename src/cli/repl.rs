//! `pixtral chat`: the REPL. A thin loop over the library's [`Conversation`]: read a message (line editing and
//! history when stdin is a terminal, plain lines otherwise), run a /command or answer it, stream the answer.
//!
//! Ctrl-C at the prompt clears the line; during an answer it stops the answer (SIGINT sets the cancel flag the
//! session polls), and the partial answer stays in the conversation. Ctrl-D or /quit leaves.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use pixtral::model::vision::VisionModel;
use pixtral::{Conversation, EncodedImage, FinishReason, Reply, Sampler, SamplerParams};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;

use crate::ui::{Ui, UiArgs};
use crate::{ModelArgs, SamplingArgs};

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Vision GGUF (default: STEM.mmproj.gguf next to the model); without one, /image is unavailable.
    #[arg(long)]
    mmproj: Option<PathBuf>,
    /// Longest image side before patching (default and maximum: the model's).
    #[arg(long)]
    image_max_side: Option<usize>,
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Maximum tokens per answer.
    #[arg(short = 'n', long, default_value_t = 512)]
    n_predict: usize,
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
between two lines holding only \"\"\". Pasting the path of an image file attaches it.
  /image PATH...       attach images to the next message
  /system [TEXT]       set the system prompt (no text: remove it)
  /reset               start a new conversation (keeps the system prompt)
  /undo                drop the last exchange (your message and the answer)
  /save FILE           save the conversation as JSON (images by path)
  /load FILE           load a saved conversation
  /stats               context used, speed of the last turn, what the KV cache saved
  /set [KEY VALUE]     show or set temp, top_k, top_p, min_p, repeat_penalty, seed, n (max answer tokens)
  /help                this text
  /quit                leave (also Ctrl-D)
Ctrl-C stops an answer (what was said stays); at the prompt it clears the line.";

/// Where input comes from: a line editor on a terminal, plain lines from a pipe.
enum Input {
    Editor { ed: Box<rustyline::Editor<(), FileHistory>>, history: Option<PathBuf> },
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
        let cfg = rustyline::Config::builder().auto_add_history(false).max_history_size(10_000)?.build();
        let mut ed = Box::new(rustyline::Editor::with_config(cfg)?);
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
                        Line::Text(lossy(buf))
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
        if let Input::Editor { ed, .. } = self {
            if !text.trim().is_empty() {
                let _ = ed.add_history_entry(text.as_str());
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

/// Bytes to text; invalid UTF-8 is replaced (U+FFFD) with a warning, never a panic.
fn lossy(buf: Vec<u8>) -> String {
    match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: the input was not valid UTF-8; invalid bytes were replaced with U+FFFD");
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    }
}

/// Words of a command line; "double quotes" group words with spaces.
fn words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// A line that is just the path of an existing image file (as a terminal pastes a dragged file).
fn pasted_image(line: &str) -> Option<PathBuf> {
    let t = line.trim().trim_matches(|c| c == '\'' || c == '"');
    let p = Path::new(t);
    let ext = p.extension()?.to_str()?.to_ascii_lowercase();
    (["png", "jpg", "jpeg", "webp", "gif"].contains(&ext.as_str()) && p.is_file()).then(|| p.to_path_buf())
}

struct Repl<'m> {
    ui: Ui,
    model: &'m pixtral::Model,
    model_path: PathBuf,
    vision: Option<VisionModel>,
    image_max_side: Option<usize>,
    session: pixtral::Session<'m>,
    conv: Conversation,
    params: SamplerParams,
    sampler: Sampler,
    n_predict: usize,
    /// images attached to the next message
    attached: Vec<EncodedImage>,
    last: Option<Reply>,
    ctx: usize,
}

impl Repl<'_> {
    fn encode_image(&self, path: &Path) -> anyhow::Result<EncodedImage> {
        let Some(vm) = &self.vision else {
            anyhow::bail!(
                "no mmproj next to {}: restart with --mmproj, or convert the checkpoint with its vision tower",
                self.model_path.display()
            )
        };
        let cfg = vm.preprocess_config(self.image_max_side);
        // counted from the header before any pixel is decoded
        let (w, h) = pixtral::image::dimensions(path, &pixtral::image::ImageLimits::default())?;
        let (gw, gh) = pixtral::image::grid(w, h, cfg.max_side, cfg.patch);
        let need = (gw + 1) * gh;
        let have = self.conv.prompt_tokens(&self.model.tokenizer)?
            + self.attached.iter().map(|a| (a.grid_w + 1) * a.grid_h).sum::<usize>();
        if have + need > self.ctx {
            anyhow::bail!(
                "{}: {w}x{h} needs {need} tokens ({gw}x{gh} patches) but only {} of the context's {} are free: \
                 /reset, or restart with a smaller --image-max-side or a larger --ctx-size",
                path.display(),
                self.ctx.saturating_sub(have),
                self.ctx
            );
        }
        let pre = crate::prepare_image(&cfg, path, &self.ui)?;
        let (embeds, _) = crate::encode_with_bar(vm, std::slice::from_ref(&pre), &self.ui);
        Ok(EncodedImage { path: Some(path.to_path_buf()), grid_w: pre.grid_w, grid_h: pre.grid_h, embeds })
    }

    fn attach(&mut self, paths: &[String]) {
        if paths.is_empty() {
            eprintln!("usage: /image PATH...");
        }
        for p in paths {
            match self.encode_image(Path::new(p)) {
                Ok(img) => {
                    self.attached.push(img);
                    eprintln!("attached {p} ({} image(s) for the next message)", self.attached.len());
                }
                Err(e) => eprintln!("error: {}", crate::ui::report(&e)),
            }
        }
    }

    fn set(&mut self, args: &[String]) {
        let p = &mut self.params;
        match args {
            [] => {}
            [k, v] => {
                let ok = match k.as_str() {
                    "temp" | "temperature" => v.parse().map(|x| p.temp = x).is_ok(),
                    "top_k" => v.parse().map(|x| p.top_k = x).is_ok(),
                    "top_p" => v.parse().map(|x| p.top_p = x).is_ok(),
                    "min_p" => v.parse().map(|x| p.min_p = x).is_ok(),
                    "repeat_penalty" => v.parse().map(|x| p.repeat_penalty = x).is_ok(),
                    "seed" => v.parse().map(|x| p.seed = x).is_ok(),
                    "n" | "n_predict" => v.parse().map(|x| self.n_predict = x).is_ok(),
                    _ => {
                        eprintln!("unknown setting {k:?}; /set lists them");
                        return;
                    }
                };
                if !ok {
                    eprintln!("{v:?} is not a valid value for {k}");
                    return;
                }
            }
            _ => {
                eprintln!("usage: /set KEY VALUE (or /set to list)");
                return;
            }
        }
        self.sampler = Sampler::new(self.params.clone());
        let p = &self.params;
        eprintln!(
            "settings: temp {} top_k {} top_p {} min_p {} repeat_penalty {} seed {} n {}",
            p.temp, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.seed, self.n_predict
        );
    }

    fn stats(&self) {
        let (used, total) = self.session.context_used();
        eprintln!("context: {used}/{total} tokens ({:.1}%)", 100.0 * used as f64 / total.max(1) as f64);
        eprintln!("conversation: {} messages, {} images", self.conv.messages().len(), self.conv.images().count());
        let Some(r) = &self.last else {
            eprintln!("no answer yet");
            return;
        };
        let g = &r.generation;
        let pp = r.prefilled as f64 / g.prompt_seconds.max(1e-9);
        eprintln!(
            "last turn: prompt {} tokens: {} found in the KV cache, {} evaluated in {:.2} s ({:.1} tok/s)",
            r.reused + r.prefilled,
            r.reused,
            r.prefilled,
            g.prompt_seconds,
            pp
        );
        eprintln!(
            "           answer {} tokens in {:.2} s ({:.1} tok/s)",
            g.tokens.len(),
            g.gen_seconds,
            g.tokens.len() as f64 / g.gen_seconds.max(1e-9)
        );
        if r.reused > 0 {
            eprintln!(
                "the cache saved evaluating {} tokens (~{:.2} s at this turn's prompt speed)",
                r.reused,
                r.reused as f64 / pp.max(1e-9)
            );
        }
    }

    fn save(&self, path: &str) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(&self.conv.to_json(&self.model.tokenizer))?;
        std::fs::write(path, json + "\n").map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        eprintln!("saved {} messages to {path}", self.conv.messages().len());
        Ok(())
    }

    fn load(&mut self, path: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let conv = Conversation::from_json(&v, |p| {
            self.encode_image(p).map_err(|e| pixtral::Error::Invalid(format!("{path}: image {}: {e:#}", p.display())))
        })
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        eprintln!("loaded {} messages from {path}", conv.messages().len());
        // the session keeps its cache: the next turn reuses whatever prefix matches
        self.conv = conv;
        Ok(())
    }

    /// Send `text` with the attached images and stream the answer.
    fn respond(&mut self, text: &str) {
        let images = std::mem::take(&mut self.attached);
        self.conv.push_user(text, images);
        let cancel = pixtral::convert::os::interrupt_flag();
        cancel.store(false, Ordering::SeqCst);
        let stdout = std::io::stdout();
        let r = self.conv.respond(&mut self.session, &mut self.sampler, self.n_predict, Some(cancel), |piece| {
            let mut o = stdout.lock();
            let _ = o.write_all(piece.as_bytes());
            let _ = o.flush();
            true
        });
        match r {
            Ok(r) => {
                println!();
                let g = &r.generation;
                match (g.finish, g.context_full) {
                    (FinishReason::Cancelled, _) => {
                        eprintln!("[stopped; the partial answer stays in the conversation]")
                    }
                    (FinishReason::Length, true) => {
                        eprintln!(
                            "[the context is full: /reset or /undo to make room, or restart with a larger --ctx-size]"
                        )
                    }
                    (FinishReason::Length, false) => {
                        eprintln!("[answer cut at {} tokens: /set n to change]", self.n_predict)
                    }
                    (FinishReason::Stop, _) => {}
                }
                self.ui.detail(format!(
                    "[{} prompt tokens ({} from the cache), {} answer tokens, {:.1} tok/s]",
                    r.reused + r.prefilled,
                    r.reused,
                    g.tokens.len(),
                    g.tokens.len() as f64 / g.gen_seconds.max(1e-9)
                ));
                self.last = Some(r);
                let (used, total) = self.session.context_used();
                if used * 10 >= total * 9 {
                    eprintln!(
                        "warning: the context is {:.0}% full ({used}/{total} tokens): /reset or /undo to make room, or restart with a larger --ctx-size",
                        100.0 * used as f64 / total as f64
                    );
                }
            }
            Err(e) => {
                // nothing was answered: the message goes, so it can be sent again
                self.conv.undo();
                match e {
                    pixtral::Error::Cancelled => {
                        eprintln!("[stopped before the answer began; the message was dropped]")
                    }
                    e => eprintln!("error: {e}; the message was dropped"),
                }
            }
        }
    }
}

pub fn chat(a: ChatArgs) -> anyhow::Result<()> {
    let ui = Ui::new(a.ui);
    let l = crate::load(&a.m, &ui)?;
    let model = &l.model;
    let mmproj = a.mmproj.clone().unwrap_or_else(|| pixtral::convert::mmproj_path(&l.path));
    let vision = if mmproj.exists() {
        let vm = VisionModel::load(&mmproj)?;
        ui.info(format!(
            "vision: {} (images up to {} px a side, {}x{} patches)",
            mmproj.display(),
            vm.cfg.image_size,
            vm.cfg.patch_size,
            vm.cfg.patch_size
        ));
        Some(vm)
    } else {
        ui.info(format!("vision: no mmproj at {}: text only", mmproj.display()));
        None
    };
    let params = crate::sampler_params(&a.sampling, model.tokenizer.eos);
    ui.info(format!("sampling: temperature {}, seed {}; type /help for commands", params.temp, params.seed));
    let mut session = pixtral::Session::try_new(model, crate::session_options(&a.m, 1))?;
    crate::prefill_bar(&mut session, model, &ui);
    let mut repl = Repl {
        ui,
        model,
        model_path: l.path.clone(),
        vision,
        image_max_side: a.image_max_side,
        session,
        conv: Conversation::new(a.system.clone()),
        sampler: Sampler::new(params.clone()),
        params,
        n_predict: a.n_predict,
        attached: Vec::new(),
        last: None,
        ctx: a.m.ctx_size,
    };
    let history = if a.no_history { None } else { a.history.clone().or_else(default_history) };
    let mut input = Input::new(history, &ui)?;
    pixtral::convert::os::install_sigint_handler();
    loop {
        let text = match input.message() {
            Line::Text(t) => t,
            Line::Cleared => continue,
            Line::Eof => break,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(path) = pasted_image(trimmed) {
            repl.attach(&[path.to_string_lossy().into_owned()]);
            continue;
        }
        let Some(cmd) = trimmed.strip_prefix('/') else {
            repl.respond(&text);
            continue;
        };
        let (name, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let args = words(rest);
        match name {
            "quit" | "exit" | "q" => break,
            "help" | "?" => eprintln!("{HELP}"),
            "image" | "img" => repl.attach(&args),
            "system" => {
                let s = rest.trim();
                repl.conv.system = (!s.is_empty()).then(|| s.to_string());
                eprintln!("{}", if s.is_empty() { "system prompt removed" } else { "system prompt set" });
            }
            "reset" | "clear" => {
                repl.conv.clear();
                repl.attached.clear();
                repl.session.reset();
                eprintln!("new conversation (context 0/{})", repl.ctx);
            }
            "undo" => {
                if repl.conv.undo() {
                    eprintln!("dropped the last exchange ({} messages left)", repl.conv.messages().len());
                } else {
                    eprintln!("nothing to undo");
                }
            }
            "save" | "load" if args.len() != 1 => eprintln!("usage: /{name} FILE"),
            "save" => {
                if let Err(e) = repl.save(&args[0]) {
                    eprintln!("error: {}", crate::ui::report(&e));
                }
            }
            "load" => {
                if let Err(e) = repl.load(&args[0]) {
                    eprintln!("error: {}", crate::ui::report(&e));
                }
            }
            "stats" => repl.stats(),
            "set" => repl.set(&args),
            _ => eprintln!("unknown command /{name}; /help lists the commands"),
        }
    }
    input.save_history();
    Ok(())
}
