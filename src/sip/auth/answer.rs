//! The client side of digest: reading a challenge a carrier sends us (401/407) and the
//! credentials that answer it (RFC 3261 §22.2, RFC 7616, RFC 8760). Carriers still send
//! RFC 2069-style challenges without `qop`: those are answered without a nonce count.

use super::digest::{params, Algorithm, CredentialsError};

/// A challenge as received: what answering it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedChallenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    /// `qop` offered with `auth` among its values; `false`: the RFC 2069 form.
    pub qop_auth: bool,
    pub opaque: Option<String>,
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error(transparent)]
    Syntax(#[from] CredentialsError),
    #[error("unsupported algorithm")]
    Algorithm,
    /// `qop` offered, but only `auth-int` (which needs the body hashed; not supported).
    #[error("qop without auth")]
    Qop,
}

impl ReceivedChallenge {
    /// Reads a `WWW-Authenticate` / `Proxy-Authenticate` value.
    pub fn parse(value: &[u8]) -> Result<ReceivedChallenge, ChallengeError> {
        let rest = super::digest::digest_params(value)?;
        let (mut realm, mut nonce, mut algorithm, mut qop, mut opaque, mut stale) =
            (None, None, None, None, None, false);
        for (name, v) in params(rest)? {
            let v = String::from_utf8(v).map_err(|_| CredentialsError::Encoding)?;
            match name.to_ascii_lowercase().as_slice() {
                b"realm" => realm = Some(v),
                b"nonce" => nonce = Some(v),
                b"algorithm" => algorithm = Some(v),
                b"qop" => qop = Some(v),
                b"opaque" => opaque = Some(v),
                b"stale" => stale = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        let algorithm = match algorithm {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a).ok_or(ChallengeError::Algorithm)?,
        };
        let qop_auth = match qop {
            None => false,
            Some(q) if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) => true,
            Some(_) => return Err(ChallengeError::Qop),
        };
        Ok(ReceivedChallenge {
            realm: realm.ok_or(CredentialsError::Missing("realm"))?,
            nonce: nonce.ok_or(CredentialsError::Missing("nonce"))?,
            algorithm,
            qop_auth,
            opaque,
            stale,
        })
    }

    /// The first of several challenges (one per header value, in order) that we can answer
    /// (RFC 8760 §2.4: the topmost supported one).
    pub fn first_supported<'v>(
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> Option<ReceivedChallenge> {
        values
            .into_iter()
            .find_map(|v| ReceivedChallenge::parse(v).ok())
    }

    /// The Authorization / Proxy-Authorization value for `method` on `uri`. `nc` counts the
    /// requests made with this nonce (from 1); `cnonce` is ours, fresh per nonce.
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let alg = self.algorithm;
        let ha1 = alg.ha1(username, &self.realm, password);
        let ha2 = alg.hash_hex(&[method.as_bytes(), uri.as_bytes()]);
        let mut out = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={alg}",
            quoted(username),
            quoted(&self.realm),
            quoted(&self.nonce),
            quoted(uri)
        );
        let response = if self.qop_auth {
            let nc = format!("{nc:08x}");
            out.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{}\"",
                quoted(cnonce)
            ));
            alg.hash_hex(&[
                ha1.as_bytes(),
                self.nonce.as_bytes(),
                nc.as_bytes(),
                cnonce.as_bytes(),
                b"auth",
                ha2.as_bytes(),
            ])
        } else {
            alg.hash_hex(&[ha1.as_bytes(), self.nonce.as_bytes(), ha2.as_bytes()])
        };
        out.push_str(&format!(", response=\"{response}\""));
        if let Some(o) = &self.opaque {
            out.push_str(&format!(", opaque=\"{}\"", quoted(o)));
        }
        out
    }
}

/// A quoted-string's content: `"` and `\` escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::digest::{Challenge, Credentials};

    #[test]
    fn answers_rfc7616s_challenge_with_its_response() {
        let c = ReceivedChallenge::parse(
            br#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .unwrap();
        assert!(c.qop_auth);
        let a = c.answer(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            a.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{a}"
        );
        assert!(a.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""));
    }

    #[test]
    fn our_own_challenge_answered_verifies() {
        for algorithm in Algorithm::ALL {
            let ours = Challenge {
                realm: "pbx.test",
                nonce: "n0nce",
                algorithm,
                stale: false,
            }
            .to_string();
            let c = ReceivedChallenge::parse(ours.as_bytes()).unwrap();
            let a = c.answer("2001", "pw", "INVITE", "sip:5000@pbx.test", 7, "cn");
            let creds = Credentials::parse(a.as_bytes()).unwrap();
            assert_eq!(creds.nc, 7);
            let ha1 = algorithm.ha1("2001", "pbx.test", "pw");
            assert!(creds.verify(&ha1, "INVITE"), "{algorithm}: {a}");
        }
    }

    #[test]
    fn rfc2069_challenges_are_answered_without_qop() {
        let c = ReceivedChallenge::parse(b"Digest realm=\"carrier\", nonce=\"abc\"").unwrap();
        assert_eq!((c.algorithm, c.qop_auth), (Algorithm::Md5, false));
        let a = c.answer("u", "p", "INVITE", "sip:1@carrier", 1, "x");
        // response = MD5(HA1:nonce:HA2), computed independently here.
        let ha1 = Algorithm::Md5.hash_hex(&[b"u", b"carrier", b"p"]);
        let ha2 = Algorithm::Md5.hash_hex(&[b"INVITE", b"sip:1@carrier"]);
        let want = Algorithm::Md5.hash_hex(&[ha1.as_bytes(), b"abc", ha2.as_bytes()]);
        assert!(a.contains(&format!("response=\"{want}\"")), "{a}");
        assert!(!a.contains("qop") && !a.contains("nc="), "{a}");
    }

    #[test]
    fn the_first_supported_challenge_is_taken_and_bad_ones_are_typed() {
        let values: [&[u8]; 3] = [
            b"Digest realm=\"r\", nonce=\"1\", algorithm=SHA-512-256",
            b"Digest realm=\"r\", nonce=\"2\", algorithm=SHA-256, qop=\"auth\"",
            b"Digest realm=\"r\", nonce=\"3\", algorithm=MD5",
        ];
        let c = ReceivedChallenge::first_supported(values).unwrap();
        assert_eq!((c.nonce.as_str(), c.algorithm), ("2", Algorithm::Sha256));
        assert_eq!(
            ReceivedChallenge::parse(b"Digest realm=\"r\", nonce=\"1\", qop=\"auth-int\""),
            Err(ChallengeError::Qop)
        );
        assert_eq!(
            ReceivedChallenge::parse(b"Digest nonce=\"1\""),
            Err(ChallengeError::Syntax(CredentialsError::Missing("realm")))
        );
        assert!(ReceivedChallenge::parse(b"Basic realm=\"r\"").is_err());
    }
}
