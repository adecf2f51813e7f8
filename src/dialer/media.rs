//! The caller's RTP session, on pivotd's own media code: our offer (PCMU, PCMA,
//! telephone-event 101), the server's answer applied, silence sent while we listen (a server
//! hangs up on a caller whose RTP stopped), digits as RFC 4733 events, and the packets we
//! hear. With `--srtp`, RTP/SAVP offered with SDES keys (`media/srtp`: the offer's lines and
//! what the answer makes of them are decided there), the session keyed from the answer before
//! anything is sent: what we hear is decrypted by the session before it reaches us, what we
//! send (silence, digits) is protected.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::DialerError;
use crate::config::MediaEncryption;
use crate::media::player::{Pacer, PlayResult};
use crate::media::rtp::{HeardPacket, RtpPorts, RtpSession, SendDigitsError};
use crate::media::sdp::{self, LocalSession, Negotiated, OurDescription, Sdp};
use crate::media::srtp::policy::{self, Followed, MediaSecurity, SrtpRefusal};
use crate::media::srtp::sdes::CryptoLine;
use crate::media::srtp::{SrtpError, Suite};

/// How long each digit's event lasts: a key pressed briefly, as a person does; with the
/// 100 ms gap between digits, `12#` takes under a second.
pub const DIGIT_DURATION: Duration = Duration::from_millis(120);

/// Seconds of silence per play of the silence loop.
const SILENCE_SECONDS: usize = 10;

/// Our session and what runs on it.
pub struct CallerMedia {
    // The session before the pacer: its drop removes its stream from a live pacer.
    rtp: Arc<RtpSession>,
    _pacer: Pacer,
    ours: OurDescription,
    offer: String,
    negotiated: Option<Negotiated>,
    silence: Option<JoinHandle<()>>,
    /// The server's line while the session is SRTP (what it sends is keyed by).
    srtp_theirs: Option<CryptoLine>,
}

/// Why the server's answer cannot key our SRTP session.
#[derive(Debug, thiserror::Error)]
pub enum NoSrtp {
    #[error("the answer has no usable SRTP key: {0}")]
    Refused(#[from] SrtpRefusal),
    #[error("the answer has no audio stream, so no SRTP key")]
    NoAudio,
    #[error("the answer's SRTP key cannot be used: {0}")]
    Key(#[from] SrtpError),
}

/// SRTP offers are `required`: `--srtp` asks for encrypted audio or none, and it is only
/// given with `--tls`.
const SRTP_MODE: MediaEncryption = MediaEncryption::Required;

impl CallerMedia {
    /// A session on an ephemeral port pair of `ip`, and its offer (RTP/SAVP with a key per
    /// suite when `srtp`).
    pub fn start(
        ip: IpAddr,
        srtp: bool,
    ) -> Result<(CallerMedia, mpsc::Receiver<HeardPacket>), DialerError> {
        let pacer = Pacer::start(1);
        let rtp = RtpSession::start(RtpPorts::ephemeral(ip)?, &pacer, None, 0)?;
        // We chose whom to call: its address has nothing to prove (as a bridge's callee).
        rtp.prove();
        // Listening from the start, so nothing after the answer is missed.
        let heard = rtp.listen();
        let (crypto, savp) = if srtp {
            policy::offer(SRTP_MODE, true)
        } else {
            (Vec::new(), false)
        };
        let local = LocalSession {
            ip,
            port: rtp.local_port(),
            session_id: u64::from(rand::random::<u32>()),
            version: 1,
            crypto,
            savp,
        };
        let offer = sdp::offer(&local, sdp::OFFERED_EVENT_PT);
        let media = CallerMedia {
            rtp: Arc::new(rtp),
            _pacer: pacer,
            ours: OurDescription::new(local, Some(offer.clone())),
            offer,
            negotiated: None,
            silence: None,
            srtp_theirs: None,
        };
        Ok((media, heard))
    }

    pub fn offer(&self) -> &str {
        &self.offer
    }

    /// Keys the session from the server's answer when we offered SRTP: the suite it chose
    /// (None: we offered plain RTP). Called before [`CallerMedia::apply`], so nothing leaves
    /// in clear; an answer naming none of our lines is an error (we hang up).
    pub fn key_from_answer(&mut self, answer: &Sdp) -> Result<Option<Suite>, NoSrtp> {
        let offered = &self.ours.local.crypto;
        if offered.is_empty() {
            return Ok(None);
        }
        let stream = answer.audio().ok_or(NoSrtp::NoAudio)?;
        match policy::answered(SRTP_MODE, offered, stream)? {
            MediaSecurity::Srtp { theirs, ours } => {
                self.rtp.set_srtp(&ours.key, &theirs.key)?;
                let suite = ours.key.suite;
                // Our later descriptions repeat only the line the server chose.
                self.ours.local.crypto = vec![ours];
                self.srtp_theirs = Some(theirs);
                Ok(Some(suite))
            }
            // `required` never gives plain.
            MediaSecurity::Plain => Err(NoSrtp::Refused(SrtpRefusal::PlainAnswer)),
        }
    }

    /// On an SRTP session, a re-INVITE's offer must be SRTP too; a new line of the server's
    /// rekeys both directions (`policy::follow_offer`). `false`: refuse it (488).
    fn follow_srtp_offer(&mut self, offer: &Sdp) -> bool {
        let Some(current) = &self.srtp_theirs else {
            return true;
        };
        match policy::follow_offer(current, offer.audio()) {
            Followed::Same => true,
            Followed::Rekey { theirs, ours } => {
                if self.rtp.set_srtp(&ours.key, &theirs.key).is_err() {
                    return false;
                }
                self.ours.local.crypto = vec![ours];
                self.srtp_theirs = Some(theirs);
                true
            }
            Followed::Refused => false,
        }
    }

    /// The server's description (its answer, or a re-INVITE's offer): where to send and how.
    pub fn apply(&mut self, n: Negotiated) {
        self.rtp.set_remote(n.remote);
        self.rtp.set_sending(n.direction.we_send());
        self.rtp.set_payload_type(n.codec_pt);
        self.rtp.set_event_payload_type(n.dtmf_pt);
        let codec_changed = self.negotiated.as_ref().map(|o| o.codec) != Some(n.codec);
        let silence_byte = n.codec.encode(&[0]).first().copied().unwrap_or(0xFF);
        self.negotiated = Some(n);
        if codec_changed {
            if let Some(s) = self.silence.take() {
                s.abort();
            }
            let rtp = self.rtp.clone();
            let silence: Arc<[u8]> = vec![silence_byte; 8000 * SILENCE_SECONDS].into();
            self.silence = Some(tokio::spawn(async move {
                while rtp.play(silence.clone()).await == PlayResult::Finished {}
            }));
        }
    }

    /// Our answer to a re-INVITE's offer, applied; None when it cannot be taken (an SRTP
    /// session offered plain RTP or a key we cannot use).
    pub fn answer(&mut self, offer: &Sdp, n: Negotiated) -> Option<String> {
        if !self.follow_srtp_offer(offer) {
            return None;
        }
        let answer = self.ours.describe(|l| sdp::answer_to_offer(l, offer, &n));
        self.apply(n);
        Some(answer)
    }

    /// A new offer of ours (a re-INVITE without SDP).
    pub fn reoffer(&mut self) -> String {
        self.ours.describe(|l| sdp::offer(l, sdp::OFFERED_EVENT_PT))
    }

    /// Whether the server took telephone-event (digits can be sent).
    pub fn can_send_digits(&self) -> bool {
        self.negotiated
            .as_ref()
            .is_some_and(|n| n.dtmf_pt.is_some())
    }

    /// Starts sending `digits` as RFC 4733 events; None when the server took no
    /// telephone-event (or nothing was negotiated yet).
    pub fn send_digits(&self, digits: &str) -> Option<JoinHandle<Result<(), SendDigitsError>>> {
        let pt = self.negotiated.as_ref()?.dtmf_pt?;
        let rtp = self.rtp.clone();
        let digits = digits.to_string();
        Some(tokio::spawn(async move {
            rtp.send_digits(&digits, DIGIT_DURATION, pt).await
        }))
    }

    /// The audio codec of a received payload type, as negotiated.
    pub fn codec_of(&self, pt: u8) -> Option<crate::media::codec::Codec> {
        let n = self.negotiated.as_ref()?;
        (n.codec_pt == pt).then_some(n.codec)
    }
}

impl Drop for CallerMedia {
    fn drop(&mut self) {
        if let Some(s) = self.silence.take() {
            s.abort();
        }
        self.rtp.stop_playing();
    }
}
