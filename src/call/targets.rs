//! Placeholder for the target resolution (replaced by the real module).

use crate::flow::bridge::Target;
use crate::sip::transport::Peer;

pub struct Fork {
    pub request_uri: String,
    pub to: String,
    pub peer: Peer,
    pub route: Vec<String>,
    pub credentials: Option<(String, String)>,
    pub from_number: Option<String>,
    pub from_name: Option<String>,
    pub label: String,
    pub device_id: Option<String>,
}

pub struct Resolved {
    pub stages: Vec<Vec<Fork>>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotResolved {
    #[error("not resolved")]
    Unknown,
}

impl NotResolved {
    pub fn cause(&self) -> &'static str {
        "UNALLOCATED_NUMBER"
    }
}

pub struct ResolveContext<'a> {
    pub cfg: &'a crate::config::Config,
    pub account_id: &'a str,
    pub registrar: &'a crate::registrar::Registrar,
    pub transport: &'a std::sync::Arc<crate::sip::transport::Transport>,
    pub calling_device: Option<&'a str>,
    pub can_call_self: bool,
}

pub async fn resolve(_c: &ResolveContext<'_>, _t: &Target) -> Result<Resolved, NotResolved> {
    Err(NotResolved::Unknown)
}
