//! SIP: transport, message normalisation, transactions (RFC 3261 §17), dialogs.

pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod normalize;
pub mod outgoing;
pub mod timer;
pub mod transaction;
pub mod transport;
