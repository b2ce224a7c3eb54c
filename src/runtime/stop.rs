//! Stop strings (`--stop`, OpenAI's `stop`): generation ends where the text first contains one of them, and
//! the stop string itself is not part of the answer.
//!
//! Text arrives in pieces (one token's worth), and a stop string can span pieces, so the end of the text that
//! could still grow into a stop string is held back until the next piece decides it. What [`StopStrings::push`]
//! returns can be shown at once; nothing shown is ever taken back.

#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    held: String,
    /// the stop string that ended the text, once one has
    matched: Option<usize>,
}

impl StopStrings {
    /// Empty strings are ignored (they would match before any text).
    pub fn new(stops: &[String]) -> StopStrings {
        StopStrings {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
            matched: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// Take one piece of text: returns the text that is safe to show, and whether a stop string has now
    /// appeared (then the returned text is everything before its first occurrence and generation should end).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (piece.to_string(), false);
        }
        self.held.push_str(piece);
        // the earliest match wins (at one position, the first given)
        let first = self.stops.iter().enumerate().filter_map(|(i, s)| Some((self.held.find(s.as_str())?, i))).min();
        if let Some((at, i)) = first {
            let shown = self.held[..at].to_string();
            self.held.clear();
            self.matched = Some(i);
            return (shown, true);
        }
        // hold back the longest tail that is a proper prefix of some stop string
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let shown = self.held[..keep].to_string();
        self.held.drain(..keep);
        (shown, false)
    }

    /// The stop string that ended the text, if one did.
    pub fn matched(&self) -> Option<&str> {
        self.matched.map(|i| self.stops[i].as_str())
    }

    /// The text still held back when generation ended without a match.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::StopStrings;

    /// Feed `pieces`; the text shown and whether it stopped.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopStrings::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut shown = String::new();
        for p in pieces {
            let (t, hit) = s.push(p);
            shown.push_str(&t);
            if hit {
                return (shown, true);
            }
        }
        shown.push_str(&s.finish());
        (shown, false)
    }

    #[test]
    fn a_stop_string_split_across_pieces_ends_the_text_before_it() {
        assert_eq!(run(&["\nUser:"], &["Hi", " there\nUs", "er: more"]), ("Hi there".into(), true));
        assert_eq!(run(&["END"], &["aEN", "D"]), ("a".into(), true));
        // a held prefix that does not complete is shown after all
        assert_eq!(run(&["END"], &["aEN", "x"]), ("aENx".into(), false));
        assert_eq!(run(&["END"], &["aE"]), ("aE".into(), false));
        // the earliest of several, and multi-byte text never split
        assert_eq!(run(&["b", "ab"], &["xab"]), ("x".into(), true));
        let mut s = StopStrings::new(&["b".into(), "ab".into()]);
        s.push("xab");
        assert_eq!(s.matched(), Some("ab"));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
        assert_eq!(run(&[""], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn nothing_shown_is_ever_part_of_a_stop_string() {
        // every split of a text around a stop string shows exactly the text before it
        let text = "one two STOP three";
        for cut in 1..text.len() {
            let (shown, hit) = run(&["STOP"], &[&text[..cut], &text[cut..]]);
            assert_eq!((shown.as_str(), hit), ("one two ", true), "cut at {cut}");
        }
    }
}
