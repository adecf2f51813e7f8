//! A hand-written subscriber (RFC 6665, over UDP) for the presence tests: SUBSCRIBE with the
//! digest answer of `digest.rs` after a 407, refresh and unsubscribe in the dialog pivotd's
//! 200 created, every NOTIFY answered (200, or the code a test asks for) and kept in order;
//! and the two NOTIFY documents read with quick-xml's reader.

use std::collections::VecDeque;
use std::net::SocketAddr;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::digest::{challenges, credentials};
use super::{body, header, status, token, RawSip};

/// A NOTIFY received.
#[derive(Clone, Debug)]
pub struct Notify {
    pub raw: String,
    pub cseq: u32,
    pub call_id: String,
    pub event: String,
    pub state: String,
    pub content_type: String,
    pub body: String,
    /// Its Contact URI: the dialog's remote target from then on (NOTIFY refreshes it).
    pub contact: String,
}

impl Notify {
    fn of(raw: String) -> Notify {
        let h = |n: &str| header(&raw, n).unwrap_or_default();
        Notify {
            cseq: h("CSeq")
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            call_id: h("Call-ID"),
            event: h("Event"),
            state: h("Subscription-State"),
            content_type: h("Content-Type"),
            body: body(&raw).to_string(),
            contact: uri_of(&h("Contact")),
            raw,
        }
    }

    /// Whether it ends the subscription (`terminated;reason=…`).
    pub fn is_final(&self) -> bool {
        self.state.starts_with("terminated")
    }
}

fn uri_of(value: &str) -> String {
    value
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map_or(value, |(u, _)| u)
        .to_string()
}

/// One subscriber: a device's credentials, one socket, one dialog at a time.
pub struct Subscriber {
    pub sip: RawSip,
    /// Where new SUBSCRIBEs go (and in-dialog ones, over UDP).
    pub server: SocketAddr,
    pub user: String,
    pub password: String,
    pub realm: String,
    /// The Request-URI of the first SUBSCRIBE: the presence id watched.
    pub target: String,
    pub event: String,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    /// pivotd's To tag, once its 200 came: the dialog.
    pub remote_tag: Option<String>,
    /// Where in-dialog SUBSCRIBEs go: pivotd's Contact (refreshed by each NOTIFY).
    pub remote_target: Option<String>,
    /// The code NOTIFYs are answered with.
    pub notify_answer: u16,
    /// Send SUBSCRIBEs without an Event header (a malformed request).
    pub omit_event: bool,
    /// The CSeqs of the NOTIFYs kept: a retransmission is answered again, not kept twice.
    seen: std::collections::HashSet<(String, u32)>,
    notifies: VecDeque<Notify>,
    responses: VecDeque<String>,
}

impl Subscriber {
    /// A subscriber for `event` of the URI `target` with device `user`'s credentials in
    /// `realm` (its From is `sip:user@realm`).
    pub async fn new(
        server: SocketAddr,
        user: &str,
        password: &str,
        realm: &str,
        target: &str,
        event: &str,
    ) -> Subscriber {
        Subscriber {
            sip: RawSip::udp(server).await,
            server,
            user: user.into(),
            password: password.into(),
            realm: realm.into(),
            target: target.into(),
            event: event.into(),
            call_id: format!("{}@subscriber", token()),
            from_tag: token(),
            cseq: 0,
            remote_tag: None,
            remote_target: None,
            notify_answer: 200,
            omit_event: false,
            seen: Default::default(),
            notifies: VecDeque::new(),
            responses: VecDeque::new(),
        }
    }

    /// Sends one SUBSCRIBE (in the dialog once there is one) with `extra` header lines (each
    /// ending in CRLF), and returns its final response; NOTIFYs meanwhile are answered and
    /// kept. Without an Event line in `extra`, `Event: <event>` is added.
    pub async fn send(&mut self, extra: &str) -> String {
        self.cseq += 1;
        let local = self.sip.local();
        let (uri, to) = match (&self.remote_tag, &self.remote_target) {
            (Some(tag), Some(target)) => (target.clone(), format!("<{}>;tag={tag}", self.target)),
            _ => (self.target.clone(), format!("<{}>", self.target)),
        };
        let event = if self.omit_event || extra.to_ascii_lowercase().contains("event:") {
            String::new()
        } else {
            format!("Event: {}\r\n", self.event)
        };
        let msg = format!(
            "SUBSCRIBE {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{realm}>;tag={tag}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} SUBSCRIBE\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             User-Agent: pivotd-test subscriber\r\n\
             {event}{extra}Content-Length: 0\r\n\r\n",
            branch = token(),
            user = self.user,
            realm = self.realm,
            tag = self.from_tag,
            call_id = self.call_id,
            cseq = self.cseq,
        );
        self.sip.send(msg.as_bytes()).await;
        let want = format!("{} SUBSCRIBE", self.cseq);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if let Some(i) = self
                .responses
                .iter()
                .position(|r| header(r, "CSeq").is_some_and(|c| c == want) && status(r) >= 200)
            {
                let r = self.responses.remove(i).unwrap_or_default();
                if status(&r) / 100 == 2 {
                    self.remote_tag = super::to_tag(&r);
                    if let Some(c) = header(&r, "Contact") {
                        self.remote_target = Some(uri_of(&c));
                    }
                }
                return r;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "no final response to SUBSCRIBE {want}");
            self.pump(left.as_millis() as u64).await;
        }
    }

    /// A new subscription for `expires` seconds (None: no Expires header), answering a 407
    /// with the device's credentials; the final response.
    pub async fn subscribe(&mut self, expires: Option<u32>, extra: &str) -> String {
        let exp = expires.map_or(String::new(), |e| format!("Expires: {e}\r\n"));
        let first = self.send(&format!("{exp}{extra}")).await;
        if status(&first) != 407 {
            return first;
        }
        let c = challenges(&first, "Proxy-Authenticate")
            .into_iter()
            .next()
            .expect("a challenge");
        let auth = credentials(
            &c,
            &self.user,
            &self.password,
            "SUBSCRIBE",
            &self.target,
            1,
            &token(),
        );
        self.send(&format!("{exp}{extra}Proxy-Authorization: {auth}\r\n"))
            .await
    }

    /// Sends from now on to `server` (the same pivotd on a new port, after a restart).
    pub fn set_server(&mut self, server: SocketAddr) {
        self.server = server;
        if let RawSip::Udp(_, target) = &mut self.sip {
            *target = server;
        }
    }

    /// A SUBSCRIBE in the dialog: a refresh for `expires` seconds, or with 0 the end.
    pub async fn refresh(&mut self, expires: u32) -> String {
        assert!(self.remote_tag.is_some(), "no dialog to refresh");
        self.send(&format!("Expires: {expires}\r\n")).await
    }

    /// The next NOTIFY (already answered), waiting up to `ms`.
    pub async fn next_notify(&mut self, ms: u64) -> Option<Notify> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(ms);
        loop {
            if let Some(n) = self.notifies.pop_front() {
                return Some(n);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            self.pump(left.as_millis() as u64).await;
        }
    }

    /// The next NOTIFY, which must come within 5 s.
    pub async fn notify(&mut self) -> Notify {
        self.next_notify(5000)
            .await
            .unwrap_or_else(|| panic!("no NOTIFY for {} ({})", self.target, self.event))
    }

    /// Receives one message (up to `ms`): a NOTIFY is answered and kept, a response kept.
    async fn pump(&mut self, ms: u64) {
        let Some(m) = self.sip.recv(ms).await else {
            return;
        };
        if m.starts_with("NOTIFY ") {
            self.answer(&m, self.notify_answer).await;
            let n = Notify::of(m);
            if !self.seen.insert((n.call_id.clone(), n.cseq)) {
                return;
            }
            if !n.contact.is_empty() {
                self.remote_target = Some(n.contact.clone());
            }
            self.notifies.push_back(n);
        } else if m.starts_with("SIP/2.0 ") {
            self.responses.push_back(m);
        }
    }

    /// A response to a request received: its Via, From, To, Call-ID and CSeq copied.
    async fn answer(&mut self, req: &str, code: u16) {
        let mut out = format!("SIP/2.0 {code} Answer\r\n");
        for l in req.split("\r\n").take_while(|l| !l.is_empty()) {
            let name = l
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"].contains(&name.as_str())
            {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        self.sip.send(out.as_bytes()).await;
    }
}

/// One element of a parsed document: its path from the root, attributes and text.
#[derive(Debug)]
pub struct El {
    pub path: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
}

impl El {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn element(path: &[String], e: &BytesStart<'_>) -> El {
    let attrs = e
        .attributes()
        .map(|a| {
            let a = a.expect("attribute");
            (
                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                a.unescape_value().expect("value").into_owned(),
            )
        })
        .collect();
    El {
        path: path.join("/"),
        attrs,
        text: String::new(),
    }
}

/// A document's elements in order (panics on XML that is not well formed).
pub fn xml(doc: &str) -> Vec<El> {
    let mut r = Reader::from_str(doc);
    let (mut path, mut open, mut out) = (Vec::new(), Vec::new(), Vec::<El>::new());
    loop {
        match r
            .read_event()
            .unwrap_or_else(|e| panic!("bad XML ({e}):\n{doc}"))
        {
            Event::Start(e) => {
                path.push(String::from_utf8(e.name().as_ref().to_vec()).unwrap());
                out.push(element(&path, &e));
                open.push(out.len() - 1);
            }
            Event::Empty(e) => {
                path.push(String::from_utf8(e.name().as_ref().to_vec()).unwrap());
                out.push(element(&path, &e));
                path.pop();
            }
            Event::End(_) => {
                path.pop();
                open.pop();
            }
            Event::Text(t) => {
                if let Some(&i) = open.last() {
                    out[i].text.push_str(t.unescape().unwrap().trim());
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(path.is_empty(), "unbalanced XML:\n{doc}");
    out
}

/// What an RFC 4235 document says.
#[derive(Debug, PartialEq, Eq)]
pub struct DialogInfo {
    pub version: u32,
    pub state: String,
    pub entity: String,
    /// The `<state>` of each dialog, in order.
    pub dialogs: Vec<String>,
}

impl DialogInfo {
    /// Idle: no dialog, or every dialog terminated.
    pub fn is_idle(&self) -> bool {
        self.dialogs.iter().all(|d| d == "terminated")
    }
}

pub fn dialog_info(n: &Notify) -> DialogInfo {
    assert_eq!(n.content_type, "application/dialog-info+xml", "{}", n.raw);
    let els = xml(&n.body);
    let root = els
        .iter()
        .find(|e| e.path == "dialog-info")
        .unwrap_or_else(|| panic!("no dialog-info root:\n{}", n.body));
    assert_eq!(
        root.attr("xmlns"),
        Some("urn:ietf:params:xml:ns:dialog-info")
    );
    DialogInfo {
        version: root
            .attr("version")
            .and_then(|v| v.parse().ok())
            .expect("version"),
        state: root.attr("state").unwrap_or_default().into(),
        entity: root.attr("entity").unwrap_or_default().into(),
        dialogs: els
            .iter()
            .filter(|e| e.path == "dialog-info/dialog/state")
            .map(|e| e.text.clone())
            .collect(),
    }
}

/// What a PIDF document says.
#[derive(Debug, PartialEq, Eq)]
pub struct Pidf {
    pub entity: String,
    pub basic: String,
    pub note: String,
    /// The RPID activities (element names).
    pub activities: Vec<String>,
}

pub fn pidf(n: &Notify) -> Pidf {
    assert_eq!(n.content_type, "application/pidf+xml", "{}", n.raw);
    let els = xml(&n.body);
    let find = |p: &str| {
        els.iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("no {p} in:\n{}", n.body))
    };
    assert_eq!(
        find("presence").attr("xmlns"),
        Some("urn:ietf:params:xml:ns:pidf")
    );
    Pidf {
        entity: find("presence").attr("entity").unwrap_or_default().into(),
        basic: find("presence/tuple/status/basic").text.clone(),
        note: find("presence/note").text.clone(),
        activities: els
            .iter()
            .filter_map(|e| e.path.strip_prefix("presence/dm:person/rpid:activities/"))
            .map(str::to_string)
            .collect(),
    }
}

/// The one `<dialog>` of a dialog-info NOTIFY: its state, direction and Call-ID, the local
/// tag and the remote identity; `state` "idle" and the rest empty when it shows none.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub state: String,
    pub direction: String,
    pub call_id: String,
    pub local_tag: Option<String>,
    pub remote: String,
}

pub fn shown(n: &Notify) -> Shown {
    let d = dialog_info(n);
    if d.is_idle() {
        return Shown {
            state: "idle".into(),
            direction: String::new(),
            call_id: String::new(),
            local_tag: None,
            remote: String::new(),
        };
    }
    assert_eq!(d.dialogs.len(), 1, "one dialog: {}", n.body);
    let els = xml(&n.body);
    let dialog = els
        .iter()
        .find(|e| e.path == "dialog-info/dialog")
        .expect("a dialog");
    let remote = els
        .iter()
        .find(|e| e.path == "dialog-info/dialog/remote/identity")
        .map(|e| e.text.clone())
        .unwrap_or_default();
    Shown {
        state: d.dialogs[0].clone(),
        direction: dialog.attr("direction").unwrap_or_default().into(),
        call_id: dialog.attr("call-id").unwrap_or_default().into(),
        local_tag: dialog.attr("local-tag").map(str::to_string),
        remote,
    }
}

/// The presence tests' watcher (device w1: `2009`, password `pass-2009`, in `realm`)
/// subscribed at `server` to `event` for `user@realm`, its first NOTIFY (idle) taken.
pub async fn watch(server: SocketAddr, realm: &str, user: &str, event: &str) -> Subscriber {
    let mut s = Subscriber::new(
        server,
        "2009",
        "pass-2009",
        realm,
        &format!("sip:{user}@{realm}"),
        event,
    )
    .await;
    let r = s.subscribe(Some(600), "").await;
    assert_eq!(status(&r), 200, "{r}");
    let first = s.notify().await;
    match event {
        "dialog" => assert!(dialog_info(&first).is_idle(), "{}", first.body),
        _ => assert_eq!(pidf(&first).note, "Available", "{}", first.body),
    }
    s
}
