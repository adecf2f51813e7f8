//! The two ends of a bridged call, written by hand on real sockets so every message and every
//! packet can be checked: a [`Caller`] (UAC towards pivotd) and a scripted [`Callee`] (the UAS
//! pivotd's second leg reaches: a carrier, a phone), each with its own RTP socket; and audio
//! tones sent and recognised by frequency, so audio is compared by content across μ-law ↔
//! A-law transcoding; tone WAVs for real phones to play (sox) and the WAVs they record.
//! Either side can hold: the callee by a re-INVITE in its dialog ([`Callee::reinvite`]), the
//! caller by one in its own ([`Caller::reinvite`]); the caller sees and answers pivotd's
//! re-INVITEs ([`Caller::next_reinvite`], [`Caller::respond`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pivotd::media::codec::Codec;
use tokio::net::UdpSocket;

use super::{body, header, status, tempdir, to_tag, token, RawSip, RtpPacket, RtpSink, TestServer};

/// What the callee does with an INVITE.
#[derive(Clone, Debug)]
pub enum Script {
    /// 180, then after `ring_ms` a 200 with SDP offering only `codec` (0 PCMU, 8 PCMA).
    Answer { ring_ms: u64, codec: u8 },
    /// 183 with SDP (early media) at once, then 200 after `ring_ms`.
    EarlyThenAnswer { ring_ms: u64, codec: u8 },
    /// 180, then this final response after `ring_ms`.
    Reject { ring_ms: u64, code: u16 },
    /// 180 and nothing more (until CANCEL).
    Ring,
    /// 407 with a challenge first; the INVITE with credentials is answered as `Answer`.
    Challenge { codec: u8 },
}

/// A scripted UAS on 127.0.0.1.
pub struct Callee {
    pub addr: SocketAddr,
    pub media: RtpSink,
    socket: Arc<UdpSocket>,
    /// Every request received, whole.
    requests: Arc<Mutex<Vec<String>>>,
    /// Every response received (to its REGISTERs).
    responses: Arc<Mutex<Vec<String>>>,
    /// The INVITE answered 200 and our To tag.
    dialog: Arc<Mutex<Option<(String, String, SocketAddr)>>>,
    /// The CSeq of our last request in that dialog.
    cseq: AtomicU32,
    task: tokio::task::JoinHandle<()>,
}

impl Callee {
    pub async fn start(script: Script) -> Callee {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let media = RtpSink::bind().await;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let responses = Arc::new(Mutex::new(Vec::new()));
        let dialog = Arc::new(Mutex::new(None));
        let task = tokio::spawn(serve(
            socket.clone(),
            script,
            media.addr,
            requests.clone(),
            responses.clone(),
            dialog.clone(),
        ));
        Callee {
            addr,
            media,
            socket,
            requests,
            responses,
            dialog,
            cseq: AtomicU32::new(0),
            task,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests received with this method.
    pub fn received(&self, method: &str) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.starts_with(&format!("{method} ")))
            .collect()
    }

    /// Registers this callee (its own socket, so pivotd reaches it there) as `user` in
    /// `realm`, answering the challenge; returns the final answer.
    pub async fn register(
        &self,
        server: SocketAddr,
        user: &str,
        realm: &str,
        password: &str,
    ) -> String {
        let call_id = format!("{}@callee", token());
        let mut auth = String::new();
        for cseq in 1..=2u32 {
            let msg = format!(
                "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{b};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag={t}\r\nTo: <sip:{user}@{realm}>\r\n\
                 Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{me}>\r\n\
                 Expires: 300\r\n{auth}Content-Length: 0\r\n\r\n",
                me = self.addr,
                b = token(),
                t = token(),
            );
            self.socket.send_to(msg.as_bytes(), server).await.unwrap();
            let answer = self
                .final_response(&format!("{cseq} REGISTER"))
                .await
                .expect("an answer to REGISTER");
            if status(&answer) != 401 {
                return answer;
            }
            let c = super::digest::challenges(&answer, "WWW-Authenticate")
                .into_iter()
                .find(|c| c.algorithm.eq_ignore_ascii_case("MD5"))
                .expect("an MD5 challenge");
            let creds = super::digest::credentials(
                &c,
                user,
                password,
                "REGISTER",
                &format!("sip:{realm}"),
                1,
                &token(),
            );
            auth = format!("Authorization: {creds}\r\n");
        }
        panic!("REGISTER still challenged");
    }

    /// Whether a 200 was sent (the call is answered).
    pub fn dialog_up(&self) -> bool {
        self.dialog.lock().unwrap().is_some()
    }

    /// Hangs up the answered call with a BYE.
    pub async fn hang_up(&self) {
        let cseq = self.cseq.fetch_add(1, Ordering::Relaxed) + 1;
        self.send_in_dialog("BYE", cseq, "", None).await;
    }

    /// Sends a re-INVITE in the answered dialog offering `codec` with `direction`
    /// (`sendonly` or `inactive` holds pivotd, `sendrecv` resumes), waits for pivotd's final
    /// answer and ACKs a 2xx; returns the answer.
    pub async fn reinvite(&self, codec: u8, direction: &str) -> String {
        let cseq = self.cseq.fetch_add(1, Ordering::Relaxed) + 1;
        let sdp = sdp_with(self.media.addr, codec, cseq + 1, direction);
        let contact = format!("Contact: <sip:callee@{}>\r\n", self.addr);
        self.send_in_dialog("INVITE", cseq, &contact, Some(&sdp))
            .await;
        let answer = self
            .final_response(&format!("{cseq} INVITE"))
            .await
            .expect("an answer to the re-INVITE");
        if (200..300).contains(&status(&answer)) {
            self.send_in_dialog("ACK", cseq, "", None).await;
        }
        answer
    }

    /// A request of ours in the answered dialog, to pivotd's Contact.
    async fn send_in_dialog(&self, method: &str, cseq: u32, extra: &str, sdp: Option<&str>) {
        let (invite, tag, from) = self.dialog.lock().unwrap().clone().expect("answered");
        let contact = header(&invite, "Contact").expect("Contact in the INVITE");
        let target = contact
            .trim_start_matches(|c| c != '<')
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap()
            .to_string();
        let body = sdp.map_or("Content-Length: 0\r\n\r\n".to_string(), |b| {
            format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
        });
        let msg = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
             From: {};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n{extra}{body}",
            self.addr,
            token(),
            header(&invite, "To").unwrap(),
            header(&invite, "From").unwrap(),
            header(&invite, "Call-ID").unwrap(),
        );
        self.socket.send_to(msg.as_bytes(), from).await.unwrap();
    }

    /// The final response with this CSeq value (`"2 INVITE"`), within 3 s.
    async fn final_response(&self, cseq: &str) -> Option<String> {
        for _ in 0..150 {
            let found = self
                .responses
                .lock()
                .unwrap()
                .iter()
                .find(|r| header(r, "CSeq").as_deref() == Some(cseq) && status(r) >= 200)
                .cloned();
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// pivotd's media address for this callee (from the INVITE's SDP).
    pub fn pivotd_media(&self) -> SocketAddr {
        let invite = self.received("INVITE").pop().expect("an INVITE");
        super::media_addr(&invite)
    }
}

impl Drop for Callee {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sdp(media: SocketAddr, codec: u8) -> String {
    sdp_with(media, codec, 1, "sendrecv")
}

/// An SDP offering `codec` (0 PCMU, 8 PCMA) and telephone-event at `media`, with o= version
/// `version` and the media `direction`.
fn sdp_with(media: SocketAddr, codec: u8, version: u32, direction: &str) -> String {
    let name = if codec == 8 { "PCMA" } else { "PCMU" };
    format!(
        "v=0\r\no=callee 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP {codec} 101\r\na=rtpmap:{codec} {name}/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n",
        media.port()
    )
}

/// A response to `req` with our tag (when given), a Contact and an optional SDP body.
fn response(
    req: &str,
    code: u16,
    tag: Option<&str>,
    contact: SocketAddr,
    sdp: Option<&str>,
) -> String {
    let mut out = format!("SIP/2.0 {code} Test\r\n");
    for line in req.lines().skip(1) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
            || lower.starts_with("record-route:")
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    let to = header(req, "To").unwrap_or_default();
    match tag {
        Some(t) if !to.contains("tag=") => out.push_str(&format!("To: {to};tag={t}\r\n")),
        _ => out.push_str(&format!("To: {to}\r\n")),
    }
    out.push_str(&format!("Contact: <sip:callee@{contact}>\r\n"));
    match sdp {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

async fn serve(
    socket: Arc<UdpSocket>,
    script: Script,
    media: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    responses: Arc<Mutex<Vec<String>>>,
    dialog: Arc<Mutex<Option<(String, String, SocketAddr)>>>,
) {
    let me = socket.local_addr().unwrap();
    let tag = token();
    let mut buf = vec![0u8; 65536];
    // The INVITE still ringing, to answer a CANCEL with 487.
    let mut ringing: Option<(String, SocketAddr)> = None;
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.starts_with("SIP/2.0") {
            responses.lock().unwrap().push(msg);
            continue;
        }
        requests.lock().unwrap().push(msg.clone());
        let send = |text: String| {
            let s = socket.clone();
            async move {
                let _ = s.send_to(text.as_bytes(), from).await;
            }
        };
        let method = msg.split_whitespace().next().unwrap_or("").to_string();
        let in_dialog = header(&msg, "To").is_some_and(|t| t.contains("tag="));
        match method.as_str() {
            "INVITE" if in_dialog => {
                // pivotd's re-INVITE: the direction its offer asks for (RFC 3264 §6.1).
                let offered = ["sendonly", "recvonly", "inactive"]
                    .into_iter()
                    .find(|d| body(&msg).contains(&format!("a={d}")));
                let answer = match offered {
                    Some("sendonly") => "recvonly",
                    Some("recvonly") => "sendonly",
                    Some(d) => d,
                    None => "sendrecv",
                };
                let body = sdp_with(media, 0, 1, answer);
                send(response(&msg, 200, None, me, Some(&body))).await;
            }
            "INVITE" => {
                if requests
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| {
                        r.starts_with("INVITE ") && header(r, "CSeq") == header(&msg, "CSeq")
                    })
                    .count()
                    > 1
                {
                    continue; // a retransmission
                }
                let script = match &script {
                    Script::Challenge { codec } => {
                        if header(&msg, "Proxy-Authorization").is_none() {
                            let mut r = response(&msg, 407, Some(&tag), me, None);
                            r = r.replace(
                                "Content-Length: 0",
                                "Proxy-Authenticate: Digest realm=\"carrier.test\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"\r\nContent-Length: 0",
                            );
                            send(r).await;
                            continue;
                        }
                        Script::Answer {
                            ring_ms: 0,
                            codec: *codec,
                        }
                    }
                    s => s.clone(),
                };
                let (ring_ms, codec, early, reject) = match script {
                    Script::Answer { ring_ms, codec } => (ring_ms, codec, false, None),
                    Script::EarlyThenAnswer { ring_ms, codec } => (ring_ms, codec, true, None),
                    Script::Reject { ring_ms, code } => (ring_ms, 0, false, Some(code)),
                    Script::Ring => (u64::MAX, 0, false, None),
                    Script::Challenge { .. } => unreachable!(),
                };
                let body = sdp(media, codec);
                if early {
                    send(response(&msg, 183, Some(&tag), me, Some(&body))).await;
                } else {
                    send(response(&msg, 180, Some(&tag), me, None)).await;
                }
                ringing = Some((msg.clone(), from));
                if ring_ms == u64::MAX {
                    continue;
                }
                let (s, m, t, d) = (socket.clone(), msg.clone(), tag.clone(), dialog.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ring_ms)).await;
                    let text = match reject {
                        Some(code) => response(&m, code, Some(&t), me, None),
                        None => {
                            *d.lock().unwrap() = Some((m.clone(), t.clone(), from));
                            response(&m, 200, Some(&t), me, Some(&body))
                        }
                    };
                    let _ = s.send_to(text.as_bytes(), from).await;
                });
            }
            "CANCEL" => {
                send(response(&msg, 200, Some(&tag), me, None)).await;
                if let Some((inv, _)) = ringing.take() {
                    send(response(&inv, 487, Some(&tag), me, None)).await;
                }
            }
            "ACK" => {}
            _ => send(response(&msg, 200, None, me, None)).await,
        }
    }
}

/// A caller on raw UDP with its own RTP socket.
pub struct Caller {
    pub sip: RawSip,
    pub media: RtpSink,
    pub call_id: String,
    tag: String,
    pub invite: String,
    /// The CSeq of our last request.
    cseq: u32,
    /// The codecs of our INVITE, and the o= version of our last description.
    codecs: Vec<u8>,
    sdp_version: u32,
    /// The CSeq of pivotd's last re-INVITE seen (its retransmissions are skipped).
    their_cseq: u32,
}

impl Caller {
    pub async fn new(server: SocketAddr) -> Caller {
        Caller {
            sip: RawSip::udp(server).await,
            media: RtpSink::bind().await,
            call_id: format!("{}@bridge-test", token()),
            tag: token(),
            invite: String::new(),
            cseq: 1,
            codecs: Vec::new(),
            sdp_version: 0,
            their_cseq: 0,
        }
    }

    /// Our next description: `codecs` and telephone-event at our media port, `direction`.
    fn sdp(&mut self, codecs: &[u8], direction: &str) -> String {
        self.sdp_version += 1;
        let fmts: Vec<String> = codecs.iter().map(u8::to_string).collect();
        let mut sdp = format!(
            "v=0\r\no=caller 1 {} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {} RTP/AVP {} 101\r\n",
            self.sdp_version,
            self.media.addr.port(),
            fmts.join(" ")
        );
        for c in codecs {
            let name = if *c == 8 { "PCMA" } else { "PCMU" };
            sdp.push_str(&format!("a=rtpmap:{c} {name}/8000\r\n"));
        }
        sdp.push_str(&format!(
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
        ));
        sdp
    }

    /// Sends an INVITE for `number` offering `codecs` (payload types) and telephone-event.
    pub async fn invite(&mut self, number: &str, codecs: &[u8], extra: &str) {
        let local = self.sip.local();
        self.codecs = codecs.to_vec();
        let sdp = self.sdp(codecs, "sendrecv");
        self.invite = format!(
            "INVITE sip:{number}@pivotd.test SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@pivotd.test>;tag={}\r\nTo: <sip:{number}@pivotd.test>\r\n\
             Call-ID: {}\r\nCSeq: 1 INVITE\r\nContact: <sip:1000@{local}>\r\n{extra}\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            token(),
            self.tag,
            self.call_id,
            sdp.len()
        );
        let bytes = self.invite.clone();
        self.sip.send(bytes.as_bytes()).await;
    }

    /// Responses until a final one (provisional codes pushed to `seen`).
    pub async fn final_response(&mut self, ms: u64, seen: &mut Vec<u16>) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = self.sip.recv(left.as_millis().max(1) as u64).await?;
            let of_invite = header(&m, "CSeq").is_some_and(|c| c.ends_with("INVITE"));
            if !m.starts_with("SIP/2.0") || !of_invite {
                continue;
            }
            let code = status(&m);
            seen.push(code);
            if code >= 200 {
                return Some(m);
            }
        }
    }

    /// Calls `number` (offering `codecs`) and expects it answered within `ms`: the 200 is
    /// acknowledged and returned with the provisional codes seen before it.
    pub async fn answered(&mut self, number: &str, codecs: &[u8], ms: u64) -> (String, Vec<u16>) {
        self.invite(number, codecs, "").await;
        let mut seen = Vec::new();
        let ok = self
            .final_response(ms, &mut seen)
            .await
            .unwrap_or_else(|| panic!("no final response; seen {seen:?}"));
        assert_eq!(status(&ok), 200, "{ok}\nseen {seen:?}");
        self.ack(&ok).await;
        (ok, seen)
    }

    /// ACK of a 2xx (to the Contact's address, which is pivotd's own here).
    pub async fn ack(&mut self, ok: &str) {
        let local = self.sip.local();
        let ack = format!(
            "ACK sip:pivotd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@pivotd.test>;tag={}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            token(),
            self.tag,
            header(ok, "To").unwrap(),
            self.call_id
        );
        self.sip.send(ack.as_bytes()).await;
    }

    /// A re-INVITE in the answered dialog with our media `direction` (`sendonly` holds the
    /// other side, `sendrecv` resumes); returns its final response (ACKed).
    pub async fn reinvite(&mut self, ok: &str, codec: u8, direction: &str) -> String {
        self.cseq += 1;
        let local = self.sip.local();
        let sdp = self.sdp(&[codec], direction);
        let branch = format!("z9hG4bK{}", token());
        let msg = format!(
            "INVITE sip:pivotd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch}\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@pivotd.test>;tag={}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {} INVITE\r\nContact: <sip:1000@{local}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.tag,
            header(ok, "To").unwrap(),
            self.call_id,
            self.cseq,
            sdp.len()
        );
        self.sip.send(msg.as_bytes()).await;
        let want = format!("{} INVITE", self.cseq);
        let resp = loop {
            let m = self
                .sip
                .recv(5000)
                .await
                .expect("an answer to the re-INVITE");
            if m.starts_with("SIP/2.0")
                && header(&m, "CSeq").as_deref() == Some(want.as_str())
                && status(&m) >= 200
            {
                break m;
            }
        };
        // A 2xx's ACK is a transaction of its own; a failure's belongs to the INVITE's
        // (its branch, RFC 3261 §17.1.1.3).
        let ack_branch = if status(&resp) >= 300 {
            branch
        } else {
            format!("z9hG4bK{}", token())
        };
        let ack = format!(
            "ACK sip:pivotd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={ack_branch}\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@pivotd.test>;tag={}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {} ACK\r\nContent-Length: 0\r\n\r\n",
            self.tag,
            header(ok, "To").unwrap(),
            self.call_id,
            self.cseq
        );
        self.sip.send(ack.as_bytes()).await;
        resp
    }

    /// The next re-INVITE pivotd sends in our dialog within `ms` (retransmissions of one
    /// already seen, and any other message meanwhile, are skipped).
    pub async fn next_reinvite(&mut self, ms: u64) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let m = self.sip.expect("INVITE ", left.as_millis() as u64).await?;
            let cseq: u32 = header(&m, "CSeq")
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            if cseq > self.their_cseq {
                self.their_cseq = cseq;
                return Some(m);
            }
        }
    }

    /// Answers pivotd's request `req` with `code`; with `direction`, an SDP answer of our
    /// first codec with that direction (`recvonly` to a hold, `sendrecv` to a resume).
    pub async fn respond(&mut self, req: &str, code: u16, direction: Option<&str>) {
        let codecs = self.codecs.first().map_or(vec![0], |c| vec![*c]);
        let sdp = direction.map(|d| self.sdp(&codecs, d));
        let text = response(req, code, None, self.sip.local(), sdp.as_deref());
        self.sip.send(text.as_bytes()).await;
    }

    pub async fn bye(&mut self, ok: &str) {
        let bye = self.bye_request(ok);
        self.sip.send(bye.as_bytes()).await;
    }

    /// The BYE of the answered dialog (`ok` its 200), not sent yet.
    pub fn bye_request(&mut self, ok: &str) -> String {
        self.cseq += 1;
        let local = self.sip.local();
        format!(
            "BYE sip:pivotd@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{}\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:1000@pivotd.test>;tag={}\r\nTo: {}\r\n\
             Call-ID: {}\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n",
            token(),
            self.tag,
            header(ok, "To").unwrap(),
            self.call_id,
            self.cseq
        )
    }

    pub async fn cancel(&mut self) {
        let via = header(&self.invite, "Via").unwrap();
        let cancel = format!(
            "CANCEL sip:x@pivotd.test SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n\
             From: \"Alice\" <sip:1000@pivotd.test>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\n\
             CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
            self.tag,
            header(&self.invite, "To").unwrap(),
            self.call_id
        );
        let uri = self.invite.split_whitespace().nth(1).unwrap().to_string();
        let cancel = cancel.replacen("sip:x@pivotd.test", &uri, 1);
        self.sip.send(cancel.as_bytes()).await;
    }
}

/// Sends `ms` of a `freq` Hz tone as RTP (`pt` 0 or 8) from `socket` to `to`, paced at 20 ms.
pub async fn send_tone(socket: &UdpSocket, to: SocketAddr, pt: u8, freq: f32, ms: u32) {
    let codec = if pt == 8 { Codec::Pcma } else { Codec::Pcmu };
    let ssrc: u32 = rand::random();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    for i in 0..ms / 20 {
        ticker.tick().await;
        let pcm: Vec<i16> = (0..160)
            .map(|n| {
                let t = (i * 160 + n) as f32 / 8000.0;
                ((std::f32::consts::TAU * freq * t).sin() * 8000.0) as i16
            })
            .collect();
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&(i as u16).to_be_bytes());
        p.extend_from_slice(&(i * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&codec.encode(&pcm));
        let _ = socket.send_to(&p, to).await;
    }
}

/// The power of `freq` relative to the whole signal (Goertzel), 0..1: near 1 for a pure tone.
pub fn tone_share(pcm: &[i16], freq: f32) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    let k = 2.0 * (std::f32::consts::TAU * freq / 8000.0).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    let mut energy = 0.0f32;
    for &x in pcm {
        let x = f32::from(x);
        energy += x * x;
        let s = x + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - k * s1 * s2;
    if energy == 0.0 {
        0.0
    } else {
        (2.0 * power / (pcm.len() as f32 * energy)).min(1.0)
    }
}

/// The audio a sink received, decoded by each packet's payload type.
pub fn received_pcm(sink: &RtpSink) -> Vec<i16> {
    pcm_of(&sink.packets())
}

/// The audio of `packets`, decoded by each packet's payload type.
pub fn pcm_of(packets: &[RtpPacket]) -> Vec<i16> {
    packets
        .iter()
        .filter(|p| p.pt == 0 || p.pt == 8)
        .flat_map(|p| {
            let codec = if p.pt == 8 { Codec::Pcma } else { Codec::Pcmu };
            codec.decode(&p.payload)
        })
        .collect()
}

/// The To tag and SDP of a response, for checks.
pub fn answer_parts(resp: &str) -> (Option<String>, String) {
    (to_tag(resp), body(resp).to_string())
}

/// Sends one RFC 4733 key (`code`: 0–9, 10 `*`, 11 `#`) from `socket` to `to`, as a phone
/// does: the start with the marker, updates every 20 ms, the end packet three times.
pub async fn send_key(socket: &UdpSocket, to: SocketAddr, code: u8) {
    let seq: u16 = rand::random();
    let ts: u32 = rand::random();
    let steps = [
        (false, 160u16),
        (false, 320),
        (true, 480),
        (true, 480),
        (true, 480),
    ];
    for (i, (end, duration)) in steps.into_iter().enumerate() {
        let p = super::dtmf_packet(seq.wrapping_add(i as u16), ts, i == 0, code, end, duration);
        let _ = socket.send_to(&p, to).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A WAV of `freq` Hz for `secs` seconds ([`sox_tone`]) in a directory of its own, removed
/// with it: what a softphone plays (baresip hangs up when its audio file ends).
pub struct ToneFile(PathBuf);

impl ToneFile {
    pub fn new(freq: f32, secs: u32) -> ToneFile {
        let path = tempdir().join("tone.wav");
        sox_tone(&path, freq, secs);
        ToneFile(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ToneFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Writes `secs` seconds of a `freq` Hz sine as an 8 kHz 16-bit mono WAV with sox, for a
/// phone to play. sox is a required tool: a missing binary fails the test.
pub fn sox_tone(path: &Path, freq: f32, secs: u32) {
    let out = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(path)
        .args([
            "synth",
            &secs.to_string(),
            "sine",
            &freq.to_string(),
            "vol",
            "0.3",
        ])
        .output()
        .unwrap_or_else(|e| panic!("sox is not installed (apt-get install sox): {e}"));
    assert!(
        out.status.success(),
        "sox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 16-bit PCM WAV's first channel at 8 kHz (a rate that is a multiple of 8 kHz is
/// decimated, enough for a tone well below 4 kHz); None when the file cannot be read (yet).
pub fn wav_pcm_8k(path: &Path) -> Option<Vec<i16>> {
    let reader = hound::WavReader::open(path).ok()?;
    let spec = reader.spec();
    assert_eq!(spec.bits_per_sample, 16, "{}: {spec:?}", path.display());
    assert_eq!(spec.sample_rate % 8000, 0, "{}: {spec:?}", path.display());
    let step = (spec.sample_rate / 8000 * u32::from(spec.channels)) as usize;
    let samples: Vec<i16> = reader.into_samples::<i16>().map_while(Result::ok).collect();
    Some(samples.into_iter().step_by(step).collect())
}

/// A server whose number 6000 bridges (the `resources` module) to `callee` as the account's
/// carrier; `sip_extra`: more `[sip]` keys.
pub async fn carrier_server(callee: &Callee, sip_extra: &str) -> TestServer {
    let callflows = format!(
        r#"
[[accounts.callflows]]
numbers = ["6000"]
flow = {{ module = "resources", data = {{ to_did = "5551234" }} }}
[[accounts.resources]]
id = "carrier1"
gateway = "sip:{}"
[pivot]
blacklist_cidrs = []
"#,
        callee.addr
    );
    super::start(&super::config_toml(&callflows, sip_extra, "")).await
}

/// For `ms`, the caller sends a `a_freq` Hz tone (payload type `a_pt`) to pivotd at
/// `pivotd_a` and the callee a `b_freq` Hz tone (`b_pt`) to pivotd's media for it; each must
/// hear the other's tone in what it received meanwhile (compared by content, so a stale or
/// foreign stream fails).
pub async fn hear_each_other(
    caller: &Caller,
    callee: &Callee,
    pivotd_a: SocketAddr,
    (a_pt, a_freq): (u8, f32),
    (b_pt, b_freq): (u8, f32),
    ms: u32,
) {
    let (a_seen, b_seen) = (caller.media.packets().len(), callee.media.packets().len());
    tokio::join!(
        send_tone(&caller.media.socket, pivotd_a, a_pt, a_freq, ms),
        send_tone(
            &callee.media.socket,
            callee.pivotd_media(),
            b_pt,
            b_freq,
            ms
        ),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_caller = pcm_of(caller.media.packets().get(a_seen..).unwrap_or(&[]));
    let at_callee = pcm_of(callee.media.packets().get(b_seen..).unwrap_or(&[]));
    let least = (ms as usize * 8) * 2 / 3;
    assert!(
        at_caller.len() >= least && at_callee.len() >= least,
        "samples heard: caller {}, callee {} (want {least})",
        at_caller.len(),
        at_callee.len()
    );
    let (share_caller, share_callee) = (
        tone_share(&at_caller, b_freq),
        tone_share(&at_callee, a_freq),
    );
    assert!(
        share_caller > 0.8,
        "the caller hears the callee's {b_freq} Hz: {share_caller}"
    );
    assert!(
        share_callee > 0.8,
        "the callee hears the caller's {a_freq} Hz: {share_callee}"
    );
}
