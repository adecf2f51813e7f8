//! SIP: transport, message normalisation, transactions (RFC 3261 §17), dialogs.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod normalize;
pub mod outgoing;
pub mod overload;
pub mod source;
pub mod timer;
pub mod transaction;
pub mod transport;
pub mod uac;

/// Methods pivotd accepts (RFC 3261 §20.5 Allow).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER, SUBSCRIBE";
/// Bodies pivotd understands (RFC 3261 §20.1 Accept).
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay";
/// Option tags pivotd supports: none yet, so any Require gets 420.
pub const SUPPORTED: &str = "";
/// What an OPTIONS is answered with, in or out of a dialog (RFC 3261 §11.2).
pub const CAPABILITY_HEADERS: [(&str, &str); 3] = [
    ("Allow", ALLOW),
    ("Accept", ACCEPT),
    ("Supported", SUPPORTED),
];
