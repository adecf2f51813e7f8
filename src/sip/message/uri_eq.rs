//! When two SIP URIs are the same (RFC 3261 §19.1.4), and `%XX` escapes (§19.1.2): a phone
//! re-registering with its parameters reordered or its host in another case refreshes its
//! binding instead of adding a second one.

/// `%XX` escapes decoded (an incomplete or non-hex escape is kept as written).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parameters that make URIs differ when only one of them has it (§19.1.4).
const MUST_MATCH: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];

/// A sip/sips URI taken apart for comparison.
struct Parts {
    scheme: String,
    userinfo: Option<String>,
    hostport: String,
    params: Vec<(String, Option<String>)>,
    headers: Vec<(String, String)>,
}

fn parts(uri: &str) -> Option<Parts> {
    let (scheme, rest) = uri.trim().split_once(':')?;
    let (main, headers) = match rest.split_once('?') {
        Some((m, h)) => (m, h),
        None => (rest, ""),
    };
    let mut pieces = main.split(';');
    let addr = pieces.next()?;
    let (userinfo, hostport) = match addr.rsplit_once('@') {
        Some((u, h)) => (Some(percent_decode(u)), h),
        None => (None, addr),
    };
    let params = pieces
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (
                n.to_ascii_lowercase(),
                Some(percent_decode(v).to_ascii_lowercase()),
            ),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect();
    let mut headers: Vec<(String, String)> = headers
        .split('&')
        .filter(|h| !h.is_empty())
        .map(|h| match h.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), percent_decode(v)),
            None => (h.to_ascii_lowercase(), String::new()),
        })
        .collect();
    headers.sort();
    Some(Parts {
        scheme: scheme.to_ascii_lowercase(),
        userinfo,
        hostport: hostport.to_ascii_lowercase(),
        params,
        headers,
    })
}

/// Whether two URIs are equivalent by RFC 3261 §19.1.4: the user part compared exactly
/// after unescaping, the host and port without regard to case (a missing port is not 5060),
/// `user`/`ttl`/`method`/`maddr`/`transport` present in both or neither, other parameters
/// equal where both have them, and the same headers. Unreadable URIs compare as text.
pub fn uri_equivalent(a: &str, b: &str) -> bool {
    let (Some(x), Some(y)) = (parts(a), parts(b)) else {
        return a == b;
    };
    if x.scheme != y.scheme
        || x.userinfo != y.userinfo
        || x.hostport != y.hostport
        || x.headers != y.headers
    {
        return false;
    }
    let get = |p: &Parts, name: &str| {
        p.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let names = x.params.iter().chain(&y.params).map(|(n, _)| n.as_str());
    for name in names {
        match (get(&x, name), get(&y, name)) {
            (Some(v), Some(w)) if v != w => return false,
            (Some(_), None) | (None, Some(_)) if MUST_MATCH.contains(&name) => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of RFC 3261 §19.1.4.
    #[test]
    fn rfc3261_examples() {
        for (a, b) in [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanta.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ] {
            assert!(uri_equivalent(a, b), "{a} = {b}");
            assert!(uri_equivalent(b, a), "{b} = {a}");
        }
        for (a, b) in [
            (
                "SIP:ALICE@AtLanta.CoM;Transport=udp",
                "sip:alice@AtLanta.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            (
                "sip:carol@chicago.com;security=on",
                "sip:carol@chicago.com;security=off",
            ),
        ] {
            assert!(!uri_equivalent(a, b), "{a} != {b}");
            assert!(!uri_equivalent(b, a), "{b} != {a}");
        }
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(
            percent_decode("sips%3Auser%40example.com"),
            "sips:user@example.com"
        );
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz1"), "%zz1");
        assert_eq!(percent_decode("%é1"), "%é1");
    }
}
