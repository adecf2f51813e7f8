//! SDES (RFC 4568): the `a=crypto` attribute of an SDP media section. An offer may carry
//! several lines (one per suite it accepts); the answer carries the one chosen, with the
//! offer's tag and suite and the answerer's own key. The keys travel in clear in the SDP, so
//! pivotd only accepts or sends them over TLS (§8.3); that decision is the caller's.
//!
//! Wire text is bytes until checked: a line that does not parse is skipped, never an error
//! for the whole SDP, since an offer may list suites or parameters we do not know.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{SrtpKey, Suite};

/// One `a=crypto` line we can use: its tag, suite and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoLine {
    /// 1–9 digits (§9.1), echoed in the answer.
    pub tag: u32,
    pub key: SrtpKey,
}

impl CryptoLine {
    /// The attribute's value (after `a=crypto:`), as we write it.
    pub fn to_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite.name(),
            STANDARD.encode(self.key.material())
        )
    }
}

/// Why one `a=crypto` value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoLineError {
    #[error("not `tag suite key-params`")]
    Shape,
    #[error("tag is not 1-9 digits")]
    Tag,
    #[error("a crypto suite pivotd does not support")]
    Suite,
    #[error("key method is not inline")]
    KeyMethod,
    #[error("key is not base64 of the suite's key and salt")]
    Key,
    #[error("an MKI (pivotd sends and accepts packets without one)")]
    Mki,
    #[error("a lifetime that is not 2^n or a number")]
    Lifetime,
    #[error("session parameters (pivotd uses the defaults only)")]
    SessionParams,
    #[error("several keys (pivotd uses one per direction)")]
    SeveralKeys,
}

/// Reads one `a=crypto` value: `<tag> <suite> inline:<key||salt>[|lifetime][|MKI:len]
/// [<session-params>]` (§9.1). Only what pivotd can honour is accepted: one inline key,
/// no MKI, no session parameters (they change how packets are protected, §6.3).
pub fn parse_value(value: &[u8]) -> Result<CryptoLine, CryptoLineError> {
    let mut fields = value
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|f| !f.is_empty());
    let (Some(tag), Some(suite), Some(key_params)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(CryptoLineError::Shape);
    };
    if fields.next().is_some() {
        return Err(CryptoLineError::SessionParams);
    }
    if tag.is_empty() || tag.len() > 9 || !tag.iter().all(u8::is_ascii_digit) {
        return Err(CryptoLineError::Tag);
    }
    let tag: u32 = std::str::from_utf8(tag)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(CryptoLineError::Tag)?;
    let suite = Suite::from_name(suite).ok_or(CryptoLineError::Suite)?;
    if key_params.contains(&b';') {
        return Err(CryptoLineError::SeveralKeys);
    }
    let info = key_params
        .strip_prefix(b"inline:")
        .ok_or(CryptoLineError::KeyMethod)?;
    let mut parts = info.split(|b| *b == b'|');
    let key = parts.next().unwrap_or_default();
    for part in parts {
        if part.contains(&b':') {
            return Err(CryptoLineError::Mki);
        }
        if !lifetime_ok(part) {
            return Err(CryptoLineError::Lifetime);
        }
    }
    let material = STANDARD.decode(key).map_err(|_| CryptoLineError::Key)?;
    let key = SrtpKey::new(suite, material).map_err(|_| CryptoLineError::Key)?;
    Ok(CryptoLine { tag, key })
}

/// `2^n` or a decimal number (§6.1). Its value does not matter to pivotd: no call lasts the
/// 2^31 packets of the shortest lifetime worth writing.
fn lifetime_ok(s: &[u8]) -> bool {
    let digits = s.strip_prefix(b"2^").unwrap_or(s);
    !digits.is_empty() && digits.len() <= 20 && digits.iter().all(u8::is_ascii_digit)
}

/// The line pivotd answers with, given the offer's `a=crypto` values in their order: the
/// first one it can use (§7.1.1: the offerer lists them by preference), answered with the
/// same tag and suite and a fresh key of ours. `None` when none is usable.
pub fn choose<'a>(offered: impl IntoIterator<Item = &'a [u8]>) -> Option<(CryptoLine, CryptoLine)> {
    offered.into_iter().find_map(|v| {
        let theirs = parse_value(v).ok()?;
        let ours = CryptoLine {
            tag: theirs.tag,
            key: SrtpKey::generate(theirs.key.suite),
        };
        Some((theirs, ours))
    })
}

/// Our offer's lines: one per suite, tags 1.., each with its own fresh key. The answer names
/// one tag; the key we send with is the one on that line.
pub fn offer() -> Vec<CryptoLine> {
    Suite::ALL
        .into_iter()
        .zip(1u32..)
        .map(|(suite, tag)| CryptoLine {
            tag,
            key: SrtpKey::generate(suite),
        })
        .collect()
}
