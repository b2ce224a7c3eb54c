//! What a request brings before any model is loaded: the prompt text (`-p`, `-p -`, `-f`, piped standard
//! input) and the images (files, `-` for standard input, pipes and FIFOs), read within their limits and checked
//! from their headers. Every fault here is a usage error (exit 2) or a bad input file (exit 3), found before
//! the weights are touched.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use pixtral::image::ImageLimits;
use pixtral::ImageSource;

use crate::ui::usage;

/// The largest prompt read from a file or standard input (bytes): far above any context, small enough that a
/// mistaken `-f /dev/zero` stops at once.
const MAX_PROMPT_BYTES: u64 = 64 << 20;

/// A typed I/O error about `path` (exit 3): `PATH: msg`.
fn io_error(path: &Path, kind: std::io::ErrorKind, msg: impl Into<String>) -> anyhow::Error {
    pixtral::Error::Io { path: path.to_path_buf(), source: std::io::Error::new(kind, msg.into()) }.into()
}

/// Bytes to text; invalid UTF-8 is replaced (U+FFFD) with a warning, never a panic.
pub fn lossy(buf: Vec<u8>, what: &str) -> String {
    match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: {what} was not valid UTF-8; invalid bytes were replaced with U+FFFD");
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }
    }
}

fn read_text(r: impl Read, what: &str) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    r.take(MAX_PROMPT_BYTES + 1).read_to_end(&mut buf).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if buf.len() as u64 > MAX_PROMPT_BYTES {
        usage!("{what} is over {} MB: not a prompt", MAX_PROMPT_BYTES >> 20);
    }
    Ok(lossy(buf, what))
}

/// The prompt: `-p TEXT`; `-p -` or no `-p`/`-f` with a piped standard input: standard input; `-f FILE`.
/// `stdin_taken` says an image already reads standard input.
pub fn prompt_text(prompt: Option<&str>, file: Option<&Path>, stdin_taken: bool) -> anyhow::Result<String> {
    match (prompt, file) {
        (Some(_), Some(_)) => usage!("give the prompt once: -p or -f, not both"),
        (Some("-"), None) => {}
        (Some(p), None) => return Ok(p.to_string()),
        (None, Some(f)) => {
            let r = std::fs::File::open(f).map_err(|e| pixtral::Error::Io { path: f.to_path_buf(), source: e })?;
            if r.metadata().is_ok_and(|m| m.is_dir()) {
                return Err(io_error(f, std::io::ErrorKind::IsADirectory, "is a directory, not a prompt file"));
            }
            return read_text(r, &f.display().to_string());
        }
        (None, None) if !std::io::stdin().is_terminal() => {}
        (None, None) => usage!("no prompt: give -p TEXT, -f FILE, or pipe the prompt on standard input"),
    }
    if stdin_taken {
        usage!("standard input cannot be both the prompt and an image (--image -): give the prompt with -p or -f");
    }
    if std::io::stdin().is_terminal() {
        eprintln!("reading the prompt from standard input: end it with Ctrl-D");
    }
    let text = read_text(std::io::stdin().lock(), "standard input")?;
    if text.trim().is_empty() {
        usage!("the prompt read from standard input is empty");
    }
    Ok(text)
}

/// The `--image` arguments as the library's sources: paths as they are (read and checked by
/// [`pixtral::ImageHead::read`]), `-` read from standard input here (within [`ImageLimits::max_bytes`]), once.
pub fn image_sources(paths: &[PathBuf]) -> anyhow::Result<Vec<ImageSource>> {
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        usage!("only one --image can be read from standard input (-)");
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        out.push(if p.as_os_str() == "-" {
            let name = PathBuf::from("<stdin>");
            let bytes = pixtral::image::read_bounded_from(&name, std::io::stdin().lock(), &ImageLimits::default())?;
            ImageSource::Encoded { name: "<stdin>".into(), bytes }
        } else {
            ImageSource::Path(p.clone())
        });
    }
    Ok(out)
}

/// A path given on the command line that must be an existing file (exit 3 otherwise, naming it).
pub fn existing_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Err(e) => Err(pixtral::Error::Io { path: path.to_path_buf(), source: e }.into()),
        Ok(m) if m.is_dir() => Err(io_error(path, std::io::ErrorKind::IsADirectory, "is a directory, not a GGUF file")),
        Ok(_) => Ok(()),
    }
}

/// An output path whose folder exists (exit 3 otherwise, before any work): the file itself is written later.
pub fn writable(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(io_error(
            path,
            std::io::ErrorKind::NotFound,
            format!("the folder {} does not exist", dir.display()),
        ));
    }
    Ok(())
}

/// `file://` URIs as paths (percent-escapes decoded); other text unchanged.
pub fn file_uri(s: &str) -> PathBuf {
    let Some(rest) = s.strip_prefix("file://") else { return PathBuf::from(s) };
    // file://localhost/p and file:///p name the same file
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    let b = rest.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Words of a command line as a POSIX shell splits them: blanks separate words; 'single quotes' keep
/// everything; "double quotes" keep everything but `\"`, `\\`, `\$` and `` \` ``; a backslash outside quotes
/// escapes the next character. Err for an unclosed quote.
pub fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let (mut out, mut cur, mut any) = (Vec::new(), String::new(), false);
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                any = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                any = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                any = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_as_a_shell_splits_them() {
        let w = |s: &str| shell_words(s).unwrap();
        assert_eq!(w("a b  c"), ["a", "b", "c"]);
        assert_eq!(
            w(r#"'my photo.png' "your photo.png" his\ photo.png"#),
            ["my photo.png", "your photo.png", "his photo.png"]
        );
        assert_eq!(w(r#"'it''s' "say \"hi\"" a\\b 'back\slash'"#), ["its", "say \"hi\"", "a\\b", "back\\slash"]);
        assert_eq!(w(r#""" ''"#), ["", ""]);
        assert!(shell_words("'open").is_err() && shell_words("\"open").is_err());
    }

    #[test]
    fn file_uris_become_paths() {
        assert_eq!(file_uri("file:///tmp/my%20photo.png"), PathBuf::from("/tmp/my photo.png"));
        assert_eq!(file_uri("file://localhost/a/b.png"), PathBuf::from("/a/b.png"));
        assert_eq!(file_uri("/plain/path%20.png"), PathBuf::from("/plain/path%20.png"));
        assert_eq!(file_uri("file:///bad%2"), PathBuf::from("/bad%2"));
    }
}
