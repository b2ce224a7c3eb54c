//! What the CLI prints besides answers: header and timing lines, progress bars, exit codes.
//!
//! Everything goes to stderr, so stdout carries only the answer (`pixtral run … > answer.txt`). Progress bars
//! show only when stderr is a terminal and `--quiet` is off.

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct UiArgs {
    /// Print only the answer (no header, timings or progress).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also print token ids, KV cache size and per-phase details.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
    pub verbose: bool,
    tty: bool,
}

impl Ui {
    pub fn new(a: UiArgs) -> Ui {
        Ui { quiet: a.quiet, verbose: a.verbose, tty: std::io::stderr().is_terminal() }
    }

    /// A header or timing line (not with --quiet).
    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            self.always(msg);
        }
    }

    /// A detail line (only with --verbose).
    pub fn detail(&self, msg: impl std::fmt::Display) {
        if self.verbose {
            self.always(msg);
        }
    }

    /// A line asked for by a flag (even with --quiet). Names from files and text from the model pass through
    /// here, so on a terminal their control characters are made visible; a closed stderr is ignored.
    pub fn always(&self, msg: impl std::fmt::Display) {
        use std::io::Write;
        let s = msg.to_string();
        let s = if self.tty { crate::term::visible(&s) } else { s.as_str().into() };
        let _ = writeln!(std::io::stderr(), "{s}");
    }

    /// A progress bar of `len` steps, or a hidden one when nobody watches.
    pub fn bar(&self, len: u64, what: &str) -> ProgressBar {
        if !self.tty || self.quiet || len == 0 {
            return ProgressBar::hidden();
        }
        let b = ProgressBar::new(len);
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        b
    }
}

/// Exit codes: 0 ok, 1 runtime failure, 2 usage (bad flags, a prompt that does not fit the context),
/// 3 bad input (a file that is missing, unreadable or not a valid model/image/checkpoint), 130 interrupted.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    use pixtral::convert::error::ConvertError as C;
    use pixtral::Error as E;
    for cause in e.chain() {
        if cause.downcast_ref::<Output>().is_some() {
            return ExitCode::from(1);
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return ExitCode::from(2);
        }
        if let Some(e) = cause.downcast_ref::<E>() {
            return ExitCode::from(match e {
                E::Gguf(_) | E::Model { .. } | E::ShapeMismatch { .. } | E::Io { .. } | E::Invalid(_) => 3,
                E::ContextFull { .. } | E::PromptTooLong { .. } | E::Memory { .. } | E::Request(_) => 2,
                E::Cancelled => 130,
                E::NonFinite { .. } => 1,
            });
        }
        if cause.downcast_ref::<pixtral::gguf::GgufError>().is_some() {
            return ExitCode::from(3);
        }
        if let Some(e) = cause.downcast_ref::<C>() {
            return ExitCode::from(match e {
                C::Interrupted => 130,
                C::Usage(_) | C::Exists { .. } => 2,
                C::DiskSpace { .. } | C::Write { .. } | C::WriteFailed { .. } => 1,
                _ => 3,
            });
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ExitCode::from(3);
        }
    }
    ExitCode::from(1)
}

/// Whether the error is a closed standard output (`pixtral … | head`): the reader has what it wanted.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The flags that settle the library's errors (see [`pixtral::Error::advice`]).
pub const FLAGS: pixtral::error::SettingNames = pixtral::error::SettingNames {
    ctx_size: "--ctx-size",
    image_max_side: "--image-max-side",
    context_shift: Some("--context-shift"),
    kv_f16: "--kv-type f16",
};

/// The error and its causes as one sentence, each cause once (our errors already print their source), with the
/// flag to change when a library error has advice.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !out.contains(&c) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&c);
        }
    }
    if let Some(advice) = e.chain().find_map(|c| c.downcast_ref::<pixtral::Error>()?.advice(&FLAGS)) {
        out.push_str(": ");
        out.push_str(&advice);
    }
    out
}

/// A usage error raised by the CLI itself (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// `anyhow::bail!` for usage errors.
macro_rules! usage {
    ($($t:tt)*) => { return Err(anyhow::Error::new($crate::ui::Usage(format!($($t)*)))) };
}
pub(crate) use usage;

/// A failed write to standard output: exit 1, except a closed pipe (`| head`), which ends the run quietly with 0.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub struct Output(#[source] pub std::io::Error);

/// Standard output for answers: text cleaned for a terminal (see [`crate::term`]), each piece flushed as it comes;
/// the first failed write is kept and every later one is skipped, so the caller can stop generating.
pub struct AnswerOut {
    stream: crate::term::Stream,
    failed: Option<std::io::Error>,
}

impl AnswerOut {
    pub fn new() -> AnswerOut {
        AnswerOut { stream: crate::term::Stream::stdout(), failed: None }
    }

    /// Write `text`; false once a write has failed.
    pub fn write(&mut self, text: &str) -> bool {
        use std::io::Write;
        if self.failed.is_none() && !text.is_empty() {
            let mut o = std::io::stdout().lock();
            if let Err(e) = o.write_all(self.stream.text(text).as_bytes()).and_then(|_| o.flush()) {
                self.failed = Some(e);
            }
        }
        self.failed.is_none()
    }

    /// The first failure, if any.
    pub fn result(&mut self) -> Result<(), Output> {
        match self.failed.take() {
            Some(e) => Err(Output(e)),
            None => Ok(()),
        }
    }
}
