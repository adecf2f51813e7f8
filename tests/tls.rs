//! SIP over TLS (RFC 3261 §26, RFC 5630): real phones (baresip, pjsua2) registering and
//! calling over TLS, a bridge ringing a phone on its own TLS connection, carriers over TLS
//! (verified against `tls_ca_file`; an untrusted one fails), the front door's limits on the
//! TLS port, `sips:` only over TLS, and the certificate's reload. Certificates are made per
//! test with the openssl CLI (`common::tls`). SIPp over TLS is in tests/sipp_tls.rs.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::baresip::{logged_message, Baresip};
use common::bridge::{received_pcm, send_key, send_tone, tone_share, Caller, ToneFile};
use common::http::HttpServer;
use common::pjsua::Pjsua;
use common::tls::{assert_one_clean_srtp_call, cert_der, gather_server, tls_keys, TestCa};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;

const REALM: &str = "pivotd.test";

/// Device d1 (username 2001) of the test account.
const DEVICE: &str = r#"
[[accounts.devices]]
id = "d1"
username = "2001"
password = "s3cret"
"#;

/// A server with a TLS listener whose certificate `ca` signed.
async fn tls_server(ca: &TestCa, callflows: &str, sip_extra: &str) -> TestServer {
    let (cert, key) = ca.issue("server", "pivotd-test");
    start(&config_toml(
        callflows,
        &tls_keys(&cert, &key, sip_extra),
        "",
    ))
    .await
}

/// A TLS server whose 6002 bridges to the device d1 (2001), the account's own keys first
/// (`encryption = …`), unauthenticated callers allowed.
async fn device_bridge_server(ca: &TestCa, account_keys: &str) -> TestServer {
    let callflows = format!(
        r#"{account_keys}
[[accounts.callflows]]
numbers = ["6002"]
flow = {{ module = "device", data = {{ id = "d1", timeout = 10 }} }}
{DEVICE}
"#
    );
    tls_server(ca, &callflows, "allow_unauthenticated = true").await
}

/// The first 2xx with an SDP body in baresip's SIP trace (either way).
fn logged_200_with_sdp(log: &str) -> &str {
    logged_message(log, "SIP/2.0 200 ", "m=audio")
        .unwrap_or_else(|| panic!("no 200 with SDP in the phone's log:\n{log}"))
}

fn tls_addr(server: &TestServer) -> SocketAddr {
    server.handle.tls[0]
}

fn stats(server: &TestServer) -> &pivotd::sip::transport::TransportStats {
    &server.handle.endpoint.transport().stats
}

/// The share of `freq` in `pcm` after its first 100 ms (the start may be silence).
fn share_after_start(pcm: &[i16], freq: f32, samples: usize) -> f32 {
    let from = 800.min(pcm.len());
    let to = (from + samples).min(pcm.len());
    tone_share(&pcm[from..to], freq)
}

/// Whether the web server is asked for `path` within 10 s.
async fn asked(web: &HttpServer, path: &str) -> bool {
    eventually(10, || web.requests().iter().any(|r| r.path() == path)).await
}

/// The Gather's action is asked, with `digits`.
async fn assert_key_collected(web: &HttpServer, digits: &str, log: impl Fn() -> String) {
    assert!(
        asked(web, "/done").await,
        "the Gather's action was not asked:\n{}",
        log()
    );
    let action = web
        .requests()
        .into_iter()
        .find(|r| r.path() == "/done")
        .unwrap();
    assert_eq!(
        action.field("Digits").as_deref(),
        Some(digits),
        "{action:?}"
    );
}

/// baresip registers over TLS with `account_params`, dials 5000 (answering the 407), hears
/// the prompt of a TwiML `<Gather>` by its content, and the key it sends (RFC 4733) reaches
/// the Gather's action; `<Hangup/>` ends the call. The phone (its log) and the server, for
/// what each test checks beside.
async fn baresip_gather_call_over_tls(account_params: &str, key: &str) -> (Baresip, TestServer) {
    let ca = TestCa::new("pivotd test CA");
    let (web, server) = gather_server(&ca).await;
    let silence = ToneFile::new(0.0, 30);
    let phone = Baresip::start_tls(
        tls_addr(&server),
        "2001",
        "s3cret",
        REALM,
        &ca.ca,
        silence.path(),
        &[&format!("/dial sip:5000@{REALM}")],
        account_params,
    )
    .await;
    let transport = registered_transport(&server, "d1", || phone.log()).await;
    assert_eq!(transport, "TLS", "the binding's transport");
    assert!(
        asked(&web, "/ivr").await,
        "no pivot request:\n{}",
        phone.log()
    );
    // The prompt plays for a while, then the key.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phone.send_keys(key).await;
    assert_key_collected(&web, key, || phone.log()).await;
    // <Hangup/>: the BYE reaches the phone on its TLS connection and its recording closes.
    let heard = eventually(10, || phone.heard().is_some()).await;
    assert!(heard, "baresip's call did not end:\n{}", phone.log());
    let pcm = phone.heard().unwrap();
    let share = share_after_start(&pcm, 1000.0, 8000);
    assert!(share > 0.5, "baresip hears the 1 kHz prompt: {share}");
    (phone, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_and_calls_over_tls_hears_the_prompt_and_its_key_is_collected() {
    let (phone, server) = baresip_gather_call_over_tls("", "5").await;
    let log = phone.log();
    assert!(log.contains("Via: SIP/2.0/TLS"), "{log}");
    assert!(
        log.contains(&format!(
            "127.0.0.1:{};transport=tls>",
            tls_addr(&server).port()
        )),
        "our Contact names the TLS socket:\n{log}"
    );
}

/// SRTP (issue 15): baresip over TLS with `mediaenc=srtp-mand` offers RTP/SAVP with SDES
/// keys; pivotd answers RTP/SAVP with its own key, and the call works encrypted both ways: the
/// phone (which takes nothing but SRTP) decrypts and hears the prompt, pivotd decrypts the
/// phone's RFC 4733 key. The call is counted in `/metrics`, no packet refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_over_tls_with_srtp_hears_the_prompt_and_its_key_is_collected() {
    let (phone, server) = baresip_gather_call_over_tls(";mediaenc=srtp-mand", "7").await;
    // pivotd's answer, as the phone logged it: RTP/SAVP with one SDES line of pivotd's.
    let log = phone.log();
    let answer = logged_200_with_sdp(&log);
    assert!(answer.contains("RTP/SAVP"), "{answer}");
    assert_eq!(answer.matches("a=crypto:").count(), 1, "{answer}");
    // Counted once the call has ended, with no packet refused.
    assert_one_clean_srtp_call(&server).await;
}

/// SRTP on the second leg, `encryption = "optional"` (the default): a bridge rings a baresip
/// that registered over TLS with SRTP (`mediaenc=srtp`); pivotd's INVITE carries SDES keys of
/// its own (one line per suite) on RTP/AVP (best-effort: a phone without SRTP answers plain,
/// as in the other TLS bridge tests), the phone answers with its key, and the relay carries the
/// audio between a plain RTP caller (over UDP) and the SRTP callee, each way, by content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridged_phone_over_tls_gets_best_effort_srtp_when_optional() {
    let ca = TestCa::new("pivotd test CA");
    let server = device_bridge_server(&ca, "encryption = \"optional\"").await;
    let tone = ToneFile::new(1000.0, 30);
    let phone = Baresip::start_tls(
        tls_addr(&server),
        "2001",
        "s3cret",
        REALM,
        &ca.ca,
        tone.path(),
        &[],
        ";answermode=auto;mediaenc=srtp",
    )
    .await;
    registered_transport(&server, "d1", || phone.log()).await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6002", &[0], 10_000).await;
    assert!(
        m_audio(&ok).contains("RTP/AVP"),
        "the caller stays plain: {ok}"
    );
    send_tone(&caller.media.socket, media_addr(&ok), 0, 450.0, 1500).await;
    let heard = received_pcm(&caller.media);
    assert!(
        heard.len() >= 4000,
        "the caller got {} samples",
        heard.len()
    );
    let share = tone_share(&heard[heard.len() / 2..], 1000.0);
    assert!(
        share > 0.5,
        "the caller hears the SRTP phone's 1 kHz: {share}"
    );
    caller.bye(&ok).await;
    let ended = eventually(10, || phone.heard().is_some()).await;
    assert!(ended, "the phone's call did not end:\n{}", phone.log());
    let pcm = phone.heard().unwrap();
    let share = tone_share(&pcm[pcm.len() / 2..], 450.0);
    assert!(
        share > 0.3,
        "the SRTP phone hears the caller's 450 Hz: {share}"
    );
    // What pivotd offered the phone, and what it answered.
    let log = phone.log();
    let invite = log
        .split("INVITE sip:2001-")
        .nth(1)
        .map(|m| m.split("\u{1b}[;m").next().unwrap_or(m))
        .unwrap_or_else(|| panic!("no INVITE in the phone's log:\n{log}"));
    assert!(invite.contains(" RTP/AVP "), "{invite}");
    assert_eq!(invite.matches("a=crypto:").count(), 3, "{invite}");
    // The phone's 200 names one of our lines with its own key: the leg is SRTP both ways
    // (the phone, keyed, takes no plain packet; it heard the caller's tone above).
    let answer = logged_200_with_sdp(&log);
    assert_eq!(answer.matches("a=crypto:").count(), 1, "{answer}");
    assert!(log.contains("SRTP is Enabled"), "{log}");
}

/// A bridge (the `device` module) rings a baresip that registered over TLS on the phone's own
/// connection (no new one is opened: it is behind NAT); it answers and each side hears the
/// other. Once that phone is gone, its connection with it, ringing it fails at once rather
/// than connecting back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registered_over_tls_is_rung_on_its_own_connection() {
    let ca = TestCa::new("pivotd test CA");
    let server = device_bridge_server(&ca, "").await;
    let tone = ToneFile::new(1000.0, 30);
    let phone = Baresip::start_tls(
        tls_addr(&server),
        "2001",
        "s3cret",
        REALM,
        &ca.ca,
        tone.path(),
        &[],
        ";answermode=auto",
    )
    .await;
    registered_transport(&server, "d1", || phone.log()).await;
    let open = stats(&server).tls_open.load(Ordering::Relaxed);
    assert_eq!(open, 1, "the phone's connection");

    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6002", &[0], 10_000).await;
    send_tone(&caller.media.socket, media_addr(&ok), 0, 450.0, 1500).await;
    let heard = received_pcm(&caller.media);
    assert!(
        heard.len() >= 4000,
        "the caller got {} samples",
        heard.len()
    );
    let share = tone_share(&heard[heard.len() / 2..], 1000.0);
    assert!(share > 0.5, "the caller hears the phone's 1 kHz: {share}");
    let log = phone.log();
    let invite_over_tls = log.contains(&format!(
        "TLS 127.0.0.1:{} -> 127.0.0.1:",
        tls_addr(&server).port()
    ));
    assert!(invite_over_tls, "the INVITE came over TLS:\n{log}");
    assert!(log.contains("INVITE sip:2001-"), "{log}");
    assert_eq!(
        stats(&server).tls_open.load(Ordering::Relaxed),
        1,
        "rung on its own connection, no second one"
    );
    caller.bye(&ok).await;
    let bye = eventually(5, || {
        phone
            .log()
            .lines()
            .any(|l| l.trim_start().starts_with("BYE sip:"))
    })
    .await;
    assert!(bye, "the phone got the BYE:\n{}", phone.log());

    // The phone goes (its binding stays): its connection closes and cannot be reopened.
    drop(phone);
    let closed = eventually(5, || stats(&server).tls_open.load(Ordering::Relaxed) == 0).await;
    assert!(closed, "the phone's connection closed");
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6002", &[0], "").await;
    let mut seen = Vec::new();
    let started = Instant::now();
    let end = caller.final_response(8000, &mut seen).await;
    let end = end.unwrap_or_else(|| panic!("no final response; seen {seen:?}"));
    assert!(status(&end) >= 400, "{end}");
    // At once, not after invite_response_timeout_ms (5 s) or Timer B.
    assert!(started.elapsed() < Duration::from_secs(2), "failed at once");
    assert_eq!(stats(&server).tls_open.load(Ordering::Relaxed), 0);
}

/// A carrier's SIP UAS over TLS (tokio-rustls): answers each INVITE 200 with SDP and each BYE
/// 200; keeps what it received and the server name each client asked for.
struct TlsCarrier {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    names: Arc<Mutex<Vec<String>>>,
    failed_handshakes: Arc<AtomicUsize>,
    media: RtpSink,
    task: tokio::task::JoinHandle<()>,
}

impl TlsCarrier {
    async fn start(cert: &Path, key: &Path) -> TlsCarrier {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let media = RtpSink::bind().await;
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let names: Arc<Mutex<Vec<String>>> = Arc::default();
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (r, n, f, m) = (
            Arc::clone(&requests),
            Arc::clone(&names),
            failed_handshakes.clone(),
            media.addr,
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r, n, f) = (acceptor.clone(), r.clone(), n.clone(), f.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        f.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let name = tls.get_ref().1.server_name().unwrap_or("").to_string();
                    n.lock().unwrap().push(name);
                    let mut buf = Vec::new();
                    while let Some(msg) = read_message(&mut tls, &mut buf).await {
                        r.lock().unwrap().push(msg.clone());
                        if let Some(answer) = carrier_answer(&msg, addr, m) {
                            let _ = tls.write_all(answer.as_bytes()).await;
                            let _ = tls.flush().await;
                        }
                    }
                });
            }
        });
        TlsCarrier {
            addr,
            requests,
            names,
            failed_handshakes,
            media,
            task,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TlsCarrier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The carrier's answer to a request: 200 to INVITE (SDP, PCMU to `media`) and BYE.
fn carrier_answer(req: &str, us: SocketAddr, media: SocketAddr) -> Option<String> {
    let method = req.split_whitespace().next()?;
    let copied: String = ["Via", "From", "Call-ID", "CSeq"]
        .iter()
        .filter_map(|h| header(req, h).map(|v| format!("{h}: {v}\r\n")))
        .collect();
    let to = header(req, "To")?;
    let (to, body) = match method {
        "INVITE" => (
            format!("{to};tag=carrier"),
            format!(
                "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
                media.port()
            ),
        ),
        "BYE" => (to, String::new()),
        _ => return None,
    };
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    Some(format!(
        "SIP/2.0 200 OK\r\n{copied}To: {to}\r\nContact: <sip:carrier@{us};transport=tls>\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

/// 6000 goes to the account's carriers, each `sips:localhost:PORT` of `carriers`, in order.
fn carrier_flows(carriers: &[&TlsCarrier]) -> String {
    let mut flows = String::from(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = { module = "resources", data = { to_did = "5551234" } }
"#,
    );
    for (i, c) in carriers.iter().enumerate() {
        flows.push_str(&format!(
            "[[accounts.resources]]\nid = \"carrier{}\"\ngateway = \"sips:localhost:{}\"\n",
            i + 1,
            c.addr.port()
        ));
    }
    flows
}

/// A carrier at `sips:localhost:PORT` whose certificate the test CA signed (given as
/// `tls_ca_file`): the INVITE goes over TLS with SNI `localhost`, names TLS in its Via and
/// `sips:` in its Request-URI and Contact (RFC 5630); the call is answered and the caller's
/// BYE reaches the carrier on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_over_tls_is_verified_and_answers() {
    let ca = TestCa::new("carrier CA");
    let (cert, key) = ca.issue("carrier", "localhost");
    let carrier = TlsCarrier::start(&cert, &key).await;
    let extra = format!(
        "allow_unauthenticated = true\ntls_ca_file = \"{}\"",
        ca.ca.display()
    );
    let server = tls_server(&ca, &carrier_flows(&[&carrier]), &extra).await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 10_000).await;
    let requests = carrier.requests();
    let invite = requests
        .iter()
        .find(|r| r.starts_with("INVITE"))
        .expect("the carrier got the INVITE");
    let port = carrier.addr.port();
    assert!(
        invite.starts_with(&format!("INVITE sips:5551234@localhost:{port} SIP/2.0\r\n")),
        "{invite}"
    );
    let via = header(invite, "Via").unwrap();
    let ours = tls_addr(&server);
    assert!(via.starts_with(&format!("SIP/2.0/TLS {ours}")), "{via}");
    let contact = header(invite, "Contact").unwrap();
    assert!(contact.starts_with("<sips:"), "{contact}");
    assert_eq!(*carrier.names.lock().unwrap(), ["localhost"], "SNI");
    // Media flows through the bridge: the carrier hears the caller.
    send_tone(&caller.media.socket, media_addr(&ok), 0, 450.0, 600).await;
    let relayed = eventually(3, || !carrier.media.packets().is_empty()).await;
    assert!(relayed, "the carrier got the caller's audio");
    caller.bye(&ok).await;
    let bye = eventually(5, || {
        carrier.requests().iter().any(|r| r.starts_with("BYE"))
    })
    .await;
    assert!(bye, "the carrier got the BYE: {:?}", carrier.requests());
    assert_eq!(
        stats(&server).tls_handshake_failed.load(Ordering::Relaxed),
        0
    );
}

/// A carrier whose certificate another CA signed is not trusted: the handshake fails (counted
/// in /metrics), that carrier fails and the next is tried; with none left, the caller gets a
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_carrier_fails_and_the_next_one_is_tried() {
    let ca = TestCa::new("our CA");
    let stranger = TestCa::new("someone else's CA");
    let (bad_cert, bad_key) = stranger.issue("carrier", "localhost");
    let untrusted = TlsCarrier::start(&bad_cert, &bad_key).await;
    let (cert, key) = ca.issue("carrier", "localhost");
    let trusted = TlsCarrier::start(&cert, &key).await;
    let extra = format!(
        "allow_unauthenticated = true\ninvite_response_timeout_ms = 1000\ntls_ca_file = \"{}\"",
        ca.ca.display()
    );
    let server = tls_server(&ca, &carrier_flows(&[&untrusted, &trusted]), &extra).await;
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 10_000).await;
    assert!(
        untrusted.requests().is_empty(),
        "{:?}",
        untrusted.requests()
    );
    assert!(untrusted.failed_handshakes.load(Ordering::SeqCst) >= 1);
    assert!(trusted.requests().iter().any(|r| r.starts_with("INVITE")));
    caller.bye(&ok).await;
    let failed = stats(&server).tls_handshake_failed.load(Ordering::Relaxed);
    assert!(failed >= 1, "counted: {failed}");
    let (code, metrics) = api_get(&server, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metric(&metrics, "pivotd_sip_tls_handshakes_failed_total") >= 1,
        "{metrics}"
    );

    // The untrusted carrier alone: the call fails.
    let server = tls_server(&ca, &carrier_flows(&[&untrusted]), &extra).await;
    let mut caller = Caller::new(server.udp).await;
    caller.invite("6000", &[0], "").await;
    let mut seen = Vec::new();
    let end = caller.final_response(8000, &mut seen).await;
    let end = end.unwrap_or_else(|| panic!("no final response; seen {seen:?}"));
    assert!(status(&end) >= 400, "{end}");
    assert!(untrusted.requests().is_empty());
}

/// Two carriers at one address by different names, `localhost` and the IP literal
/// `127.0.0.1`, with a certificate for `localhost` only: the first connects and answers; the
/// second (put in force by a reload) is verified for its own name, fails, and is not sent the
/// INVITE on the first one's connection, still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_is_reused_only_for_the_name_it_was_verified_for() {
    let ca = TestCa::new("carrier CA");
    let (cert, key) = ca.issue_for("carrier", "localhost", "DNS:localhost");
    let carrier = TlsCarrier::start(&cert, &key).await;
    let by_name = carrier_flows(&[&carrier]);
    let by_ip = by_name.replace("sips:localhost:", "sips:127.0.0.1:");
    assert_ne!(by_name, by_ip);
    let (server_cert, server_key) = ca.issue("server", "pivotd-test");
    let extra = format!(
        "allow_unauthenticated = true\ninvite_response_timeout_ms = 1000\ntls_ca_file = \"{}\"",
        ca.ca.display()
    );
    // The media dir absolute: the file means the same in its temp folder.
    let media = format!("dir = \"{}\"", repo().join("media").display());
    let text = config_toml(
        &by_name,
        &tls_keys(&server_cert, &server_key, &extra),
        &media,
    );
    let path = common::binary::write_config(&text);
    let server = start(&text).await;

    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6000", &[0], 10_000).await;
    assert_eq!(*carrier.names.lock().unwrap(), ["localhost"], "SNI");
    let invites = |c: &TlsCarrier| {
        c.requests()
            .iter()
            .filter(|r| r.starts_with("INVITE"))
            .count()
    };
    assert_eq!(invites(&carrier), 1);

    std::fs::write(&path, text.replace(&by_name, &by_ip)).unwrap();
    let kept = server.handle.reload(&path).await.expect("the file reloads");
    assert!(kept.is_empty(), "{kept:?}");
    let mut second = Caller::new(server.udp).await;
    second.invite("6000", &[0], "").await;
    let mut seen = Vec::new();
    let end = second.final_response(8000, &mut seen).await;
    let end = end.unwrap_or_else(|| panic!("no final response; seen {seen:?}"));
    assert!(status(&end) >= 400, "{end}");
    assert_eq!(
        invites(&carrier),
        1,
        "the INVITE for 127.0.0.1 went on the connection verified for localhost: {:?}",
        carrier.requests()
    );
    assert!(carrier.failed_handshakes.load(Ordering::SeqCst) >= 1);
    assert!(stats(&server).tls_handshake_failed.load(Ordering::Relaxed) >= 1);

    // The first call's connection still serves it: its BYE reaches the carrier.
    caller.bye(&ok).await;
    let bye = eventually(5, || {
        carrier.requests().iter().any(|r| r.starts_with("BYE"))
    })
    .await;
    assert!(bye, "the carrier got the BYE: {:?}", carrier.requests());
}

/// The TLS port keeps the TCP front door's rules: a client that never starts its handshake
/// is dropped after `tls_handshake_timeout_ms`, and holds its source's connection slot only
/// that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_client_is_dropped_after_the_handshake_timeout() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "", "tls_handshake_timeout_ms = 500").await;
    let mut silent = TcpStream::connect(tls_addr(&server)).await.unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    let closed = matches!(read, Ok(Ok(0)) | Ok(Err(_)));
    assert!(closed, "closed by pivotd: {read:?}");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(400) && after < Duration::from_secs(3),
        "after the handshake timeout: {after:?}"
    );
    let failed = eventually(2, || {
        stats(&server).tls_handshake_failed.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(failed, "the timeout is counted");
    // The server still serves TLS.
    let mut sip = RawSip::tls(tls_addr(&server), &ca).await;
    let r = options(&mut sip, "sip:pivotd.test").await;
    assert_eq!(status(&r), 200, "{r}");
}

/// A TLS connection that goes quiet after its handshake is closed after `tcp_idle_timeout_s`,
/// as a TCP one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_is_closed_like_a_tcp_one() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "", "tcp_idle_timeout_s = 1").await;
    let mut sip = RawSip::tls(tls_addr(&server), &ca).await;
    assert_eq!(status(&options(&mut sip, "sip:pivotd.test").await), 200);
    assert_eq!(stats(&server).tls_open.load(Ordering::Relaxed), 1);
    let started = Instant::now();
    assert!(sip.recv(5000).await.is_none(), "closed, nothing sent");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let closed = eventually(2, || stats(&server).tls_open.load(Ordering::Relaxed) == 0).await;
    assert!(closed, "counted as closed");
}

/// Connections from one address beyond `source_tcp_connections` are closed at once, TLS ones
/// as TCP ones, before any handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tls_connections_is_held_to_the_source_limit() {
    let ca = TestCa::new("pivotd test CA");
    let extra = "source_tcp_connections = 3\ntls_handshake_timeout_ms = 5000";
    let server = tls_server(&ca, "", extra).await;
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(TcpStream::connect(tls_addr(&server)).await.unwrap());
    }
    let (mut open, mut closed) = (0, 0);
    for c in &mut conns {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(500), c.read(&mut byte)).await {
            Err(_) => open += 1,
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => panic!("pivotd wrote before a ClientHello"),
        }
    }
    assert_eq!((open, closed), (3, 5), "held to source_tcp_connections");
}

/// Garbage instead of a ClientHello, and plain SIP sent to the TLS port: the connection is
/// closed without a SIP answer and without harm; TLS goes on working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_plain_sip_on_the_tls_port_are_dropped() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "", "").await;
    let garbage: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let plain = format!(
        "OPTIONS sip:pivotd.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:pivotd.test>\r\n\
         Call-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        token(),
        token()
    );
    for bytes in [garbage, plain.into_bytes()] {
        let mut c = TcpStream::connect(tls_addr(&server)).await.unwrap();
        c.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the connection was closed");
        assert!(
            !String::from_utf8_lossy(&got).contains("SIP/2.0"),
            "answered as SIP: {got:?}"
        );
    }
    assert!(stats(&server).tls_handshake_failed.load(Ordering::Relaxed) >= 2);
    let mut sip = RawSip::tls(tls_addr(&server), &ca).await;
    let r = options(&mut sip, "sip:pivotd.test").await;
    assert_eq!(status(&r), 200, "{r}");
}

/// An OPTIONS to `uri`, and its answer.
async fn options(sip: &mut RawSip, uri: &str) -> String {
    let local = sip.local();
    let req = format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/{} {local};branch=z9hG4bK{};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag={}\r\nTo: <{uri}>\r\n\
         Call-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sip.transport(),
        token(),
        token(),
        token()
    );
    sip.send(req.as_bytes()).await;
    sip.expect("SIP/2.0", 3000).await.expect("an answer")
}

/// A `sips:` Request-URI is served over TLS and refused over UDP and TCP (416, RFC 5630:
/// every hop of a sips: request is secured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sips_uris_are_served_over_tls_only() {
    let ca = TestCa::new("pivotd test CA");
    let server = tls_server(&ca, "", "").await;
    let mut tls = RawSip::tls(tls_addr(&server), &ca).await;
    assert_eq!(status(&options(&mut tls, "sips:pivotd.test").await), 200);
    for mut sip in [RawSip::udp(server.udp).await, RawSip::tcp(server.tcp).await] {
        let r = options(&mut sip, "sips:pivotd.test").await;
        assert_eq!(status(&r), 416, "over {}: {r}", sip.transport());
        assert_eq!(status(&options(&mut sip, "sip:pivotd.test").await), 200);
    }
}

/// An INVITE over TLS from a raw client for `uri`, its media at `media`; returns the 200
/// after acknowledging it.
async fn call_over_tls(sip: &mut RawSip, uri: &str, call_id: &str, media: SocketAddr) -> String {
    let local = sip.local();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\n",
        media.port()
    );
    let invite = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@pivotd.test>;tag=f{call_id}\r\nTo: <{uri}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local};transport=tls>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sip.send(invite.as_bytes()).await;
    let ok = sip
        .expect("SIP/2.0 200", 5000)
        .await
        .expect("200 to the INVITE");
    let ack = format!(
        "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
         From: <sip:caller@pivotd.test>;tag=f{call_id}\r\nTo: {}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        token(),
        header(&ok, "To").unwrap()
    );
    sip.send(ack.as_bytes()).await;
    ok
}

/// The certificate replaced on disk and reloaded: a new connection gets the new one; a call
/// up over TLS meanwhile keeps its audio and its connection (its BYE is answered on it). A
/// reload with a key that does not match is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_serves_new_connections_and_calls_go_on() {
    let ca = TestCa::new("pivotd test CA");
    let callflows = r#"
[[accounts.callflows]]
numbers = ["5000"]
flow = { module = "play", data = { id = "tone-1khz", loop_count = 20 } }
"#;
    let (cert_a, key_a) = ca.issue("a", "pivotd-a");
    let extra = "allow_unauthenticated = true";
    let toml = config_toml(callflows, &tls_keys(&cert_a, &key_a, extra), "");
    let server = start(&toml).await;
    // The same config on disk, for the reload (SIGHUP's) to read again.
    let config_file = tempdir().join("pivotd.toml");
    std::fs::write(&config_file, &toml).unwrap();
    let mut sip = RawSip::tls(tls_addr(&server), &ca).await;
    assert_eq!(sip.peer_certificate(), Some(cert_der(&cert_a)));
    let media = RtpSink::bind().await;
    let call_id = token();
    let uri = "sips:5000@pivotd.test";
    let ok = call_over_tls(&mut sip, uri, &call_id, media.addr).await;
    let contact = header(&ok, "Contact").unwrap();
    assert!(
        contact.starts_with("<sips:5000@"),
        "sips: answered with sips: {contact}"
    );
    send_tone(&media.socket, media_addr(&ok), 0, 450.0, 200).await;
    let audio = eventually(3, || media.packets().len() > 20).await;
    assert!(audio, "the prompt plays");

    // The certificate on disk is replaced, then the config reloaded (what SIGHUP does): the
    // certificate files are read again.
    let (cert_b, key_b) = ca.issue("b", "pivotd-b");
    std::fs::copy(&cert_b, &cert_a).unwrap();
    std::fs::copy(&key_b, &key_a).unwrap();
    let kept = server
        .handle
        .reload(&config_file)
        .await
        .expect("the reload");
    // (The prompt dir resolves against the file's folder, elsewhere than the test's start.)
    assert!(!kept.iter().any(|k| k.key.starts_with("sip.")), "{kept:?}");
    let transport = server.handle.endpoint.transport();
    let newer = RawSip::tls(tls_addr(&server), &ca).await;
    assert_eq!(newer.peer_certificate(), Some(cert_der(&cert_b)));
    let before = media.packets().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = media.packets().len();
    assert!(
        after >= before + 40,
        "the call's audio goes on: {before} → {after}"
    );

    // A key that is not the certificate's: refused, the certificate stays.
    let (_, other_key) = ca.issue("c", "pivotd-c");
    let refused = transport.reload_tls(&cert_a, &other_key, None);
    assert!(refused.is_err(), "{refused:?}");
    let still = RawSip::tls(tls_addr(&server), &ca).await;
    assert_eq!(still.peer_certificate(), Some(cert_der(&cert_b)));

    let local = sip.local();
    let bye = format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
         From: <sip:caller@pivotd.test>;tag=f{call_id}\r\nTo: {}\r\nCall-ID: {call_id}\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        contact.trim_matches(|c| c == '<' || c == '>'),
        token(),
        header(&ok, "To").unwrap()
    );
    sip.send(bye.as_bytes()).await;
    let answered = sip.expect("SIP/2.0 200", 3000).await;
    assert!(answered.is_some(), "the BYE answered on the old connection");
}

/// pjsua2 registers over TLS (its `PJSIP_TRANSPORT_TLS`, trusting the test CA), dials 5000
/// (answering the 407), hears the Gather's prompt by its content, and its key (RFC 4733)
/// reaches the Gather's action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_registers_and_calls_over_tls_hears_the_prompt_and_its_key_is_collected() {
    let ca = TestCa::new("pivotd test CA");
    let (web, server) = gather_server(&ca).await;
    let silence = ToneFile::new(0.0, 30);
    let mut phone = Pjsua::register_tls(
        tls_addr(&server),
        "2001",
        "s3cret",
        REALM,
        silence.path(),
        None,
        &ca.ca,
        false,
    )
    .await;
    let transport = registered_transport(&server, "d1", || format!("{:?}", phone.lines())).await;
    assert_eq!(transport, "TLS");
    phone.command(&format!("dial sip:5000@{REALM}")).await;
    assert!(
        asked(&web, "/ivr").await,
        "no pivot request: {:?}",
        phone.lines()
    );
    assert!(phone.expect("confirmed", 5).await.is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    phone.command("dtmf 5").await;
    assert_key_collected(&web, "5", || format!("{:?}", phone.lines())).await;
    let pcm = phone.heard(10).await;
    let share = share_after_start(&pcm, 1000.0, 8000);
    assert!(share > 0.5, "pjsua2 hears the 1 kHz prompt: {share}");
}

/// pjsua2 registers over TLS (its `PJSIP_TRANSPORT_TLS`, trusting the test CA) and a bridge
/// rings it on that connection: it answers, hears the caller by content, and the caller's
/// key reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_registers_over_tls_and_is_rung_by_a_bridge() {
    let ca = TestCa::new("pivotd test CA");
    let server = device_bridge_server(&ca, "").await;
    let tone = ToneFile::new(1000.0, 30);
    let phone = Pjsua::register_tls(
        tls_addr(&server),
        "2001",
        "s3cret",
        REALM,
        tone.path(),
        Some(300),
        &ca.ca,
        false,
    )
    .await;
    let transport = registered_transport(&server, "d1", || format!("{:?}", phone.lines())).await;
    assert_eq!(transport, "TLS");
    let mut caller = Caller::new(server.udp).await;
    let (ok, _) = caller.answered("6002", &[0], 10_000).await;
    send_tone(&caller.media.socket, media_addr(&ok), 0, 450.0, 1500).await;
    let heard = received_pcm(&caller.media);
    assert!(
        heard.len() >= 4000,
        "the caller got {} samples",
        heard.len()
    );
    let share = tone_share(&heard[heard.len() / 2..], 1000.0);
    assert!(share > 0.5, "the caller hears pjsua2's 1 kHz: {share}");
    send_key(&caller.media.socket, media_addr(&ok), 5).await;
    assert!(
        phone.expect("dtmf 5", 5).await.is_some(),
        "{:?}",
        phone.lines()
    );
    caller.bye(&ok).await;
    let pcm = phone.heard(10).await;
    let share = share_after_start(&pcm, 450.0, 8000);
    assert!(share > 0.5, "pjsua2 hears the caller's 450 Hz: {share}");
    assert_eq!(stats(&server).tls_open.load(Ordering::Relaxed), 1);
}
