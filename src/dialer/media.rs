//! The caller's RTP session, on pivotd's own media code: our offer (PCMU, PCMA,
//! telephone-event 101), the server's answer applied, silence sent while we listen (a server
//! hangs up on a caller whose RTP stopped), digits as RFC 4733 events, and the packets we
//! hear.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::DialerError;
use crate::media::player::{Pacer, PlayResult};
use crate::media::rtp::{HeardPacket, RtpPorts, RtpSession, SendDigitsError};
use crate::media::sdp::{self, LocalSession, Negotiated, OurDescription, Sdp};

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
}

impl CallerMedia {
    /// A session on an ephemeral port pair of `ip`, and its offer.
    pub fn start(ip: IpAddr) -> Result<(CallerMedia, mpsc::Receiver<HeardPacket>), DialerError> {
        let pacer = Pacer::start(1);
        let rtp = RtpSession::start(RtpPorts::ephemeral(ip)?, &pacer, None, 0)?;
        // We chose whom to call: its address has nothing to prove (as a bridge's callee).
        rtp.prove();
        // Listening from the start, so nothing after the answer is missed.
        let heard = rtp.listen();
        let local = LocalSession {
            ip,
            port: rtp.local_port(),
            session_id: u64::from(rand::random::<u32>()),
            version: 1,
            crypto: Vec::new(),
            savp: false,
        };
        let offer = sdp::offer(&local, sdp::OFFERED_EVENT_PT);
        let media = CallerMedia {
            rtp: Arc::new(rtp),
            _pacer: pacer,
            ours: OurDescription::new(local, Some(offer.clone())),
            offer,
            negotiated: None,
            silence: None,
        };
        Ok((media, heard))
    }

    pub fn offer(&self) -> &str {
        &self.offer
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

    /// Our answer to a re-INVITE's offer, applied.
    pub fn answer(&mut self, offer: &Sdp, n: Negotiated) -> String {
        let answer = self.ours.describe(|l| sdp::answer_to_offer(l, offer, &n));
        self.apply(n);
        answer
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
