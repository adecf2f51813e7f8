//! Pivot: asking the customer's web server what to do. Request fields, the guarded HTTP client,
//! Kazoo JSON and TwiML answers. Sees a plain `CallInfo`, never a SIP message.

pub mod client;
pub mod debug;
pub mod fetch;
pub mod fields;
pub mod guard;
pub mod kazoo;
pub mod request;
pub mod twiml;
