//! Values that came off the wire (SIP headers, dialled numbers, pivot answers, URLs) made
//! safe for a log line: control characters become `\xNN` (a CR/LF cannot forge a line, an
//! escape sequence cannot reach a terminal) and the text is capped in length.
//!
//! Use it wherever such a value is logged: `tracing::debug!(number = %wire(&user), …)`.

use std::fmt;

/// The longest wire value a log line carries, in characters; longer ones end with `…`.
pub const MAX_LOGGED_CHARS: usize = 128;

/// A wire value, escaped and capped when displayed.
#[derive(Clone, Copy)]
pub struct Wire<'a>(&'a [u8]);

/// Wraps text (or bytes) from the network for logging.
pub fn wire<T: AsRef<[u8]> + ?Sized>(value: &T) -> Wire<'_> {
    Wire(value.as_ref())
}

impl fmt::Display for Wire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let mut shown = 0;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if shown == MAX_LOGGED_CHARS {
                    return f.write_char('…');
                }
                shown += 1;
                // Control characters (C0, DEL, C1) and the line/paragraph separators a
                // log viewer may break on.
                if c.is_control() || c == '\u{2028}' || c == '\u{2029}' || c == '\\' {
                    if c == '\\' {
                        f.write_str("\\\\")?;
                    } else if (c as u32) < 0x100 {
                        write!(f, "\\x{:02X}", c as u32)?;
                    } else {
                        write!(f, "\\u{{{:X}}}", c as u32)?;
                    }
                } else {
                    f.write_char(c)?;
                }
            }
            for b in chunk.invalid() {
                if shown == MAX_LOGGED_CHARS {
                    return f.write_char('…');
                }
                shown += 1;
                write!(f, "\\x{b:02X}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Wire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_escapes_are_shown_not_obeyed() {
        let forged = "5000\r\n2026-12-02T00:00:00Z  INFO admin logged in\x1b[2J";
        let shown = wire(forged).to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\x1b'));
        assert!(shown.starts_with("5000\\x0D\\x0A2026"));
        assert!(shown.ends_with("\\x1B[2J"));
    }

    #[test]
    fn invalid_utf8_and_backslashes_are_escaped() {
        assert_eq!(wire(&b"a\xffb\\"[..]).to_string(), "a\\xFFb\\\\");
        assert_eq!(wire("é\u{85}\u{2028}").to_string(), "é\\x85\\u{2028}");
    }

    #[test]
    fn long_values_are_capped() {
        let long = "7".repeat(64 * 1024);
        let shown = wire(&long).to_string();
        assert_eq!(shown.chars().count(), MAX_LOGGED_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(
            wire(&"x".repeat(MAX_LOGGED_CHARS)).to_string().len(),
            MAX_LOGGED_CHARS
        );
    }
}
