//! The call facts an INVITE gives the callflow runtime and pivot ([`CallInfo`]): caller,
//! callee, the dialled number and realm, the `X-` headers.

use crate::flow::CallInfo;

/// `%XX` escapes in a URI user part (RFC 3261 §19.1.2), decoded for routing.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
        from_user,
        from_realm,
        to_user,
        to_realm,
        request_user: user.to_string(),
        request_realm: host.to_string(),
        custom_sip_headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("sips%3Auser%40example.com"),
            "sips:user@example.com"
        );
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz1"), "%zz1");
    }
}
