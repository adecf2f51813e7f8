//! A hand-written digest client (RFC 7616 arithmetic done here with the md-5 and sha2 crates,
//! not pivotd's code) for the cases SIPp, baresip and pjsua2 cannot be made to send: replays,
//! stale nonces, SHA-256 chosen on purpose, several contacts, odd Expires.

use std::net::SocketAddr;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::{header, status, token, RawSip};

/// One challenge's parameters.
#[derive(Clone, Debug)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: String,
    pub stale: bool,
}

/// Every challenge of a 401/407, in order.
pub fn challenges(msg: &str, header_name: &str) -> Vec<Challenge> {
    msg.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(header_name).then(|| v.trim())
        })
        .map(|v| Challenge {
            realm: param(v, "realm").unwrap_or_default(),
            nonce: param(v, "nonce").unwrap_or_default(),
            algorithm: param(v, "algorithm").unwrap_or_else(|| "MD5".into()),
            stale: param(v, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
        .collect()
}

fn param(v: &str, name: &str) -> Option<String> {
    v.trim_start_matches("Digest")
        .split(',')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

fn h(alg: &str, s: &str) -> String {
    let bytes = if alg.eq_ignore_ascii_case("SHA-256") {
        Sha256::digest(s.as_bytes()).to_vec()
    } else {
        Md5::digest(s.as_bytes()).to_vec()
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The credentials header value answering `c` (qop=auth).
#[allow(clippy::too_many_arguments)]
pub fn credentials(
    c: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = h(&c.algorithm, &format!("{user}:{}:{password}", c.realm));
    let ha2 = h(&c.algorithm, &format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = h(
        &c.algorithm,
        &format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce),
    );
    format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}, cnonce=\"{cnonce}\", nc={nc}, qop=auth",
        c.realm, c.nonce, c.algorithm
    )
}

/// A phone that registers over one UDP socket: one Call-ID, a CSeq that grows.
pub struct Registrant {
    pub sip: RawSip,
    pub user: String,
    pub realm: String,
    pub call_id: String,
    pub cseq: u32,
    pub contact: String,
    pub user_agent: String,
}

impl Registrant {
    pub async fn new(server: SocketAddr, user: &str, realm: &str) -> Registrant {
        let sip = RawSip::udp(server).await;
        let contact = format!("sip:{user}@{}", sip.local());
        Registrant {
            sip,
            user: user.into(),
            realm: realm.into(),
            call_id: format!("{}@registrant", token()),
            cseq: 0,
            contact,
            user_agent: "pivotd-test registrant".into(),
        }
    }

    /// Sends one REGISTER with `extra` header lines (each ending in CRLF); returns the reply.
    pub async fn send(&mut self, extra: &str) -> String {
        self.cseq += 1;
        let local = self.sip.local();
        let msg = format!(
            "REGISTER sip:{realm} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{realm}>;tag={tag}\r\n\
             To: <sip:{user}@{realm}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             User-Agent: {ua}\r\n\
             {extra}Content-Length: 0\r\n\r\n",
            realm = self.realm,
            branch = token(),
            user = self.user,
            tag = token(),
            call_id = self.call_id,
            cseq = self.cseq,
            ua = self.user_agent,
        );
        self.sip.send(msg.as_bytes()).await;
        loop {
            let m = self.sip.recv(3000).await.expect("an answer to REGISTER");
            if header(&m, "CSeq").is_some_and(|c| c.starts_with(&format!("{} ", self.cseq)))
                && status(&m) >= 200
            {
                return m;
            }
        }
    }

    /// REGISTER, then the answer to its challenge with the first algorithm offered (or
    /// `prefer` when offered): returns the final reply.
    pub async fn register(&mut self, password: &str, extra: &str, prefer: Option<&str>) -> String {
        let first = self.send(extra).await;
        if status(&first) != 401 {
            return first;
        }
        let offered = challenges(&first, "WWW-Authenticate");
        let c = prefer
            .and_then(|p| offered.iter().find(|c| c.algorithm.eq_ignore_ascii_case(p)))
            .or(offered.first())
            .expect("a challenge")
            .clone();
        let auth = credentials(
            &c,
            &self.user,
            password,
            "REGISTER",
            &format!("sip:{}", self.realm),
            1,
            &token(),
        );
        self.send(&format!("{extra}Authorization: {auth}\r\n"))
            .await
    }
}

/// The `Contact` values of a 200 with their `expires`.
pub fn bindings(msg: &str) -> Vec<(String, u64)> {
    msg.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case("Contact").then(|| v.trim())
        })
        .filter_map(|v| {
            let uri = v.strip_prefix('<')?.split_once('>')?.0.to_string();
            let exp = v.split("expires=").nth(1)?.trim().parse().ok()?;
            Some((uri, exp))
        })
        .collect()
}
