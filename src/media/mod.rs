//! Media: SDP offer/answer, RTP sessions and pacing, the relay between two sessions, G.711,
//! prompts. Knows nothing of SIP.

pub mod codec;
pub mod dtmf;
pub mod inband_dtmf;
pub mod player;
pub mod prompt;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod srtp;
pub mod tone;
pub mod tts;
