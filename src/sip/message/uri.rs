//! The Request-URI: the checks RFC 3261 §19.1.1 and RFC 4475 make on it, its scheme, and
//! the sip/sips URIs read by hand where rsip 0.4 cannot.

/// What is wrong with a Request-URI (the reason phrase of the 400 that answers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestUriError {
    #[error("malformed Request-URI")]
    Malformed,
    #[error("headers in the Request-URI")]
    Headers,
}

/// RFC 3261 §19.1.1 / RFC 4475 §3.1.2.7, §3.1.2.11: no `<>`, no escaped headers.
pub(super) fn check_request_uri(uri: &str) -> Result<(), RequestUriError> {
    if uri_scheme(uri.as_bytes()).is_none() || uri.contains(['<', '>', '"']) {
        return Err(RequestUriError::Malformed);
    }
    let is_sip = uri_scheme(uri.as_bytes()).is_some_and(is_sip_scheme);
    if is_sip && uri.contains('?') {
        return Err(RequestUriError::Headers);
    }
    Ok(())
}

/// Whether pivotd can write `uri` as the Request-URI of a request it sends (a Contact that
/// becomes a dialog's remote target): a sip/sips URI of printable ASCII that passes the
/// checks a received Request-URI passes, so that what pivotd sends it could read itself.
pub fn is_request_target(uri: &str) -> bool {
    uri.bytes().all(|b| b.is_ascii_graphic())
        && check_request_uri(uri).is_ok()
        && parse_sip_uri(uri).is_some()
}

/// A sip/sips URI read by hand (RFC 3261 §25.1 `SIP-URI`), for the URIs rsip 0.4 misreads
/// or refuses: `;` or `.` in the user part, IPv6 references. Parameters are parsed by rsip.
pub fn parse_sip_uri(text: &str) -> Option<rsip::Uri> {
    let colon = text.find(':')?;
    let scheme = match &text[..colon] {
        s if s.eq_ignore_ascii_case("sip") => rsip::Scheme::Sip,
        s if s.eq_ignore_ascii_case("sips") => rsip::Scheme::Sips,
        _ => return None,
    };
    let rest = &text[colon + 1..];
    if rest.contains(['?', ' ', '<', '>']) {
        return None;
    }
    let (auth, hostpart) = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p.to_string())),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return None;
            }
            (
                Some(rsip::Auth {
                    user: user.to_string(),
                    password,
                }),
                &rest[at + 1..],
            )
        }
        None => (None, rest),
    };
    let (hostport, params) = match hostpart.find(';') {
        Some(i) => hostpart.split_at(i),
        None => (hostpart, ""),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']')?;
        let ip: std::net::Ipv6Addr = v6[..close].parse().ok()?;
        let port = v6[close + 1..].strip_prefix(':');
        (rsip::Host::IpAddr(ip.into()), port)
    } else {
        let (h, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return None;
        }
        match h.parse::<std::net::IpAddr>() {
            Ok(ip) => (rsip::Host::IpAddr(ip), port),
            Err(_) => (rsip::Host::Domain(h.to_string().into()), port),
        }
    };
    let port = match port {
        Some(p) => Some(rsip::Port::from(p.parse::<u16>().ok()?)),
        None => None,
    };
    let params = if params.is_empty() {
        Vec::new()
    } else {
        rsip::Uri::try_from(format!("sip:h{params}")).ok()?.params
    };
    Some(rsip::Uri {
        scheme: Some(scheme),
        auth,
        host_with_port: rsip::HostWithPort { host, port },
        params,
        headers: Vec::new(),
    })
}

/// `scheme` of `scheme:...` (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).
pub(super) fn uri_scheme(uri: &[u8]) -> Option<&[u8]> {
    let colon = uri.iter().position(|&b| b == b':')?;
    let scheme = &uri[..colon];
    let ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    ok.then_some(scheme)
}

/// Whether a URI scheme is one pivotd serves: sip or sips, in any case (RFC 3261 §19.1.1).
/// Anything else in a Request-URI is answered [`super::Unsupported::Scheme`].
pub fn is_sip_scheme(scheme: &[u8]) -> bool {
    scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips")
}

/// [`is_sip_scheme`] for a parsed Request-URI that arrived over a `secure` (TLS) transport or
/// not: a `sips:` one only over TLS (RFC 3261 §26.2.2, RFC 5630 §3.1.3: every hop is secured).
/// No scheme is rsip's reading of a sip URI; the parser puts back a scheme rsip dropped
/// ([`super::parse`]).
pub fn scheme_supported(uri: &rsip::Uri, secure: bool) -> bool {
    match &uri.scheme {
        None | Some(rsip::Scheme::Sip) => true,
        Some(rsip::Scheme::Sips) => secure,
        Some(rsip::Scheme::Other(s)) if s.eq_ignore_ascii_case("sips") => secure,
        Some(rsip::Scheme::Other(s)) => s.eq_ignore_ascii_case("sip"),
    }
}
