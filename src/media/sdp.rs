//! SDP (RFC 4566) parsing and the offer/answer model (RFC 3264) for one G.711 audio stream
//! with RFC 4733 telephone-events.
//!
//! Only what pivotd needs is kept: origin, session name, connection (session and media level;
//! the media level wins, RFC 4566 §5.7), media lines, `a=rtpmap`, `a=fmtp`, `a=ptime` and the
//! direction attributes (session and media level, RFC 3264 §5.1). Unknown lines and attributes
//! are ignored, as RFC 4566 §5 asks.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::codec::Codec;
use super::srtp::sdes::CryptoLine;

/// The RTP clock rate of the telephone-event we use with G.711 (RFC 4733 §2.1).
const DTMF_CLOCK: u32 = 8000;
/// The packetisation time pivotd sends and asks for.
pub const PTIME_MS: u32 = 20;

/// Media direction attribute (RFC 3264 §5.1, §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answer gives to this offered direction (RFC 3264 §6.1):
    /// sendonly → recvonly, recvonly → sendonly, sendrecv and inactive unchanged.
    pub fn answer_to(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the side whose direction this is may send media.
    pub fn we_send(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side whose direction this is expects to receive media.
    pub fn we_receive(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction of our offer that holds the other side (`hold`) or takes it off hold
    /// (RFC 3264 §8.4), given whether it holds us (`held`): sendonly to hold, inactive to
    /// hold a side that holds us; sendrecv to resume, recvonly while it still holds us.
    pub fn hold_offer(hold: bool, held: bool) -> Direction {
        match (hold, held) {
            (false, false) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (true, true) => Direction::Inactive,
            (false, true) => Direction::RecvOnly,
        }
    }

    /// Our direction in an answer (this, from [`Direction::answer_to`]) while we hold the
    /// other side (`holding`): a sendrecv offer gets sendonly, so the hold we offered stays;
    /// every other offer keeps its RFC 3264 §6.1 answer (recvonly to sendonly, inactive to
    /// inactive, sendonly to recvonly).
    pub fn holding(self, holding: bool) -> Direction {
        if holding && self == Direction::SendRecv {
            Direction::SendOnly
        } else {
            self
        }
    }

    /// Whether this, our negotiated direction, means the other side holds us: it offered or
    /// answered sendonly or inactive (or c=0.0.0.0), so we may not send (RFC 3264 §8.4).
    pub fn held(self) -> bool {
        !self.we_send()
    }

    /// The attribute name (`sendrecv`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attr(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
}

/// Why an SDP body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// A line breaks RFC 4566 syntax (1-based line number).
    #[error("malformed SDP at line {line}: {reason}")]
    Malformed { line: usize, reason: String },
    /// No `m=audio` stream with a non-zero port over RTP/AVP or RTP/SAVP.
    #[error("no usable audio stream (m=audio, non-zero port, RTP/AVP or RTP/SAVP)")]
    NoAudio,
    /// The audio stream offers neither PCMU nor PCMA (SIP answers 488).
    #[error("no common codec (PCMU or PCMA) offered")]
    NoCommonCodec,
}

/// The `o=` line (RFC 4566 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: String,
    pub version: String,
    pub address: String,
}

/// One `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` (RFC 4566 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u32>,
}

/// One `m=` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, …
    pub kind: String,
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, …
    pub proto: String,
    /// The format list as written (payload types for RTP).
    pub formats: Vec<String>,
    /// Media-level `c=` address.
    pub connection: Option<IpAddr>,
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp:<format> <parameters>` as written.
    pub fmtps: Vec<(String, String)>,
    pub ptime: Option<u32>,
    /// Media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=crypto` values as written (SDES keys, RFC 4568), at most [`MAX_CRYPTO_LINES`];
    /// read by `media/srtp/sdes.rs`.
    pub crypto: Vec<String>,
    /// 1-based line number of the `m=` line (for error messages).
    pub line: usize,
}

/// `a=crypto` lines kept per stream: an offer lists one per suite it speaks; more is noise.
pub const MAX_CRYPTO_LINES: usize = 16;

impl Media {
    /// The encoding of payload type `pt`: its rtpmap, else the RFC 3551 static assignment
    /// for PT 0 and 8.
    pub fn encoding_of(&self, pt: u8) -> Option<(&str, u32, Option<u32>)> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some((m.encoding.as_str(), m.clock_rate, m.channels));
        }
        match pt {
            0 => Some(("PCMU", 8000, None)),
            8 => Some(("PCMA", 8000, None)),
            _ => None,
        }
    }

    /// The numeric payload types of the format list, in order (non-numbers skipped).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok())
    }

    fn usable_audio(&self) -> bool {
        self.kind.eq_ignore_ascii_case("audio")
            && self.port != 0
            && (self.proto.eq_ignore_ascii_case("RTP/AVP") || self.is_savp())
    }

    /// SRTP's profile (RFC 3711 §12): the far end asks for encrypted media on this stream.
    pub fn is_savp(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/SAVP")
    }
}

/// A parsed session description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sdp {
    pub origin: Option<Origin>,
    pub session_name: Option<String>,
    /// Session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute.
    pub direction: Option<Direction>,
    pub media: Vec<Media>,
}

impl Sdp {
    /// Index of the stream pivotd uses: the first `m=audio` with a non-zero port over RTP/AVP
    /// or RTP/SAVP (whether SRTP is then used is `media/srtp/policy.rs`'s decision).
    pub fn audio_index(&self) -> Option<usize> {
        self.media.iter().position(Media::usable_audio)
    }

    /// The stream pivotd uses (see [`Sdp::audio_index`]).
    pub fn audio(&self) -> Option<&Media> {
        self.audio_index().and_then(|i| self.media.get(i))
    }
}

fn malformed(line: usize, reason: impl Into<String>) -> SdpError {
    SdpError::Malformed {
        line,
        reason: reason.into(),
    }
}

/// Parses an SDP body (RFC 4566 §5). Accepts CRLF or LF line ends and ignores blank lines;
/// the first line must be `v=0`.
pub fn parse(body: &str) -> Result<Sdp, SdpError> {
    let mut sdp = Sdp {
        origin: None,
        session_name: None,
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    let mut seen_version = false;
    for (idx, raw) in body.split('\n').enumerate() {
        let n = idx + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let mut chars = line.chars();
        let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
            return Err(malformed(n, "expected <type>=<value>"));
        };
        if !kind.is_ascii_alphabetic() {
            return Err(malformed(n, "line type is not a letter"));
        }
        let value = chars.as_str();
        if !seen_version {
            if kind != 'v' {
                return Err(malformed(n, "SDP must start with v="));
            }
            if value.trim() != "0" {
                return Err(malformed(n, format!("unsupported version {value:?}")));
            }
            seen_version = true;
            continue;
        }
        match kind {
            'v' => return Err(malformed(n, "second v= line")),
            'o' => {
                let f: Vec<&str> = value.split_ascii_whitespace().collect();
                let [user, id, ver, _net, _addrtype, addr] = f.as_slice() else {
                    return Err(malformed(n, "o= needs 6 fields"));
                };
                sdp.origin = Some(Origin {
                    username: user.to_string(),
                    session_id: id.to_string(),
                    version: ver.to_string(),
                    address: addr.to_string(),
                });
            }
            's' => sdp.session_name = Some(value.to_string()),
            'c' => {
                let addr = parse_connection(value).map_err(|r| malformed(n, r.to_string()))?;
                match sdp.media.last_mut() {
                    Some(m) => m.connection = Some(addr),
                    None => sdp.connection = Some(addr),
                }
            }
            'm' => sdp.media.push(parse_media(value, n)?),
            'a' => {
                let (name, val) = match value.split_once(':') {
                    Some((k, v)) => (k, Some(v)),
                    None => (value, None),
                };
                if let Some(d) = Direction::from_attr(name.trim()) {
                    match sdp.media.last_mut() {
                        Some(m) => m.direction = Some(d),
                        None => sdp.direction = Some(d),
                    }
                    continue;
                }
                // The other attributes we read are media-level only.
                let Some(m) = sdp.media.last_mut() else {
                    continue;
                };
                match (name, val) {
                    ("rtpmap", Some(v)) => m.rtpmaps.push(parse_rtpmap(v, n)?),
                    ("rtpmap", None) => return Err(malformed(n, "a=rtpmap without value")),
                    ("fmtp", Some(v)) => {
                        let (fmt, params) = v.split_once(' ').unwrap_or((v, ""));
                        m.fmtps.push((fmt.to_string(), params.trim().to_string()));
                    }
                    ("crypto", Some(v)) if m.crypto.len() < MAX_CRYPTO_LINES => {
                        m.crypto.push(v.trim().to_string());
                    }
                    ("ptime", Some(v)) => {
                        let p: f64 = v
                            .trim()
                            .parse()
                            .map_err(|_| malformed(n, format!("bad ptime {v:?}")))?;
                        if !(p > 0.0 && p <= 1000.0) {
                            return Err(malformed(n, format!("ptime out of range: {v}")));
                        }
                        m.ptime = Some(p.round() as u32);
                    }
                    _ => {}
                }
            }
            // b, t, r, z, k, i, u, e, p and unknown types: not needed (RFC 4566 §5 says
            // to ignore what we do not understand).
            _ => {}
        }
    }
    if !seen_version {
        return Err(malformed(1, "empty SDP (no v= line)"));
    }
    Ok(sdp)
}

/// `c=IN IP4 <addr>[/ttl[/n]]` or `c=IN IP6 <addr>` (RFC 4566 §5.7). Only IP literals:
/// the media layer does not resolve names.
fn parse_connection(value: &str) -> Result<IpAddr, ConnectionError> {
    let f: Vec<&str> = value.split_ascii_whitespace().collect();
    let [net, kind, addr] = f.as_slice() else {
        return Err(ConnectionError::Fields);
    };
    if *net != "IN" {
        return Err(ConnectionError::Network(net.to_string()));
    }
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| ConnectionError::NotLiteral(addr.to_string()))?;
    match (*kind, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(ConnectionError::Mismatch {
            addr: addr.to_string(),
            kind: kind.to_string(),
        }),
    }
}

/// Why a `c=` line is refused (the reason of the 488's log line).
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("c= needs 3 fields")]
    Fields,
    #[error("unknown network type {0}")]
    Network(String),
    #[error("connection address {0:?} is not an IP literal")]
    NotLiteral(String),
    #[error("address {addr} does not match type {kind}")]
    Mismatch { addr: String, kind: String },
}

/// `m=<media> <port>[/<n>] <proto> <fmt> ...` (RFC 4566 §5.14).
fn parse_media(value: &str, n: usize) -> Result<Media, SdpError> {
    let mut f = value.split_ascii_whitespace();
    let (Some(kind), Some(port), Some(proto)) = (f.next(), f.next(), f.next()) else {
        return Err(malformed(n, "m= needs media, port, proto and formats"));
    };
    let formats: Vec<String> = f.map(str::to_string).collect();
    if formats.is_empty() {
        return Err(malformed(n, "m= without formats"));
    }
    let port_str = port.split('/').next().unwrap_or(port);
    let port: u16 = port_str
        .parse()
        .map_err(|_| malformed(n, format!("bad port {port:?}")))?;
    Ok(Media {
        kind: kind.to_string(),
        port,
        proto: proto.to_string(),
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        direction: None,
        crypto: Vec::new(),
        line: n,
    })
}

/// `a=rtpmap:<pt> <encoding>/<clock>[/<channels>]` (RFC 4566 §6).
fn parse_rtpmap(v: &str, n: usize) -> Result<RtpMap, SdpError> {
    let bad = || malformed(n, format!("bad rtpmap {v:?}"));
    let (pt, rest) = v.trim().split_once(' ').ok_or_else(bad)?;
    let pt: u8 = pt.parse().map_err(|_| bad())?;
    if pt > 127 {
        return Err(bad());
    }
    let mut parts = rest.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty()).ok_or_else(bad)?;
    let clock_rate: u32 = parts
        .next()
        .and_then(|c| c.trim().parse().ok())
        .ok_or_else(bad)?;
    let channels = match parts.next() {
        Some(c) => Some(c.trim().parse().map_err(|_| bad())?),
        None => None,
    };
    Ok(RtpMap {
        pt,
        encoding: encoding.to_string(),
        clock_rate,
        channels,
    })
}

/// The outcome of an offer/answer exchange for the audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// The payload type the peer uses for `codec` (0/8, or a dynamic PT mapped to it).
    pub codec_pt: u8,
    /// The peer's telephone-event payload type at 8000 Hz, if any.
    pub dtmf_pt: Option<u8>,
    /// Where to send RTP: `None` for port 0 or c=0.0.0.0 hold.
    pub remote: Option<SocketAddr>,
    /// Ours, in the answer.
    pub direction: Direction,
    pub ptime_ms: u32,
}

/// Picks the audio stream, codec, telephone-event PT, remote address and direction from a
/// peer's description (offer or answer: the rules are the same from our side).
fn negotiate_sdp(sdp: &Sdp) -> Result<Negotiated, SdpError> {
    let media = sdp.audio().ok_or(SdpError::NoAudio)?;
    // RFC 3264 §6.1: the offerer's order is its preference; take its first G.711.
    let (codec, codec_pt) = media
        .payload_types()
        .find_map(|pt| {
            let (enc, clock, ch) = media.encoding_of(pt)?;
            let codec = Codec::from_encoding_name(enc)?;
            (clock == codec.clock_rate() && ch.unwrap_or(1) == 1).then_some((codec, pt))
        })
        .ok_or(SdpError::NoCommonCodec)?;
    // RFC 4733 §7.1.1: the telephone-event PT whose clock matches the audio codec's.
    // Never the audio PT: an offer mapping one PT to both would make every audio packet an
    // event.
    let dtmf_pt = media.payload_types().find(|&pt| {
        pt != codec_pt
            && media.rtpmaps.iter().any(|m| {
                m.pt == pt
                    && m.encoding.eq_ignore_ascii_case("telephone-event")
                    && m.clock_rate == DTMF_CLOCK
            })
    });
    let ip = media
        .connection
        .or(sdp.connection)
        .ok_or_else(|| malformed(media.line, "no c= line for the audio stream"))?;
    let mut theirs = media
        .direction
        .or(sdp.direction)
        .unwrap_or(Direction::SendRecv);
    let remote = if ip.is_unspecified() {
        // c=0.0.0.0 is the old way to hold (RFC 3264 §8.4): they will not receive.
        theirs = match theirs {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        };
        None
    } else {
        Some(SocketAddr::new(ip, media.port))
    };
    Ok(Negotiated {
        codec,
        codec_pt,
        dtmf_pt,
        remote,
        direction: theirs.answer_to(),
        ptime_ms: PTIME_MS,
    })
}

/// Negotiates our answer to an offer (RFC 3264 §6). `SdpError::NoCommonCodec` -> SIP 488.
pub fn negotiate(offer: &Sdp) -> Result<Negotiated, SdpError> {
    negotiate_sdp(offer)
}

/// Reads the caller's answer (in the ACK) to our late offer (RFC 3264 §7): the codec and
/// telephone-event PT they chose, their address, and our direction given theirs.
pub fn negotiate_answer(answer: &Sdp) -> Result<Negotiated, SdpError> {
    negotiate_sdp(answer)
}

/// A peer's description in a message body, parsed and negotiated (an offer or an answer:
/// the rules are the same from our side). None when it is not UTF-8, does not parse or has
/// nothing we can use.
pub fn read(body: &[u8]) -> Option<(Sdp, Negotiated)> {
    let sdp = parse(std::str::from_utf8(body).ok()?).ok()?;
    let n = negotiate_sdp(&sdp).ok()?;
    Some((sdp, n))
}

/// What we say about ourselves in the o= and c= lines and the m= port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalSession {
    pub ip: IpAddr,
    pub port: u16,
    pub session_id: u64,
    /// Bumped by the caller whenever the description changes (RFC 3264 §8).
    pub version: u64,
    /// SDES lines we send (RFC 4568): none for plain RTP; in an answer the one line chosen,
    /// in an offer one per suite.
    pub crypto: Vec<CryptoLine>,
    /// With `crypto`, the stream's profile is RTP/SAVP; without, RTP/AVP with the lines
    /// (best-effort SRTP, as Asterisk's `media_encryption_optimistic`: a far end without
    /// SRTP ignores them and talks plain RTP).
    pub savp: bool,
}

impl LocalSession {
    fn proto(&self) -> &'static str {
        if self.savp && !self.crypto.is_empty() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        }
    }

    fn write_crypto(&self, out: &mut String) {
        for line in &self.crypto {
            let _ = write!(out, "a=crypto:{}\r\n", line.to_value());
        }
    }
}

/// What we say about ourselves in one session over its life: the o= version is raised when
/// a description differs from the last one we sent and kept when it does not (RFC 3264 §8).
#[derive(Clone, Debug)]
pub struct OurDescription {
    pub local: LocalSession,
    /// The description we last sent.
    last: Option<String>,
}

impl OurDescription {
    /// `sent`: the description already sent with `local`'s version, if any.
    pub fn new(local: LocalSession, sent: Option<String>) -> OurDescription {
        OurDescription { local, last: sent }
    }

    /// The description `render` makes of our side, with the version it needs; it becomes the
    /// last one sent.
    pub fn describe(&mut self, render: impl Fn(&LocalSession) -> String) -> String {
        let mut sdp = render(&self.local);
        if self.last.as_ref().is_some_and(|last| *last != sdp) {
            self.local.version += 1;
            sdp = render(&self.local);
        }
        self.last = Some(sdp.clone());
        sdp
    }
}

fn ip_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn write_session(out: &mut String, local: &LocalSession) {
    let t = ip_type(local.ip);
    let _ = write!(
        out,
        "v=0\r\no=pivotd {} {} IN {t} {}\r\ns=pivotd\r\nc=IN {t} {}\r\nt=0 0\r\n",
        local.session_id, local.version, local.ip, local.ip
    );
}

fn write_audio(out: &mut String, local: &LocalSession, neg: &Negotiated) {
    let _ = write!(
        out,
        "m=audio {} {} {}",
        local.port,
        local.proto(),
        neg.codec_pt
    );
    if let Some(d) = neg.dtmf_pt {
        let _ = write!(out, " {d}");
    }
    let _ = write!(
        out,
        "\r\na=rtpmap:{} {}/8000\r\n",
        neg.codec_pt,
        neg.codec.encoding_name()
    );
    if let Some(d) = neg.dtmf_pt {
        let _ = write!(
            out,
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
        );
    }
    let _ = write!(
        out,
        "a=ptime:{}\r\na={}\r\n",
        neg.ptime_ms,
        neg.direction.as_str()
    );
    local.write_crypto(out);
}

/// Our answer for one audio stream: exactly one codec (with the offerer's PT, RFC 3264 §6.1)
/// plus telephone-event if offered, `a=ptime`, and our direction.
///
/// For an offer with more than one m= line use [`answer_to_offer`], which keeps the offer's
/// m= line count and order as RFC 3264 §6 requires.
pub fn answer(local: &LocalSession, neg: &Negotiated) -> String {
    let mut out = String::with_capacity(256);
    write_session(&mut out, local);
    write_audio(&mut out, local, neg);
    out
}

/// Like [`answer`], but mirrors every m= line of `offer` (RFC 3264 §6): the negotiated audio
/// stream is answered, every other stream is refused with port 0.
pub fn answer_to_offer(local: &LocalSession, offer: &Sdp, neg: &Negotiated) -> String {
    let chosen = offer.audio_index();
    let mut out = String::with_capacity(256);
    write_session(&mut out, local);
    for (i, m) in offer.media.iter().enumerate() {
        if Some(i) == chosen {
            write_audio(&mut out, local, neg);
        } else {
            let fmt = m.formats.first().map(String::as_str).unwrap_or("0");
            let _ = write!(out, "m={} 0 {} {fmt}\r\n", m.kind, m.proto);
        }
    }
    if chosen.is_none() {
        write_audio(&mut out, local, neg);
    }
    out
}

/// The telephone-event payload type pivotd offers (a late offer's answer, a bridge's
/// outbound INVITE): one choice for every offer it makes.
pub const OFFERED_EVENT_PT: u8 = 101;

/// Our offer when the INVITE came without one (late offer, RFC 3264 §5): PCMU, PCMA,
/// telephone-event/8000 0-16 on `dtmf_pt`, sendrecv, ptime 20. A `dtmf_pt` that is not a
/// free RTP payload type (0, 8, or above 127) leaves telephone-event out.
pub fn offer(local: &LocalSession, dtmf_pt: u8) -> String {
    offer_with_direction(local, dtmf_pt, Direction::SendRecv)
}

/// [`offer`] with another direction: a bridge puts its callee on hold with `sendonly` when
/// the caller holds (RFC 3264 §8.4), and takes it off with `sendrecv`.
pub fn offer_with_direction(local: &LocalSession, dtmf_pt: u8, direction: Direction) -> String {
    let mut out = String::with_capacity(256);
    write_session(&mut out, local);
    write_offer_audio(&mut out, local, dtmf_pt, direction);
    out
}

/// Like [`offer_with_direction`], for a new offer in a session whose last description was
/// `previous` (a re-INVITE without SDP, our hold re-INVITE): RFC 3264 §8 forbids fewer m=
/// lines than before, so every m= line of `previous` is kept in its place, the audio one
/// offered anew, the others at port 0.
pub fn offer_keeping_lines(
    local: &LocalSession,
    previous: &Sdp,
    dtmf_pt: u8,
    direction: Direction,
) -> String {
    let chosen = previous.audio_index();
    let mut out = String::with_capacity(256);
    write_session(&mut out, local);
    for (i, m) in previous.media.iter().enumerate() {
        if Some(i) == chosen {
            write_offer_audio(&mut out, local, dtmf_pt, direction);
        } else {
            let fmt = m.formats.first().map(String::as_str).unwrap_or("0");
            let _ = write!(out, "m={} 0 {} {fmt}\r\n", m.kind, m.proto);
        }
    }
    if chosen.is_none() {
        write_offer_audio(&mut out, local, dtmf_pt, direction);
    }
    out
}

fn write_offer_audio(out: &mut String, local: &LocalSession, dtmf_pt: u8, direction: Direction) {
    let dtmf = (dtmf_pt != 0 && dtmf_pt != 8 && dtmf_pt <= 127).then_some(dtmf_pt);
    let _ = write!(out, "m=audio {} {} 0 8", local.port, local.proto());
    if let Some(d) = dtmf {
        let _ = write!(out, " {d}");
    }
    out.push_str("\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n");
    if let Some(d) = dtmf {
        let _ = write!(
            out,
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
        );
    }
    let _ = write!(out, "a=ptime:{PTIME_MS}\r\na={}\r\n", direction.as_str());
    local.write_crypto(out);
}

#[cfg(test)]
mod tests;
