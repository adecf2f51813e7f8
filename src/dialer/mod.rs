//! `pivotd call`: a SIP caller built from pivotd's own SIP and media code, for trying a pivot
//! app without a phone. It dials a number at a SIP server, answers a digest challenge, sends
//! RFC 4733 digits when told (or when the prompt it hears ends), records what it hears and
//! prints the call as a timeline, merged with the server's own event log when given the API.
//! `pivotd call --show CALL_ID` prints a stored call's timeline.
//!
//! - this file: the command line, the run, the errors and the exit status;
//! - `call.rs`: the call itself (the UA: INVITE, challenge, ACK, in-dialog requests, BYE);
//! - `media.rs`: our RTP session: the offer, what we send (silence, digits), what we hear;
//! - `digits.rs`: when the prompt heard has ended (G.711 energy);
//! - `record.rs`: what we hear, as an 8 kHz 16-bit mono WAV;
//! - `server_log.rs`: the server's event log over its HTTP API;
//! - `timeline.rs`: the merged timeline on stdout (plain, coloured, JSON) and the summary.

mod call;
mod digits;
mod media;
mod record;
mod server_log;
mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::media::rtp::RtpError;
use crate::sip::transport::{TlsConnectError, TransportError};
pub use server_log::ApiError;

/// `pivotd call`'s arguments.
#[derive(clap::Args, Debug, Clone)]
#[command(
    about = "Call a number at a SIP server (pivotd) and print the call's timeline",
    after_help = "Exit status: 0 when the call was answered and ended normally (a BYE from \
                  either side, or --hangup-after); 1 when it was refused, failed or not \
                  answered; 2 for a usage, network or API error."
)]
pub struct CallArgs {
    /// The number to call: NUMBER, or NUMBER@DOMAIN to name the domain (default: the
    /// server's address).
    #[arg(required_unless_present = "show", conflicts_with = "show", value_parser = parse_number)]
    pub number: Option<String>,
    /// Print the stored timeline of a call (any call the server took) instead of calling;
    /// needs --api and --api-key.
    #[arg(long, value_name = "CALL_ID", requires_all = ["api", "api_key"])]
    pub show: Option<String>,
    /// The SIP server, HOST[:PORT] (the port 5060, or 5061 with --tls, when left out).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub server: String,
    /// SIP over TCP instead of UDP.
    #[arg(long, conflicts_with = "tls")]
    pub tcp: bool,
    /// SIP over TLS: the server's certificate is verified against the system's root
    /// certificates and --ca, for the host of NUMBER@DOMAIN, else of --server (or --tls-name).
    #[arg(long)]
    pub tls: bool,
    /// More root certificates to trust for --tls (a PEM file: a private CA's).
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca: Option<PathBuf>,
    /// The name the server's certificate must carry, instead of the host called.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_name: Option<String>,
    /// Encrypted audio (SRTP, keys by SDES in the SDP, so only over --tls): RTP/SAVP is
    /// offered with a key per suite; an answer without a usable key is hung up (exit 1).
    #[arg(long, requires = "tls")]
    pub srtp: bool,
    /// Digits to send as RFC 4733 events (0-9, *, #, A-D): after --digits-after from the
    /// answer, or without it when the prompt heard ends.
    #[arg(long, value_parser = parse_digits)]
    pub digits: Option<String>,
    /// When to send --digits, counted from the answer (2s, 500ms, 1.5).
    #[arg(long, value_parser = parse_duration, value_name = "TIME", requires = "digits")]
    pub digits_after: Option<Duration>,
    /// Hang up (BYE) this long after the answer; an unanswered call is cancelled then.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "TIME")]
    pub hangup_after: Duration,
    /// Record what is heard, from the answer to the end (8 kHz 16-bit mono WAV).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// The caller's user in From (default: --user, else "pivotd").
    #[arg(long, value_name = "USER", value_parser = parse_user)]
    pub from: Option<String>,
    /// Digest username for a 401/407 challenge (a device's).
    #[arg(long, requires = "password", value_parser = parse_user)]
    pub user: Option<String>,
    /// Digest password.
    #[arg(long, requires = "user")]
    pub password: Option<String>,
    /// The server's HTTP API (http://HOST:PORT): its side of the call joins the timeline.
    #[arg(long, value_name = "URL", requires = "api_key")]
    pub api: Option<String>,
    /// The account's API key, for --api.
    #[arg(long, value_name = "KEY", requires = "api")]
    pub api_key: Option<String>,
    /// One JSON object per line (the events, then a summary) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why `pivotd call` could not do its job (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum DialerError {
    #[error("cannot find the server {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server {addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("no local address reaches {server}: {source}")]
    NoRoute {
        server: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start SIP: {0}")]
    Sip(#[from] TransportError),
    #[error("{0} (trust its CA with --ca FILE, or give the name it carries with --tls-name)")]
    Certificate(TlsConnectError),
    #[error("cannot reach the server over TLS: {0}")]
    Tls(TlsConnectError),
    #[error("cannot start RTP: {0}")]
    Rtp(#[from] RtpError),
    #[error("cannot record to {path}: {source}")]
    Record { path: PathBuf, source: hound::Error },
    #[error("no response from {server} (is a SIP server listening there?)")]
    NoResponse { server: std::net::SocketAddr },
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Exit statuses.
const EXIT_OK: u8 = 0;
const EXIT_CALL_FAILED: u8 = 1;
const EXIT_ERROR: u8 = 2;

/// Runs `pivotd call` and gives its exit status.
pub fn main(args: CallArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return error_exit(&DialerError::Runtime(e), args.json),
    };
    let json = args.json;
    match rt.block_on(run(args)) {
        Ok(status) => ExitCode::from(status),
        Err(e) => error_exit(&e, json),
    }
}

fn error_exit(e: &DialerError, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::json!({"kind": "error", "error": e.to_string(), "exit_status": EXIT_ERROR})
        );
    }
    eprintln!("pivotd call: {e}");
    ExitCode::from(EXIT_ERROR)
}

async fn run(args: CallArgs) -> Result<u8, DialerError> {
    let api = match (&args.api, &args.api_key) {
        // Logged in before anything else: a wrong key fails at once, no call placed.
        (Some(base), Some(key)) => Some(server_log::EventsApi::login(base, key).await?),
        _ => None,
    };
    let style = timeline::Style::for_stdout(args.json);
    if let Some(call_id) = &args.show {
        let Some(api) = api else {
            return Ok(EXIT_ERROR);
        };
        return timeline::show(&api, call_id, style).await;
    }
    call::place(&args, api, style).await
}

/// `2s`, `500ms`, `1.5s`, `1m`, or plain seconds (`20`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (like 2s, 500ms, 1.5)"))?;
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text:?} is not between 0 and 24 hours"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A SIP URI's user part as typed (RFC 3261 §25.1 `user`, without escapes): it goes into
/// the INVITE's Request-URI, To and From as it is.
pub fn parse_user(text: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/#".contains(c);
    if text.is_empty() || !text.chars().all(ok) {
        return Err(format!(
            "{text:?} is not a SIP user part (letters, digits, -_.!~*'()&=+$,;?/#)"
        ));
    }
    Ok(text.to_string())
}

/// `NUMBER` or `NUMBER@DOMAIN` (a host name or address, and a port).
pub fn parse_number(text: &str) -> Result<String, String> {
    let (user, domain) = match text.split_once('@') {
        Some((u, d)) => (u, Some(d)),
        None => (text, None),
    };
    parse_user(user)?;
    if let Some(d) = domain {
        let ok = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
        if d.is_empty() || !d.chars().all(ok) {
            return Err(format!(
                "{d:?} is not a domain (a host name or address, :port)"
            ));
        }
    }
    Ok(text.to_string())
}

/// Keys RFC 4733 carries (`media/dtmf.rs`), at most as many as one send takes.
pub fn parse_digits(text: &str) -> Result<String, String> {
    use crate::media::dtmf::event_code;
    use crate::media::rtp::MAX_DIGITS;
    if text.is_empty() {
        return Err("no digits".to_string());
    }
    if let Some(bad) = text.chars().find(|c| event_code(*c).is_none()) {
        return Err(format!("{bad:?} is not a DTMF key (0-9, *, #, A-D)"));
    }
    if text.chars().count() > MAX_DIGITS {
        return Err(format!("at most {MAX_DIGITS} digits"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn numbers_and_users_are_what_a_sip_uri_holds() {
        assert!(parse_number("6000").is_ok());
        assert!(parse_number("+4930123@pivotd.test").is_ok());
        assert!(parse_number("5000@[::1]:5070").is_ok());
        assert!(parse_number("60 00").is_err());
        assert!(parse_number("6000\r\nX: y").is_err());
        assert!(parse_number("6000@").is_err());
        assert!(parse_number("@pivotd.test").is_err());
        assert!(parse_user("alice<").is_err());
    }

    #[test]
    fn digits_are_dtmf_keys_only() {
        assert_eq!(parse_digits("12#*A").as_deref(), Ok("12#*A"));
        assert!(parse_digits("12x").is_err());
        assert!(parse_digits("").is_err());
        assert!(parse_digits(&"1".repeat(65)).is_err());
    }
}
