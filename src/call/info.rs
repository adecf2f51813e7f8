//! The call facts an INVITE gives the callflow runtime and pivot ([`CallInfo`]): caller,
//! callee, the dialled number and realm, the `X-` headers.

use crate::flow::CallInfo;
use crate::sip::message::percent_decode;

/// The plain call facts the runtime and pivot see.
pub fn call_info(
    req: &rsip::Request,
    call_id: &str,
    account_id: &str,
    user: &str,
    host: &str,
) -> CallInfo {
    use rsip::headers::ToTypedHeader;
    use rsip::message::HeadersExt;
    let from = req.from_header().ok().and_then(|f| f.typed().ok());
    let to = req.to_header().ok().and_then(|t| t.typed().ok());
    let call_id = call_id.to_string();
    let (from_user, from_realm, display) = match &from {
        Some(f) => (
            percent_decode(f.uri.user().unwrap_or("")),
            f.uri.host_with_port.host.to_string(),
            f.display_name
                .as_ref()
                .map(|d| d.trim().trim_matches('"').to_string())
                .filter(|d| !d.is_empty()),
        ),
        None => (String::new(), String::new(), None),
    };
    let (to_user, to_realm) = match &to {
        Some(t) => (
            percent_decode(t.uri.user().unwrap_or("")),
            t.uri.host_with_port.host.to_string(),
        ),
        None => (String::new(), String::new()),
    };
    let custom_sip_headers = req
        .headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::Other(name, value)
                if name.len() > 2
                    && name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")) =>
            {
                Some((name.clone(), value.clone()))
            }
            _ => None,
        })
        .collect();
    CallInfo {
        call_id,
        account_id: account_id.to_string(),
        caller_id_number: (!from_user.is_empty()).then(|| from_user.clone()),
        caller_id_name: display,
        user_id: None,
        device_id: None,
        from_user,
        from_realm,
        to_user,
        to_realm,
        request_user: user.to_string(),
        request_realm: host.to_string(),
        custom_sip_headers,
    }
}
