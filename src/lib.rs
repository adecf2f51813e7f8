//! pivotd: a SIP back-to-back user agent with a Kazoo Pivot / TwiML callflow runtime.
//!
//! Layers (see README): `sip` (transport, transactions, dialogs) knows nothing of callflows;
//! `media` (SDP, RTP, G.711, prompts) knows nothing of SIP; `callflow` drives a call only
//! through the [`callflow::CallControl`] trait, which `call` implements on a live SIP call.

pub mod api;
pub mod call;
pub mod callflow;
pub mod config;
pub mod dialer;
pub mod fdlimit;
pub mod flow;
pub mod fuzzing;
pub mod health;
pub mod logsafe;
pub mod media;
pub mod pivot;
pub mod presence;
pub mod registrar;
pub mod routing;
pub mod server;
pub mod sip;
pub mod store;
