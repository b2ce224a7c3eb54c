//! Text bound for a terminal: control characters from files and from the model made visible, and colour.
//!
//! A GGUF's metadata, a tensor name, a conversation file or a generated token can hold bytes such as
//! `ESC ] 0 ; … BEL` (set the window title) or `ESC [ 2 K` (erase the line): printed raw, they drive the
//! terminal. Everything that reaches a terminal from a file or the model passes through [`visible`]; output
//! to a pipe or a file is data and stays byte-exact.

use std::borrow::Cow;
use std::io::IsTerminal;

/// `s` with every control character except `\n` and `\t` written as an escape: C0 controls and DEL as `\xNN`
/// (`ESC` → `\x1b`), C1 controls (U+0080–U+009F) as `\u{NN}`. Ordinary text is returned as is.
pub fn visible(s: &str) -> Cow<'_, str> {
    let bad = |c: char| (c.is_control() && c != '\n' && c != '\t') || c == '\u{2028}' || c == '\u{2029}';
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !bad(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// Where a stream goes, decided once: whether to clean its text and whether to colour it.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    pub tty: bool,
    pub colour: bool,
}

impl Stream {
    pub fn stdout() -> Stream {
        Self::of(std::io::stdout().is_terminal())
    }

    pub fn stderr() -> Stream {
        Self::of(std::io::stderr().is_terminal())
    }

    /// Colour only on a terminal, and never with `NO_COLOR` set (no-color.org) or `TERM=dumb`.
    fn of(tty: bool) -> Stream {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Stream { tty, colour: tty && !no_colour }
    }

    /// `s` made safe for this stream: cleaned on a terminal, untouched elsewhere.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if self.tty {
            visible(s)
        } else {
            Cow::Borrowed(s)
        }
    }

    /// `s` in an SGR style (`"1;31"` bold red, `"2"` dim, …) when this stream takes colour.
    pub fn paint(&self, style: &str, s: &str) -> String {
        if self.colour {
            format!("\x1b[{style}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        assert_eq!(visible("plain, ünïcode 🦀\n\tok"), "plain, ünïcode 🦀\n\tok");
        assert_eq!(visible("\x1b]0;PWNED\x07\x1b[1A\x1b[2K"), "\\x1b]0;PWNED\\x07\\x1b[1A\\x1b[2K");
        assert_eq!(visible("a\rb\x7f\u{9b}2J"), "a\\x0db\\x7f\\u{9b}2J");
    }
}
