//! What is known of a call, as plain data: the runtime reads it and pivot sends it.

/// What the runtime and pivot know of a call: plain data, no SIP types.
#[derive(Clone, Debug, Default)]
pub struct CallInfo {
    pub call_id: String,
    pub account_id: String,
    pub from_user: String,
    pub from_realm: String,
    pub to_user: String,
    pub to_realm: String,
    pub request_user: String,
    pub request_realm: String,
    pub caller_id_name: Option<String>,
    pub caller_id_number: Option<String>,
    /// The owner of the device that authenticated the call (pivot's `User-ID`).
    pub user_id: Option<String>,
    /// The device that authenticated the call (a bridge leaves it out unless `can_call_self`).
    pub device_id: Option<String>,
    pub custom_sip_headers: Vec<(String, String)>,
}
