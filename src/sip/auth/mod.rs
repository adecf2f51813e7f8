//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760): the wire format and the nonces.
//! Who the credentials belong to is the registrar's to know; `answer.rs` is the client side
//! (a carrier's challenge to our outbound INVITE).

pub mod answer;
pub mod digest;
pub mod nonce;
