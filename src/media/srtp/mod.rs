//! SRTP (RFC 3711) keyed by SDES (RFC 4568): the suites pivotd offers and accepts, the keys of
//! one direction of one leg, and protecting and unprotecting packets with them.
//!
//! - `sdes.rs`: the `a=crypto` attribute — reading an offer's lines, choosing one, writing ours;
//! - `policy.rs`: whether a leg's audio is SRTP (the mode, TLS, the far end's stream);
//! - `out.rs`: the sending side of a keyed leg, shared by everything that sends on it;
//! - this file: the suites and the per-direction contexts over `rtc-srtp` (webrtc-rs's
//!   sans-I/O SRTP; pivotd writes no cipher code).
//!
//! One context per direction: [`SrtpSender`] for what we send on a leg (the pacer's prompts,
//! a relay's forwarded packets and RFC 4733 events all continue one sequence, so they share
//! one sender), [`SrtpReceiver`] for what the far end sends (with its replay window).

mod out;
pub mod policy;
pub mod sdes;
#[cfg(test)]
mod tests;

pub use out::SrtpOut;
use rtc_srtp::context::Context;
use rtc_srtp::crypto::providers::RingCrypto;
use rtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc_srtp::protection_profile::ProtectionProfile;

/// Packets behind the newest one still accepted once (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: usize = 128;

/// The crypto suites pivotd speaks, in the order it offers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// RFC 4568 §6.2.1: AES-128 counter mode, 80-bit HMAC-SHA1 tag.
    AesCm128HmacSha1_80,
    /// RFC 4568 §6.2.2: the same with a 32-bit tag.
    AesCm128HmacSha1_32,
    /// RFC 7714 §12: AES-128 GCM (16-byte tag inside the cipher text).
    AeadAes128Gcm,
}

impl Suite {
    /// Every suite, in our order of preference when offering.
    pub const ALL: [Suite; 3] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ];

    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite an `a=crypto` name means (names are case-sensitive, RFC 4568 §9.2).
    pub fn from_name(name: &[u8]) -> Option<Suite> {
        Suite::ALL.into_iter().find(|s| s.name().as_bytes() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
            Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        }
    }

    /// Master key length in bytes.
    pub fn key_len(self) -> usize {
        self.profile().key_len()
    }

    /// Master salt length in bytes.
    pub fn salt_len(self) -> usize {
        self.profile().salt_len()
    }

    /// Bytes SRTP adds to an RTP packet (the tag).
    pub fn overhead(self) -> usize {
        let p = self.profile();
        p.rtp_auth_tag_len() + p.aead_auth_tag_len()
    }
}

/// A master key and salt for one direction, and its suite.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKey {
    pub suite: Suite,
    /// Key then salt, `suite.key_len() + suite.salt_len()` bytes.
    material: Vec<u8>,
}

impl std::fmt::Debug for SrtpKey {
    // Never print a key (logs, panics).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpKey({} …)", self.suite.name())
    }
}

/// Why a key or a packet was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("key material is {got} bytes, the suite needs {want}")]
    KeyLength { got: usize, want: usize },
    #[error("the SRTP library refused the key")]
    BadKey,
    #[error("packet too short or not RTP")]
    Malformed,
    #[error("authentication tag does not match")]
    Authentication,
    #[error("packet already received (replay)")]
    Replay,
    #[error("the key has protected its 2^48 packets")]
    Exhausted,
}

impl SrtpKey {
    /// A key from its bytes (key then salt).
    pub fn new(suite: Suite, material: Vec<u8>) -> Result<SrtpKey, SrtpError> {
        let want = suite.key_len() + suite.salt_len();
        if material.len() != want {
            return Err(SrtpError::KeyLength {
                got: material.len(),
                want,
            });
        }
        Ok(SrtpKey { suite, material })
    }

    /// A fresh random key for `suite` (the operating system's generator, through rand).
    pub fn generate(suite: Suite) -> SrtpKey {
        use rand::RngCore;
        let mut material = vec![0u8; suite.key_len() + suite.salt_len()];
        rand::rngs::OsRng.fill_bytes(&mut material);
        SrtpKey { suite, material }
    }

    /// Key then salt.
    pub fn material(&self) -> &[u8] {
        &self.material
    }

    fn context(&self, replay: bool) -> Result<Context, SrtpError> {
        let (key, salt) = self.material.split_at(self.suite.key_len());
        let (rtp, rtcp) = if replay {
            (
                Some(srtp_replay_protection(REPLAY_WINDOW)),
                Some(srtcp_replay_protection(REPLAY_WINDOW)),
            )
        } else {
            (None, None)
        };
        Context::new(key, salt, self.suite.profile(), rtp, rtcp, &RingCrypto)
            .map_err(|_| SrtpError::BadKey)
    }
}

/// Protects what we send in one direction of a leg.
pub struct SrtpSender {
    ctx: Context,
}

impl SrtpSender {
    pub fn new(key: &SrtpKey) -> Result<SrtpSender, SrtpError> {
        Ok(SrtpSender {
            ctx: key.context(false)?,
        })
    }

    /// The SRTP packet of an RTP packet.
    pub fn protect(&mut self, rtp: &[u8]) -> Result<bytes::BytesMut, SrtpError> {
        self.ctx.encrypt_rtp(rtp).map_err(|e| match e {
            rtc_shared::error::Error::ErrExceededMaxPackets => SrtpError::Exhausted,
            _ => SrtpError::Malformed,
        })
    }

    /// The SRTCP packet of an RTCP packet.
    pub fn protect_rtcp(&mut self, rtcp: &[u8]) -> Result<bytes::BytesMut, SrtpError> {
        self.ctx
            .encrypt_rtcp(rtcp)
            .map_err(|_| SrtpError::Malformed)
    }
}

/// Checks and decrypts what the far end sends on a leg.
pub struct SrtpReceiver {
    ctx: Context,
}

impl SrtpReceiver {
    pub fn new(key: &SrtpKey) -> Result<SrtpReceiver, SrtpError> {
        Ok(SrtpReceiver {
            ctx: key.context(true)?,
        })
    }

    /// The RTP packet inside an SRTP packet, if it is authentic and not a replay.
    pub fn unprotect(&mut self, srtp: &[u8]) -> Result<bytes::BytesMut, SrtpError> {
        self.ctx.decrypt_rtp(srtp).map_err(refusal)
    }

    /// The RTCP packet inside an SRTCP packet, if it is authentic and not a replay.
    pub fn unprotect_rtcp(&mut self, srtcp: &[u8]) -> Result<bytes::BytesMut, SrtpError> {
        self.ctx.decrypt_rtcp(srtcp).map_err(refusal)
    }
}

fn refusal(e: rtc_shared::error::Error) -> SrtpError {
    use rtc_shared::error::Error as E;
    match e {
        E::SrtpSsrcDuplicated(..) | E::SrtcpSsrcDuplicated(..) | E::ErrDuplicated => {
            SrtpError::Replay
        }
        E::ErrFailedToVerifyAuthTag
        | E::RtpFailedToVerifyAuthTag
        | E::RtcpFailedToVerifyAuthTag => SrtpError::Authentication,
        _ => SrtpError::Malformed,
    }
}
