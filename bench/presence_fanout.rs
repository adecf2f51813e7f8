//! The NOTIFY fan-out of one lamp (issue 11: "1,000 subscribers to one id get their NOTIFYs
//! within a second"): N dialog subscriptions to one presence id, then the lamp flips and each
//! subscription's time from the change to its NOTIFY with the new state is measured.
//!
//! cargo bench --bench presence_fanout -- [N ...] [--in-flight M] [--per-socket K]
//!
//! - The built pivotd runs in a child process (`flood_common`: its ready line, an in-memory
//!   store, media ports 50000–59999), `[presence] max_notifies_in_flight` = M (default: the
//!   shipped 256) and `max_subscriptions_per_device` raised so one device may hold them all.
//! - The subscribers are this process's: N / K UDP sockets (K subscriptions each, default
//!   20), each subscription its own Call-ID and dialog, challenged (407) and answering with
//!   device 2001's credentials (pivotd's own digest client, `sip::auth::answer`), at most
//!   WINDOW SUBSCRIBEs outstanding per socket. Every NOTIFY is answered 200 at once.
//! - The lamp flips through the presence API, `POST …/presence/7000` (`set` confirmed, then
//!   `reset`, then `set` again): the same `Presence::set` a flow's `manual_presence` or a
//!   call makes, reached the way an operator's tool reaches it. The clock starts just before
//!   the POST is written; a NOTIFY counts when its body shows the new state.
//!
//! Printed per N: the time to establish the subscriptions (the last 200, the last first
//! NOTIFY), then per flip p50 / p99 / max of change → NOTIFY, how many arrived within 1 s,
//! how many never did (30 s), and the NOTIFYs received twice (retransmissions: an answer of
//! ours arrived late or was lost).

#[allow(dead_code)]
#[path = "flood_common.rs"]
mod flood_common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pivotd::sip::auth::answer::ReceivedChallenge;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const ACCOUNT: &str = "4b6e1d0c2f6a4e0f9a1b2c3d4e5f6a7b";
const KEY: &str = "5e1f2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f5";
const USER: &str = "2001";
const PASSWORD: &str = "s3cret-2001";
const WATCHED: &str = "sip:7000@bench.test";
/// SUBSCRIBEs outstanding per socket while subscribing.
const WINDOW: usize = 8;
/// How long a flip waits for the last NOTIFY.
const FLIP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the lamp shows in a dialog-info body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shown {
    Idle,
    Early,
    Confirmed,
}

fn shown(body: &str) -> Shown {
    if body.contains("<state>confirmed</state>") {
        Shown::Confirmed
    } else if body.contains("<state>early</state>") {
        Shown::Early
    } else {
        Shown::Idle
    }
}

/// What the sockets report to the main task.
enum Event {
    /// A subscription's 200.
    Subscribed { at: Instant },
    /// A SUBSCRIBE refused for good.
    Refused { code: u16 },
    /// A NOTIFY (answered already); `again`: a retransmission of one received.
    Notify {
        sub: usize,
        at: Instant,
        shown: Shown,
        again: bool,
    },
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n")
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
}

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// One subscription's dialog as far as the subscriber needs it.
struct Sub {
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The request in flight and when it went (resent unchanged if unanswered).
    pending: Option<(Vec<u8>, Instant)>,
}

fn subscribe(local: SocketAddr, s: &Sub, auth: Option<&str>) -> Vec<u8> {
    let auth = auth.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n"));
    format!(
        "SUBSCRIBE {WATCHED} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{USER}@bench.test>;tag={tag}\r\nTo: <{WATCHED}>\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:{USER}@{local}>\r\n\
         Event: dialog\r\nAccept: application/dialog-info+xml\r\nExpires: 3600\r\n\
         {auth}Content-Length: 0\r\n\r\n",
        branch = token(),
        tag = s.from_tag,
        call_id = s.call_id,
        cseq = s.cseq,
    )
    .into_bytes()
}

/// A 200 to a request: its Via, From, To, Call-ID and CSeq copied.
fn ok_to(req: &str) -> Vec<u8> {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for l in req.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str()) {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// One socket holding subscriptions `first .. first + count`: subscribes them (WINDOW at a
/// time), answers every NOTIFY and reports it, until the main task drops `events`' receiver.
async fn socket(
    server: SocketAddr,
    first: usize,
    count: usize,
    events: mpsc::UnboundedSender<Event>,
) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = sock.local_addr().expect("local");
    let mut subs: Vec<Sub> = (0..count)
        .map(|_| Sub {
            call_id: format!("{}@fanout", token()),
            from_tag: token(),
            cseq: 1,
            pending: None,
        })
        .collect();
    let by_call: HashMap<String, usize> = subs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.call_id.clone(), i))
        .collect();
    let mut seen: HashSet<(usize, u32)> = HashSet::new();
    let mut next = 0;
    let mut outstanding = 0;
    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        while outstanding < WINDOW && next < count {
            let bytes = subscribe(local, &subs[next], None);
            let _ = sock.send_to(&bytes, server).await;
            subs[next].pending = Some((bytes, Instant::now()));
            next += 1;
            outstanding += 1;
        }
        let n = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, _)) => n,
                Err(_) => continue,
            },
            _ = tick.tick() => {
                if events.is_closed() {
                    return;
                }
                // UDP: a SUBSCRIBE unanswered for a second goes again (the same transaction).
                for s in subs.iter_mut() {
                    if let Some((bytes, at)) = &mut s.pending {
                        if at.elapsed() > Duration::from_secs(1) {
                            let _ = sock.send_to(bytes, server).await;
                            *at = Instant::now();
                        }
                    }
                }
                continue;
            }
        };
        let at = Instant::now();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let Some(i) = header(&msg, "Call-ID")
            .and_then(|c| by_call.get(c))
            .copied()
        else {
            continue;
        };
        if msg.starts_with("NOTIFY ") {
            let _ = sock.send_to(&ok_to(&msg), server).await;
            let cseq = header(&msg, "CSeq")
                .and_then(|c| c.split_whitespace().next())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = msg.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            let _ = events.send(Event::Notify {
                sub: first + i,
                at,
                shown: shown(body),
                again: !seen.insert((i, cseq)),
            });
            continue;
        }
        let Some(code) = msg
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
        else {
            continue;
        };
        let s = &mut subs[i];
        let answers = header(&msg, "CSeq")
            .and_then(|c| c.split_whitespace().next())
            .is_some_and(|c| c == s.cseq.to_string());
        if code < 200 || !answers || s.pending.is_none() {
            continue;
        }
        s.pending = None;
        match code {
            200..=299 => {
                outstanding -= 1;
                let _ = events.send(Event::Subscribed { at });
            }
            407 => {
                let values = msg
                    .split("\r\n")
                    .take_while(|l| !l.is_empty())
                    .filter_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.trim()
                            .eq_ignore_ascii_case("Proxy-Authenticate")
                            .then(|| v.trim().as_bytes())
                    });
                let Some(c) = ReceivedChallenge::first_supported(values) else {
                    outstanding -= 1;
                    let _ = events.send(Event::Refused { code });
                    continue;
                };
                let auth = c.answer(USER, PASSWORD, "SUBSCRIBE", WATCHED, 1, &token());
                s.cseq += 1;
                let bytes = subscribe(local, s, Some(&auth));
                let _ = sock.send_to(&bytes, server).await;
                s.pending = Some((bytes, Instant::now()));
            }
            _ => {
                outstanding -= 1;
                let _ = events.send(Event::Refused { code });
            }
        }
    }
}

/// p50, p99 and max of `v` (ms), or None when empty.
fn percentiles(mut v: Vec<f64>) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some((v[n / 2], v[(n * 99 / 100).min(n - 1)], v[n - 1]))
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn run(n: usize, per_socket: usize, in_flight: Option<u32>) {
    let dir = std::env::temp_dir().join(format!("pivotd-fanout-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let presence = format!(
        "max_subscriptions_per_device = 100000\nmax_expires = 3600\n{}",
        in_flight.map_or(String::new(), |m| format!("max_notifies_in_flight = {m}\n"))
    );
    let account = format!(
        r#"api_key = "{KEY}"
[[accounts.devices]]
id = "d1"
username = "{USER}"
password = "{PASSWORD}"
[presence]
{presence}"#
    );
    // The subscribers are one source: trusted, held to the global limits only.
    let config = flood_common::write_config(
        &dir,
        r#"trusted_sources = ["127.0.0.1"]"#,
        flood_common::MEDIA_PORTS,
        "",
        &account,
    );
    let (mut child, udp, api) = flood_common::start(&config);
    let token = flood_common::api_token(api, KEY);
    println!(
        "N = {n}: {} sockets x {per_socket}, max_notifies_in_flight = {}, load {}",
        n.div_ceil(per_socket),
        in_flight.map_or("256 (default)".to_string(), |m| m.to_string()),
        load()
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let mut first = 0;
    while first < n {
        let count = per_socket.min(n - first);
        tokio::spawn(socket(udp, first, count, tx.clone()));
        first += count;
    }
    drop(tx);
    // Established: every 200, and every subscription's first NOTIFY.
    let (mut subscribed, mut refused, mut initial) = (0, 0, HashSet::new());
    let (mut last_ok, mut last_first) = (t0, t0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while subscribed + refused < n || initial.len() < subscribed {
        let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        match ev {
            Event::Subscribed { at } => {
                subscribed += 1;
                last_ok = at;
            }
            Event::Refused { code } => {
                refused += 1;
                if refused <= 3 {
                    println!("  refused: {code}");
                }
            }
            Event::Notify { sub, at, .. } => {
                if initial.insert(sub) {
                    last_first = at;
                }
            }
        }
    }
    println!(
        "  subscribed {subscribed}/{n} (refused {refused}): last 200 after {:.0} ms, last first NOTIFY after {:.0} ms",
        (last_ok - t0).as_secs_f64() * 1e3,
        (last_first - t0).as_secs_f64() * 1e3
    );
    // The store's writes of the subscriptions settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while rx.try_recv().is_ok() {}

    let path = format!("/v2/accounts/{ACCOUNT}/presence/7000");
    for (body, want) in [
        (
            r#"{"data": {"action": "set", "state": "confirmed"}}"#,
            Shown::Confirmed,
        ),
        (r#"{"data": {"action": "reset"}}"#, Shown::Idle),
        (
            r#"{"data": {"action": "set", "state": "confirmed"}}"#,
            Shown::Confirmed,
        ),
    ] {
        let (api_path, token2) = (path.clone(), token.clone());
        let start = Instant::now();
        let post = tokio::task::spawn_blocking(move || {
            let r = flood_common::api_request(api, "POST", &api_path, Some(&token2), Some(body));
            (r, start.elapsed())
        });
        let mut got: HashMap<usize, Duration> = HashMap::new();
        let mut again = 0;
        let deadline = tokio::time::Instant::now() + FLIP_TIMEOUT;
        while got.len() < subscribed {
            let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                break;
            };
            if let Event::Notify {
                sub,
                at,
                shown,
                again: a,
            } = ev
            {
                again += usize::from(a);
                if shown == want && at >= start {
                    got.entry(sub).or_insert(at - start);
                }
            }
        }
        let ((status, _), took) = post.await.expect("POST");
        // Retransmissions still on their way are counted before the next flip.
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(ev) = rx.try_recv() {
            if let Event::Notify { again: true, .. } = ev {
                again += 1;
            }
        }
        let ms: Vec<f64> = got.values().map(|d| d.as_secs_f64() * 1e3).collect();
        let within = ms.iter().filter(|&&m| m <= 1000.0).count();
        let (p50, p99, max) = percentiles(ms).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        println!(
            "  {want:?}: POST {status} in {:.1} ms; NOTIFY p50 {p50:.1} ms, p99 {p99:.1} ms, \
             max {max:.1} ms; within 1 s {within}/{subscribed}, missing {}, received twice {again}",
            took.as_secs_f64() * 1e3,
            subscribed - got.len()
        );
    }
    drop(rx);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("presence_fanout: a benchmark; run it with cargo bench --bench presence_fanout");
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<usize> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let in_flight = flag("--in-flight").map(|m| m as u32);
    let per_socket = flag("--per-socket").unwrap_or(20).max(1);
    let mut ns: Vec<usize> = Vec::new();
    let mut skip = false;
    for a in &args {
        if skip {
            skip = false;
        } else if a == "--in-flight" || a == "--per-socket" {
            skip = true;
        } else if let Ok(n) = a.parse() {
            ns.push(n);
        }
    }
    if ns.is_empty() {
        ns = vec![1000, 5000];
    }
    println!("presence_fanout: load {}", load());
    for n in ns {
        run(n, per_socket, in_flight).await;
    }
}
