//! The plain data the pivot client and the callflow runtime share: the callflow node tree with
//! each module's typed data (validated as it is decoded), what is known of a call, and its DTMF
//! collections. `pivot` builds these (a Kazoo answer is a [`Node`]; a request is made from a
//! [`CallInfo`] and the [`DigitCollections`]); `callflow` walks and runs them. Nothing here
//! runs anything, and nothing here knows SIP, HTTP or the runtime.

pub mod bridge;
pub mod call;
pub mod digits;
pub mod modules;
pub mod node;

pub use call::CallInfo;
pub use digits::{DigitCollections, DEFAULT_COLLECTION};
pub use modules::ModuleData;
pub use node::{Node, ValidationError};

/// Whether `text` is written as an `http://` or `https://` URL (the scheme in any case): a
/// play id that names media over HTTP rather than a prompt, or a pivot node's `voice_url` /
/// `cdr_url` as its schema requires. A look at the text only; whether pivotd may *fetch* the
/// URL is the URL guard's decision (`pivot::guard`).
pub fn is_http_url(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_are_told_from_prompt_names() {
        assert!(is_http_url("http://x/a.wav"));
        assert!(is_http_url("HTTPS://x/a.wav"));
        assert!(!is_http_url("welcome"));
        assert!(!is_http_url("http:"));
        assert!(!is_http_url("ftp://x/a.wav"));
        assert!(!is_http_url("é"));
    }
}
