//! HTTP Digest for SIP (RFC 3261 §22.4, RFC 7616 with the SIP algorithms of RFC 8760): the
//! challenge we send, the credentials a client answers with, and the check of its `response`.
//!
//! Only `qop=auth` is accepted: without a qop there is no nonce count, and so no replay check.

use std::fmt;

use md5::Md5;
use sha2::Sha256;
use thiserror::Error;

/// Longest Authorization value read (a real one is ~300 bytes; this bounds the work).
pub const MAX_CREDENTIALS_BYTES: usize = 4096;
/// More parameters than any client sends means garbage.
const MAX_PARAMS: usize = 24;

/// A digest algorithm of RFC 8760 (the `-sess` variants are not offered, so not accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha256];

    /// The token on the wire and in the config.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Case-insensitive, as RFC 7616 §3.3 reads tokens.
    pub fn from_name(s: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }

    /// Lower-case hex of H(parts joined by ':').
    pub fn hash_hex(self, parts: &[&[u8]]) -> String {
        match self {
            Algorithm::Md5 => hex(&joined::<Md5>(parts)),
            Algorithm::Sha256 => hex(&joined::<Sha256>(parts)),
        }
    }

    /// HA1 = H(username:realm:password): what the store keeps instead of the password.
    pub fn ha1(self, username: &str, realm: &str, password: &str) -> String {
        self.hash_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn joined<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
    let mut d = D::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(p);
    }
    d.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// One `WWW-Authenticate` / `Proxy-Authenticate` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    pub nonce: &'a str,
    pub algorithm: Algorithm,
    /// The nonce of the request was ours but expired: retry with this one, no new password
    /// prompt (RFC 7616 §3.3).
    pub stale: bool,
}

impl fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"",
            Quoted(self.realm),
            Quoted(self.nonce),
            self.algorithm
        )?;
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

/// A quoted-string's content with `"` and `\` escaped.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

/// What is wrong with an Authorization / Proxy-Authorization value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("longer than {MAX_CREDENTIALS_BYTES} bytes")]
    TooLong,
    #[error("not the Digest scheme")]
    NotDigest,
    #[error("malformed parameter list")]
    Malformed,
    #[error("parameter {0} given twice")]
    Repeated(&'static str),
    #[error("more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("unsupported algorithm")]
    Algorithm,
    #[error("qop other than auth")]
    Qop,
    #[error("nc is not 8 hex digits")]
    NonceCount,
    #[error("not UTF-8")]
    Encoding,
}

/// The Digest parameters a client sent (RFC 7616 §3.4), with qop=auth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: String,
    pub nc: u32,
    /// The nc as sent (8 hex digits): the response hashes these exact bytes.
    nc_text: String,
}

/// Parameters read, by their lower-case name.
const KNOWN: [&str; 10] = [
    "username",
    "realm",
    "nonce",
    "uri",
    "response",
    "algorithm",
    "cnonce",
    "nc",
    "qop",
    "opaque",
];

impl Credentials {
    /// Reads a header value such as `Digest username="2001", realm="…", …`.
    pub fn parse(value: &[u8]) -> Result<Credentials, CredentialsError> {
        let rest = digest_params(value)?;
        let mut found: [Option<String>; KNOWN.len()] = Default::default();
        for (name, val) in params(rest)? {
            let lower = name.to_ascii_lowercase();
            if let Some(i) = KNOWN.iter().position(|k| k.as_bytes() == lower.as_slice()) {
                if found[i].is_some() {
                    return Err(CredentialsError::Repeated(KNOWN[i]));
                }
                found[i] = Some(String::from_utf8(val).map_err(|_| CredentialsError::Encoding)?);
            }
        }
        let [username, realm, nonce, uri, response, algorithm, cnonce, nc, qop, _opaque] = found;
        let need = |v: Option<String>, name| v.ok_or(CredentialsError::Missing(name));
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a).ok_or(CredentialsError::Algorithm)?,
        };
        if !need(qop, "qop")?.eq_ignore_ascii_case("auth") {
            return Err(CredentialsError::Qop);
        }
        let nc_text = need(nc, "nc")?;
        let nc = (nc_text.len() == 8 && nc_text.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u32::from_str_radix(&nc_text, 16).ok())
            .flatten()
            .ok_or(CredentialsError::NonceCount)?;
        Ok(Credentials {
            username: need(username, "username")?,
            realm: need(realm, "realm")?,
            nonce: need(nonce, "nonce")?,
            uri: need(uri, "uri")?,
            response: need(response, "response")?,
            algorithm,
            cnonce: need(cnonce, "cnonce")?,
            nc,
            nc_text,
        })
    }

    /// The response a client knowing the password behind `ha1` sends for `method`.
    pub fn expected_response(&self, ha1: &str, method: &str) -> String {
        let alg = self.algorithm;
        let ha2 = alg.hash_hex(&[method.as_bytes(), self.uri.as_bytes()]);
        alg.hash_hex(&[
            ha1.as_bytes(),
            self.nonce.as_bytes(),
            self.nc_text.as_bytes(),
            self.cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ])
    }

    /// Whether `response` proves the password behind `ha1` (compared in constant time).
    pub fn verify(&self, ha1: &str, method: &str) -> bool {
        let want = self.expected_response(ha1, method);
        let got = self.response.to_ascii_lowercase();
        want.len() == got.len()
            && want
                .bytes()
                .zip(got.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The parameter list of a `Digest …` header value (credentials or challenge), bounded.
pub(super) fn digest_params(value: &[u8]) -> Result<&[u8], CredentialsError> {
    if value.len() > MAX_CREDENTIALS_BYTES {
        return Err(CredentialsError::TooLong);
    }
    let value = trim(value);
    let scheme_end = value
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .ok_or(CredentialsError::NotDigest)?;
    let (scheme, rest) = value.split_at(scheme_end);
    if !scheme.eq_ignore_ascii_case(b"digest") {
        return Err(CredentialsError::NotDigest);
    }
    Ok(rest)
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if !first.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    while let [rest @ .., last] = b {
        if !last.is_ascii_whitespace() {
            break;
        }
        b = rest;
    }
    b
}

/// A parameter's name and (unquoted) value.
pub(super) type Param = (Vec<u8>, Vec<u8>);

/// `name=token` or `name="quoted"` pairs separated by commas (RFC 7616 §3.4 auth-params).
pub(super) fn params(input: &[u8]) -> Result<Vec<Param>, CredentialsError> {
    let mut out = Vec::new();
    let mut it = input.iter().copied().peekable();
    loop {
        while it
            .next_if(|b| b.is_ascii_whitespace() || *b == b',')
            .is_some()
        {}
        if it.peek().is_none() {
            return Ok(out);
        }
        if out.len() == MAX_PARAMS {
            return Err(CredentialsError::TooManyParams);
        }
        let mut name = Vec::new();
        while let Some(b) = it.next_if(|b| is_token(*b)) {
            name.push(b);
        }
        while it.next_if(|b| b.is_ascii_whitespace()).is_some() {}
        if name.is_empty() || it.next() != Some(b'=') {
            return Err(CredentialsError::Malformed);
        }
        while it.next_if(|b| b.is_ascii_whitespace()).is_some() {}
        let mut value = Vec::new();
        if it.next_if_eq(&b'"').is_some() {
            loop {
                match it.next() {
                    None => return Err(CredentialsError::Malformed),
                    Some(b'"') => break,
                    Some(b'\\') => value.push(it.next().ok_or(CredentialsError::Malformed)?),
                    Some(b) => value.push(b),
                }
            }
        } else {
            while let Some(b) = it.next_if(|b| is_token(*b)) {
                value.push(b);
            }
            if value.is_empty() {
                return Err(CredentialsError::Malformed);
            }
        }
        while it.next_if(|b| b.is_ascii_whitespace()).is_some() {}
        match it.peek() {
            None | Some(b',') => out.push((name, value)),
            Some(_) => return Err(CredentialsError::Malformed),
        }
    }
}

/// RFC 3261 §25.1 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1's example (an HTTP request, but the computation is the same).
    const RFC7616_SHA256: &str = concat!(
        "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", ",
        "algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", ",
        "nc=00000001, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, ",
        "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", ",
        "opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
    );
    const RFC7616_MD5_RESPONSE: &str = "8ca523f5e9506fed4657c9700eebdbec";

    #[test]
    fn rfc7616_examples_verify() {
        let c = Credentials::parse(RFC7616_SHA256.as_bytes()).unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.nc, 1);
        let ha1 = Algorithm::Sha256.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        assert!(c.verify(&ha1, "GET"));
        assert!(!c.verify(&ha1, "POST"));
        let wrong = Algorithm::Sha256.ha1("Mufasa", "http-auth@example.org", "circle of life");
        assert!(!c.verify(&wrong, "GET"));

        let md5 = RFC7616_SHA256
            .replace("algorithm=SHA-256", "algorithm=MD5")
            .replace(
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
                RFC7616_MD5_RESPONSE,
            );
        let c = Credentials::parse(md5.as_bytes()).unwrap();
        let ha1 = Algorithm::Md5.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        assert!(c.verify(&ha1, "GET"));
    }

    #[test]
    fn algorithm_defaults_to_md5_and_names_are_case_insensitive() {
        let v = b"digest username=\"a\",realm=\"r\",nonce=\"n\",uri=\"sip:r\",response=\"x\",cnonce=\"c\",nc=0000000a,qop=AUTH";
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.algorithm, Algorithm::Md5);
        assert_eq!(c.nc, 10);
        assert_eq!(Algorithm::from_name("sha-256"), Some(Algorithm::Sha256));
        assert_eq!(Algorithm::from_name("SHA-512-256"), None);
    }

    #[test]
    fn challenge_quotes_and_flags_stale() {
        let c = Challenge {
            realm: "a\"b",
            nonce: "n1",
            algorithm: Algorithm::Sha256,
            stale: true,
        };
        assert_eq!(
            c.to_string(),
            "Digest realm=\"a\\\"b\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\", stale=true"
        );
    }

    #[test]
    fn quoted_values_unescape() {
        let v = br#"Digest username="a\"b", realm="r", nonce="n", uri="u", response="x", cnonce="c", nc=00000001, qop=auth"#;
        assert_eq!(Credentials::parse(v).unwrap().username, "a\"b");
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let ok = "username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", cnonce=\"c\", nc=00000001, qop=auth";
        let case = |v: String| Credentials::parse(v.as_bytes()).unwrap_err();
        assert_eq!(case(format!("Basic {ok}")), CredentialsError::NotDigest);
        assert_eq!(case("Digest".into()), CredentialsError::NotDigest);
        assert_eq!(
            case(format!("Digest {ok}, realm=\"s\"")),
            CredentialsError::Repeated("realm")
        );
        assert_eq!(
            case(format!("Digest {}", ok.replace("qop=auth", "qop=auth-int"))),
            CredentialsError::Qop
        );
        assert_eq!(
            case(format!("Digest {}", ok.replace(", qop=auth", ""))),
            CredentialsError::Missing("qop")
        );
        assert_eq!(
            case(format!("Digest {}", ok.replace("00000001", "1"))),
            CredentialsError::NonceCount
        );
        assert_eq!(
            case(format!("Digest {ok}, algorithm=SHA-512")),
            CredentialsError::Algorithm
        );
        assert_eq!(
            case("Digest username=\"a".into()),
            CredentialsError::Malformed
        );
        assert_eq!(case("Digest =x".into()), CredentialsError::Malformed);
        assert_eq!(case("Digest a=b c".into()), CredentialsError::Malformed);
        assert_eq!(
            case(format!("Digest {}", "x=1,".repeat(30))),
            CredentialsError::TooManyParams
        );
        assert_eq!(
            case(format!("Digest username=\"{}\"", "a".repeat(5000))),
            CredentialsError::TooLong
        );
        assert!(Credentials::parse(&[b'D', 0xff, 0xfe]).is_err());
        let bad_utf8 = [b"Digest username=\"".as_slice(), &[0xc3, 0x28], b"\""].concat();
        assert_eq!(
            Credentials::parse(&bad_utf8).unwrap_err(),
            CredentialsError::Encoding
        );
    }
}
