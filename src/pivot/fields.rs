//! The names of the fields pivotd sends a pivot web server, in one place: the request
//! parameters of each format (spec a.2 Kazoo, a.3 TwiML), the outcome of a bridge on the
//! request after it, and the CDR posted to a TwiML pivot's `cdr_url` (spec b.5, in Kazoo's
//! names). A web server reads these names: changing one breaks it.

/// The `Direction` value: pivotd only answers calls.
pub const INBOUND: &str = "inbound";

/// Kazoo's names: the `kazoo` request format, and the CDR.
pub mod kazoo {
    pub const API_VERSION: &str = "Api-Version";
    pub const DIRECTION: &str = "Direction";
    pub const CALL_ID: &str = "Call-ID";
    pub const ACCOUNT_ID: &str = "Account-ID";
    pub const FROM: &str = "From";
    pub const FROM_REALM: &str = "From-Realm";
    pub const TO: &str = "To";
    pub const TO_REALM: &str = "To-Realm";
    pub const REQUEST: &str = "Request";
    pub const REQUEST_REALM: &str = "Request-Realm";
    pub const CALLER_ID_NAME: &str = "Caller-ID-Name";
    pub const CALLER_ID_NUMBER: &str = "Caller-ID-Number";
    pub const LANGUAGE: &str = "Language";
    pub const CALL_STATUS: &str = "Call-Status";
    pub const USER_ID: &str = "User-ID";
    pub const CUSTOM_SIP_HEADERS: &str = "Custom-SIP-Headers";
    pub const DIGITS: &str = "Digits";
    // After a bridge: Kazoo merges Twilio's `DialCall*` request variables in this format too
    // (spec a.3).
    pub use super::twiml::{DIAL_CALL_DURATION, DIAL_CALL_SID, DIAL_CALL_STATUS};
    // The CDR's; also a request's after a bridge (the bridge's cause and `sip:NNN`).
    pub const HANGUP_CAUSE: &str = "Hangup-Cause";
    pub const HANGUP_CODE: &str = "Hangup-Code";
    pub const DURATION_SECONDS: &str = "Duration-Seconds";
    pub const BILLING_SECONDS: &str = "Billing-Seconds";
}

/// TwiML's names: the `twiml` request format.
pub mod twiml {
    pub const CALL_SID: &str = "CallSid";
    pub const ACCOUNT_SID: &str = "AccountSid";
    pub const FROM: &str = "From";
    pub const FROM_REALM: &str = "FromRealm";
    pub const TO: &str = "To";
    pub const TO_REALM: &str = "ToRealm";
    pub const CALL_STATUS: &str = "CallStatus";
    pub const API_VERSION: &str = "ApiVersion";
    pub const DIRECTION: &str = "Direction";
    pub const CALLER_NAME: &str = "CallerName";
    pub const CALLER_NUMBER: &str = "CallerNumber";
    pub const DIGITS: &str = "Digits";
    // After a bridge (`<Dial>`, or a bridging module before a pivot node).
    pub const DIAL_CALL_STATUS: &str = "DialCallStatus";
    pub const DIAL_CALL_SID: &str = "DialCallSid";
    pub const DIAL_CALL_DURATION: &str = "DialCallDuration";
    pub const DIAL_SIP_RESPONSE_CODE: &str = "DialSipResponseCode";
}
