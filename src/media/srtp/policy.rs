//! Whether a leg's audio is SRTP: the one place that decides, from the configured mode
//! (`[media] encryption`, an account's own), whether the leg's signalling came over TLS
//! (SDES keys are in the SDP in clear, so over UDP or TCP anyone on the path could read
//! them: RFC 4568 §8.3), and what the far end's stream says.

use super::sdes::{self, CryptoLine};
use crate::config::MediaEncryption;
use crate::media::sdp::Media;

/// What a leg's audio is, once decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaSecurity {
    Plain,
    /// SRTP: `theirs` keys what the far end sends, `ours` what we send (the line in our SDP).
    Srtp {
        theirs: CryptoLine,
        ours: CryptoLine,
    },
}

/// Why a call cannot have the audio its mode asks for (SIP 488, the reason in the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpRefusal {
    #[error("SRTP is required and the offer is plain RTP/AVP")]
    PlainOffered,
    #[error(
        "SRTP is required and the call did not come over TLS (SDES keys would travel in clear)"
    )]
    NotOverTls,
    #[error("SRTP is required and no offered a=crypto line is one pivotd can use")]
    NoUsableKey,
    #[error("SRTP is required and the answer is plain RTP/AVP or names none of our keys")]
    PlainAnswer,
}

/// Our answer's media security to a far end's `offered` stream. An offer with `a=crypto`
/// lines (RTP/SAVP, or best-effort on RTP/AVP) is answered with SRTP when the mode allows it,
/// the call came over TLS and one of its lines is usable; otherwise as plain RTP, unless the
/// mode is `required` (then 488). Our answer keeps the offer's profile (RFC 3264 §6).
pub fn answer(
    mode: MediaEncryption,
    over_tls: bool,
    offered: &Media,
) -> Result<MediaSecurity, SrtpRefusal> {
    let required = mode == MediaEncryption::Required;
    if !offered.is_savp() && offered.crypto.is_empty() {
        return if required {
            Err(SrtpRefusal::PlainOffered)
        } else {
            Ok(MediaSecurity::Plain)
        };
    }
    if mode == MediaEncryption::Off {
        return Ok(MediaSecurity::Plain);
    }
    if !over_tls {
        return if required {
            Err(SrtpRefusal::NotOverTls)
        } else {
            Ok(MediaSecurity::Plain)
        };
    }
    match sdes::choose(offered.crypto.iter().map(|v| v.as_bytes())) {
        Some((theirs, ours)) => Ok(MediaSecurity::Srtp { theirs, ours }),
        None if required => Err(SrtpRefusal::NoUsableKey),
        None => Ok(MediaSecurity::Plain),
    }
}

/// The lines of an offer we make on a leg (the bridge's INVITE), and whether its profile is
/// RTP/SAVP: over TLS one line per suite, on RTP/SAVP when SRTP is `required`, on RTP/AVP
/// (best-effort: a callee without SRTP answers plain) when `optional`; none otherwise.
pub fn offer(mode: MediaEncryption, over_tls: bool) -> (Vec<CryptoLine>, bool) {
    match mode {
        MediaEncryption::Off => (Vec::new(), false),
        _ if !over_tls => (Vec::new(), false),
        MediaEncryption::Optional => (sdes::offer(), false),
        MediaEncryption::Required => (sdes::offer(), true),
    }
}

/// Our offer in the 200 to an INVITE without one (a late offer): the same lines as
/// [`offer`]'s on the caller's leg; the answer comes in the ACK ([`answered`]). When SRTP is
/// `required` and the INVITE did not come over TLS, no key may be offered: 488.
pub fn late_offer(
    mode: MediaEncryption,
    over_tls: bool,
) -> Result<(Vec<CryptoLine>, bool), SrtpRefusal> {
    if mode == MediaEncryption::Required && !over_tls {
        return Err(SrtpRefusal::NotOverTls);
    }
    Ok(offer(mode, over_tls))
}

/// What the far end's `answered` stream makes of the lines we `offered`: SRTP when it names
/// one of our tags with its suite (its own key on it; RTP/SAVP, or RTP/AVP to a best-effort
/// offer); plain otherwise, which a `required` mode refuses.
pub fn answered(
    mode: MediaEncryption,
    offered: &[CryptoLine],
    answered: &Media,
) -> Result<MediaSecurity, SrtpRefusal> {
    let chosen = answered.crypto.iter().find_map(|v| {
        let theirs = sdes::parse_value(v.as_bytes()).ok()?;
        let ours = offered
            .iter()
            .find(|o| o.tag == theirs.tag && o.key.suite == theirs.key.suite)?;
        Some((theirs, ours.clone()))
    });
    match chosen {
        Some((theirs, ours)) => Ok(MediaSecurity::Srtp { theirs, ours }),
        _ if mode == MediaEncryption::Required => Err(SrtpRefusal::PlainAnswer),
        _ => Ok(MediaSecurity::Plain),
    }
}

/// What an SRTP leg makes of the far end's new offer (a re-INVITE's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Followed {
    /// The same line as before: nothing changes.
    Same,
    /// A new line of theirs: both directions are rekeyed, ours with a fresh key (a context
    /// is never restarted on a key it used, RFC 3711 §9.1).
    Rekey {
        theirs: CryptoLine,
        ours: CryptoLine,
    },
    /// Plain RTP, or no line we can use: refused (488), never a downgrade to audio in clear.
    Refused,
}

/// On a leg keyed with the far end's `current` line, its new `offered` stream (None: the
/// offer has no audio). The leg is keyed, so it came over TLS.
pub fn follow_offer(current: &CryptoLine, offered: Option<&Media>) -> Followed {
    let Some(stream) = offered else {
        return Followed::Refused;
    };
    match answer(MediaEncryption::Required, true, stream) {
        Ok(MediaSecurity::Srtp { theirs, .. }) if theirs == *current => Followed::Same,
        Ok(MediaSecurity::Srtp { theirs, ours }) => Followed::Rekey { theirs, ours },
        _ => Followed::Refused,
    }
}

/// What a session's keys (ours, theirs) become when the far end whose answer decides them
/// (the bridge's winning fork, after another fork's early media) keyed it `decided`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rekey {
    /// The same keys: nothing changes.
    Keep,
    /// Our line stays (it is the same far end, its new key): receiving only, our sending
    /// context goes on (a context is never restarted on a key it used).
    Receive,
    /// Both ways with the decided keys: another far end's line, or the first keys.
    Both,
    /// The deciding far end answered plain RTP (the mode allowed it, [`answered`]): the keys
    /// of another far end must not stay, or it hears nothing but noise.
    Clear,
}

/// See [`Rekey`]. The no-downgrade rule of one dialog (a keyed leg's re-offer must be SRTP)
/// is the leg's; a different dialog's answer is a different far end, and it decides.
pub fn rekey(
    current: Option<&(CryptoLine, CryptoLine)>,
    decided: Option<&(CryptoLine, CryptoLine)>,
) -> Rekey {
    match (current, decided) {
        (None, None) => Rekey::Keep,
        (Some(c), Some(d)) if c == d => Rekey::Keep,
        (Some((ours, _)), Some((o, _))) if ours == o => Rekey::Receive,
        (_, Some(_)) => Rekey::Both,
        (Some(_), None) => Rekey::Clear,
    }
}
