//! TwiML answers (spec d, j.11, j.17): the document parsed with quick-xml into a list of verbs.
//! Only the shape is checked here; the runtime carries the verbs out. A verb pivotd does not
//! know ([`Verb::Unknown`]), cannot use ([`Verb::Invalid`]) or cannot do ([`Verb::Unsupported`])
//! is kept, so the runtime can skip it with a log and go on with the next one (spec j.11).

use std::time::Duration;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::guard::is_allowed_scheme;
use crate::flow::bridge::{
    BridgeEndpoint, BridgeRequest, CallerIdOverride, Target, DEFAULT_RING_TIMEOUT,
};
use crate::flow::modules::pivot::Method;

/// Largest document accepted (the HTTP client enforces it on the body too).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Deepest element nesting accepted. TwiML needs 3 (`Response > Gather > Say`); SSML inside
/// `<Say>` a few more.
pub const MAX_DEPTH: usize = 16;
/// `<Say>` text is cut to this many characters (`pivot.tts_texts_size`, spec a.1).
pub const MAX_SAY_CHARS: usize = 4000;
/// Cap on `<Gather timeout>`, `<Pause length>` and `<Dial timeout>` seconds (spec d, h).
pub const MAX_SECONDS: u32 = 3600;
/// `<Dial timeLimit>` when none is given (spec d, h), and its cap (Twilio's four hours).
pub const DEFAULT_TIME_LIMIT_S: u32 = 14400;
/// Endpoints one `<Dial>` may ring at once (Twilio's ten `<Number>`s): a document cannot make
/// one call fork into thousands of INVITEs.
pub const MAX_DIAL_NOUNS: usize = 10;
/// Digits a dialled number may have (E.164 has 15; room for prefixes and extensions).
pub const MAX_NUMBER_DIGITS: usize = 32;
/// Longest `<Sip>` URI accepted.
pub const MAX_SIP_URI_CHARS: usize = 512;
/// Longest `<User>`/`<Device>` id accepted (the schemas' ids are 1 to 128 characters).
pub const MAX_ID_CHARS: usize = 128;
/// Longest `callerId` used.
pub const MAX_CALLER_ID_CHARS: usize = 64;
/// Characters of a refused value a reason quotes.
const MAX_QUOTED_CHARS: usize = 40;

/// Language of `<Say>` when none is given (Kazoo's `speech.tts_language`).
pub const DEFAULT_LANGUAGE: &str = "en-US";

/// Why `<Reject>` refuses the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// `rejected` (the default): SIP 503 in Kazoo.
    Rejected,
    /// `busy`: SIP 486.
    Busy,
}

/// One TwiML verb. URLs are kept as written; resolve them with [`resolve_url`] against the URL
/// of the document (spec j.11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    /// Text to speak; whitespace runs collapsed, cut at [`MAX_SAY_CHARS`]. `voice` as written
    /// (empty: none), for [`voice::hook_voice`]; `language` has Kazoo's `en` → `en-US`,
    /// `en-gb` → `en-GB`, else a Polly or Google voice's. `loop_count` 0 = forever.
    Say {
        text: String,
        voice: String,
        language: String,
        loop_count: u32,
    },
    /// Media URL (possibly relative). `loop_count` 0 = forever.
    Play {
        url: String,
        loop_count: u32,
    },
    /// Collect digits while `nested` plays. `action` `None` = the current document's URL.
    /// `num_digits` `None` = unlimited. `finish_on_key` `None` = no key (`finishOnKey=""`).
    /// `nested` holds Say / Play / Pause, and Unknown / Invalid for anything else.
    Gather {
        action: Option<String>,
        method: Method,
        num_digits: Option<u32>,
        timeout_s: u32,
        finish_on_key: Option<char>,
        nested: Vec<Verb>,
    },
    /// Fetch and run another document.
    Redirect {
        url: String,
        method: Method,
    },
    Pause {
        length_s: u32,
    },
    Hangup,
    Reject {
        reason: RejectReason,
    },
    /// Ring the targets and bridge the caller to the first to answer.
    Dial(Dial),
    /// An element pivotd does not implement (its name); skipped at run time.
    Unknown(String),
    /// A known verb asking for something pivotd does not do (`<Dial record>`, `<Dial>` with a
    /// `<Conference>`); skipped at run time, so the call goes on without it.
    Unsupported {
        verb: String,
        reason: String,
    },
    /// A known verb with attributes or content pivotd cannot use; skipped at run time.
    Invalid {
        verb: String,
        reason: String,
    },
}

/// `<Dial>` (spec d, "`<Dial>` contents"): its nouns as bridge targets, rung at once. A bare
/// number and `<Number>` go to the system's carriers (`Target::Number { local: false }`:
/// `[[resources]]`, else the account's), as Kazoo sends them offnet; `<Sip>` goes to the URI
/// (when the account allows it), `<User>` and `<Device>` (Kazoo's) to the account's users and
/// devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    /// In document order; never empty, at most [`MAX_DIAL_NOUNS`].
    pub targets: Vec<Target>,
    /// Where the outcome is sent; `None`: the next verb runs (Twilio).
    pub action: Option<String>,
    pub method: Method,
    /// How long the targets ring: default 20 s (Kazoo's bridge; also for 0), at most
    /// [`MAX_SECONDS`].
    pub timeout: Duration,
    /// How long the conversation may last: default and at most [`DEFAULT_TIME_LIMIT_S`].
    pub time_limit: Duration,
    /// `callerId`: the number the callee sees instead of the caller's own.
    pub caller_id: Option<String>,
    /// `hangupOnStar`: `*` from the caller ends the bridge and the document goes on.
    pub hangup_on_star: bool,
    /// What the document asks for that pivotd dials without (logged when the verb runs).
    pub ignored: Vec<Ignored>,
}

impl Dial {
    /// The bridge this `<Dial>` asks the call for.
    pub fn bridge_request(&self) -> BridgeRequest {
        BridgeRequest {
            timeout: self.timeout,
            caller_id: self.caller_id.as_ref().map(|number| CallerIdOverride {
                name: None,
                number: Some(number.clone()),
            }),
            time_limit: Some(self.time_limit),
            hangup_on_star: self.hangup_on_star,
            ..BridgeRequest::to(
                self.targets
                    .iter()
                    .cloned()
                    .map(BridgeEndpoint::now)
                    .collect(),
            )
        }
    }
}

/// Something a `<Dial>` asks for that pivotd leaves out, dialling anyway (Kazoo reads and
/// drops most of these too).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    /// An attribute pivotd does not act on (`strategy="single"`, `<Number sendDigits>`, …).
    #[error("<{element} {name}> is not supported: ignored")]
    Attribute { element: String, name: String },
    /// A `callerId` that cannot be a caller ID: the caller's own is sent (Twilio's warning
    /// 13214, then the call goes on).
    #[error("callerId {0:?} is not a caller ID number: the caller's own is sent")]
    CallerId(String),
}

/// A document that is not TwiML pivotd can run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TwimlError {
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("document is not UTF-8")]
    NotUtf8,
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error("root element is <{0}>, expected <Response>")]
    BadRoot(String),
    #[error("no root element")]
    NoRoot,
    #[error("elements nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// Why a known verb cannot be used: the reason [`Verb::Invalid`] carries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum VerbError {
    #[error("no media URL")]
    NoMediaUrl,
    #[error("no URL")]
    NoUrl,
    #[error("finishOnKey {0:?} is not one key of 0-9 * #")]
    FinishOnKey(String),
    #[error("numDigits must be at least 1")]
    NoDigits,
    #[error("reason {0:?} is neither rejected nor busy")]
    RejectReason(String),
    #[error("method {0:?} is neither GET nor POST")]
    Method(String),
    #[error("{name} {value:?} is not a whole number")]
    NotANumber { name: &'static str, value: String },
    #[error("{name} {value:?} is neither true nor false")]
    NotABool { name: &'static str, value: String },
    #[error("nothing to dial")]
    NothingToDial,
    #[error("more than {MAX_DIAL_NOUNS} nouns")]
    TooManyNouns,
    #[error("text beside the nouns")]
    TextBesideNouns,
    #[error("{0:?} is not a number to dial")]
    BadNumber(String),
    #[error("{0:?} is not a sip: or sips: URI")]
    BadSipUri(String),
    #[error("<{noun}> {value:?} is not an id")]
    BadId { noun: &'static str, value: String },
    // Unsupported: the verb is fine, pivotd cannot do what it asks.
    #[error("record={0:?}: pivotd does not record calls")]
    Record(String),
    #[error("<{0}> is not supported")]
    Noun(String),
}

impl VerbError {
    /// Whether the verb asks for something pivotd does not do (rather than being malformed).
    fn is_unsupported(&self) -> bool {
        matches!(self, VerbError::Record(_) | VerbError::Noun(_))
    }
}

/// An attribute quick-xml cannot read (duplicate, unquoted, a bad entity in its value).
#[derive(Debug, thiserror::Error)]
enum AttributeError {
    #[error(transparent)]
    Attr(#[from] quick_xml::events::attributes::AttrError),
    #[error(transparent)]
    Value(#[from] quick_xml::Error),
}

/// A parsed element: only what verbs need.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    /// Text and CDATA of this element and its descendants, in document order.
    text: String,
    /// Text and CDATA directly inside this element (not inside its children).
    own_text: String,
    children: Vec<Element>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a TwiML document: well-formed XML with root `<Response>` (spec b.1), entities and
/// CDATA decoded. A UTF-8 byte order mark is allowed.
pub fn parse(doc: &[u8]) -> Result<Vec<Verb>, TwimlError> {
    let root = parse_tree(doc)?;
    if root.name != "Response" {
        return Err(TwimlError::BadRoot(root.name));
    }
    Ok(root.children.iter().map(verb).collect())
}

fn parse_tree(doc: &[u8]) -> Result<Element, TwimlError> {
    if doc.len() > MAX_DOCUMENT_BYTES {
        return Err(TwimlError::TooLarge);
    }
    let doc = doc.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(doc);
    let text = std::str::from_utf8(doc).map_err(|_| TwimlError::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    let malformed = |reader: &Reader<&[u8]>, message: String| TwimlError::Malformed {
        position: reader.error_position(),
        message,
    };

    // Open elements; the root, once closed, lands in `root`.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(&reader, e.to_string()))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(malformed(&reader, "content after the root element".into()));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(TwimlError::TooDeep);
                }
                stack.push(element(&start).map_err(|e| malformed(&reader, e.to_string()))?);
            }
            Event::Empty(start) => {
                let el = element(&start).map_err(|e| malformed(&reader, e.to_string()))?;
                close(&mut stack, &mut root, el);
            }
            Event::End(_) => {
                // quick-xml checks that the end name matches the open element.
                let Some(el) = stack.pop() else {
                    return Err(malformed(&reader, "unexpected end tag".into()));
                };
                close(&mut stack, &mut root, el);
            }
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|e| malformed(&reader, e.to_string()))?;
                match stack.last_mut() {
                    Some(el) => {
                        el.text.push_str(&s);
                        el.own_text.push_str(&s);
                    }
                    None if s.trim().is_empty() => {}
                    None => return Err(malformed(&reader, "text outside the root element".into())),
                }
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|e| malformed(&reader, e.to_string()))?;
                match stack.last_mut() {
                    Some(el) => {
                        el.text.push_str(&s);
                        el.own_text.push_str(&s);
                    }
                    None => {
                        return Err(malformed(&reader, "CDATA outside the root element".into()))
                    }
                }
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(TwimlError::Malformed {
            position: reader.buffer_position(),
            message: format!("<{}> is not closed", open.name),
        });
    }
    root.ok_or(TwimlError::NoRoot)
}

/// Attaches a finished element to its parent (its text joins the parent's, so a `<Say>` with
/// SSML children reads as one text) or makes it the root.
fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => {
            parent.text.push_str(&el.text);
            parent.children.push(el);
        }
        None => *root = Some(el),
    }
}

fn element(start: &BytesStart<'_>) -> Result<Element, AttributeError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in start.attributes() {
        // Duplicate and unquoted attributes are errors here (quick-xml's checks are on).
        let a = a?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a.unescape_value()?.into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        ..Element::default()
    })
}

fn verb(el: &Element) -> Verb {
    let built = match el.name.as_str() {
        "Say" => say(el),
        "Play" => play(el),
        "Gather" => gather(el),
        "Redirect" => redirect(el),
        "Pause" => pause(el),
        "Hangup" => Ok(Verb::Hangup),
        "Reject" => reject(el),
        "Dial" => dial(el),
        other => return Verb::Unknown(other.to_string()),
    };
    built.unwrap_or_else(|e| {
        let (verb, reason) = (el.name.clone(), e.to_string());
        if e.is_unsupported() {
            Verb::Unsupported { verb, reason }
        } else {
            Verb::Invalid { verb, reason }
        }
    })
}

fn say(el: &Element) -> Result<Verb, VerbError> {
    let collapsed = el.text.split_whitespace().collect::<Vec<_>>().join(" ");
    let text: String = collapsed.chars().take(MAX_SAY_CHARS).collect();
    // Mapped when spoken (`voice::hook_voice`): the operator's `[tts] voices` come first.
    let voice = el.attr("voice").map(str::trim).unwrap_or_default();
    // The author's `language` wins over the one a Polly or Google voice implies.
    let language = match el.attr("language").map(str::trim) {
        None | Some("") => {
            voice::implied_language(voice).unwrap_or_else(|| DEFAULT_LANGUAGE.to_string())
        }
        Some(l) if l.eq_ignore_ascii_case("en") || l.eq_ignore_ascii_case("en-us") => {
            "en-US".to_string()
        }
        Some(l) if l.eq_ignore_ascii_case("en-gb") => "en-GB".to_string(),
        Some(other) => other.to_string(),
    };
    Ok(Verb::Say {
        text,
        voice: voice.to_string(),
        language,
        loop_count: loop_count(el)?,
    })
}

fn play(el: &Element) -> Result<Verb, VerbError> {
    let url = el.text.trim();
    if url.is_empty() {
        return Err(VerbError::NoMediaUrl);
    }
    Ok(Verb::Play {
        url: url.to_string(),
        loop_count: loop_count(el)?,
    })
}

fn gather(el: &Element) -> Result<Verb, VerbError> {
    let finish_on_key = match el.attr("finishOnKey") {
        None => Some('#'),
        Some("") => None,
        Some(k) => Some(
            crate::flow::node::dtmf_key(k).ok_or_else(|| VerbError::FinishOnKey(k.to_string()))?,
        ),
    };
    let num_digits = match el.attr("numDigits") {
        None => None,
        Some(v) => match number(v, "numDigits")? {
            0 => return Err(VerbError::NoDigits),
            n => Some(n),
        },
    };
    let nested = el
        .children
        .iter()
        .map(|c| match c.name.as_str() {
            "Say" | "Play" | "Pause" => verb(c),
            other => Verb::Unknown(other.to_string()),
        })
        .collect();
    Ok(Verb::Gather {
        action: url_attr(el, "action"),
        method: method(el)?,
        num_digits,
        timeout_s: seconds(el, "timeout", 5)?,
        finish_on_key,
        nested,
    })
}

fn redirect(el: &Element) -> Result<Verb, VerbError> {
    let url = el.text.trim();
    if url.is_empty() {
        return Err(VerbError::NoUrl);
    }
    Ok(Verb::Redirect {
        url: url.to_string(),
        method: method(el)?,
    })
}

fn pause(el: &Element) -> Result<Verb, VerbError> {
    Ok(Verb::Pause {
        length_s: seconds(el, "length", 1)?,
    })
}

fn reject(el: &Element) -> Result<Verb, VerbError> {
    let reason = match el.attr("reason").map(str::trim) {
        None | Some("") | Some("rejected") => RejectReason::Rejected,
        Some("busy") => RejectReason::Busy,
        Some(other) => return Err(VerbError::RejectReason(other.to_string())),
    };
    Ok(Verb::Reject { reason })
}

/// The `<Dial>` attributes pivotd reads; any other is reported as [`Ignored`].
const DIAL_ATTRIBUTES: [&str; 7] = [
    "action",
    "method",
    "timeout",
    "timeLimit",
    "callerId",
    "hangupOnStar",
    "record",
];

fn dial(el: &Element) -> Result<Verb, VerbError> {
    // Refused before anything else: a caller must not be bridged unrecorded when the
    // document asked for a recording (Kazoo's `record` is a boolean, Twilio's a mode).
    if let Some(mode) = el.attr("record").map(str::trim) {
        let off = ["", "false", "do-not-record"]
            .iter()
            .any(|o| mode.eq_ignore_ascii_case(o));
        if !off {
            return Err(VerbError::Record(excerpt(mode)));
        }
    }
    let mut ignored = Vec::new();
    for (name, value) in &el.attrs {
        // `strategy="simultaneous"` is what pivotd does anyway.
        let read = DIAL_ATTRIBUTES.contains(&name.as_str())
            || (name == "strategy" && value.trim() == "simultaneous");
        if !read {
            ignored.push(Ignored::Attribute {
                element: el.name.clone(),
                name: name.clone(),
            });
        }
    }
    let targets = if el.children.is_empty() {
        vec![number_target(&el.text)?]
    } else {
        if !el.own_text.trim().is_empty() {
            return Err(VerbError::TextBesideNouns);
        }
        if el.children.len() > MAX_DIAL_NOUNS {
            return Err(VerbError::TooManyNouns);
        }
        el.children
            .iter()
            .map(|noun| noun_target(noun, &mut ignored))
            .collect::<Result<Vec<_>, _>>()?
    };
    let timeout = match seconds(el, "timeout", 0)? {
        0 => DEFAULT_RING_TIMEOUT,
        s => Duration::from_secs(u64::from(s)),
    };
    let time_limit_s = match el.attr("timeLimit") {
        None => DEFAULT_TIME_LIMIT_S,
        Some(v) => match number(v, "timeLimit")? {
            0 => DEFAULT_TIME_LIMIT_S,
            s => s.min(DEFAULT_TIME_LIMIT_S),
        },
    };
    let caller_id = match el.attr("callerId").map(str::trim) {
        None | Some("") => None,
        Some(id) if is_caller_id(id) => Some(id.to_string()),
        Some(bad) => {
            ignored.push(Ignored::CallerId(excerpt(bad)));
            None
        }
    };
    Ok(Verb::Dial(Dial {
        targets,
        action: url_attr(el, "action"),
        method: method(el)?,
        timeout,
        time_limit: Duration::from_secs(u64::from(time_limit_s)),
        caller_id,
        hangup_on_star: boolean(el, "hangupOnStar")?.unwrap_or(false),
        ignored,
    }))
}

/// One noun of a `<Dial>`; its attributes are reported as ignored (Kazoo reads `<Number>`'s
/// `sendDigits`, `url` and `method` and uses none of them).
fn noun_target(noun: &Element, ignored: &mut Vec<Ignored>) -> Result<Target, VerbError> {
    let target = match noun.name.as_str() {
        "Number" => number_target(&noun.text)?,
        "Sip" => Target::Sip {
            uri: sip_uri(&noun.text)?,
        },
        "User" => Target::User {
            id: kazoo_id("User", &noun.text)?,
        },
        "Device" => Target::Device {
            id: kazoo_id("Device", &noun.text)?,
        },
        // Conference, Queue, Client and anything else.
        other => return Err(VerbError::Noun(excerpt(other))),
    };
    ignored.extend(noun.attrs.iter().map(|(name, _)| Ignored::Attribute {
        element: noun.name.clone(),
        name: name.clone(),
    }));
    Ok(target)
}

/// A number to dial from text as written (`+1 (415) 555-0100`): its digits, with a `+` kept
/// only in front (Kazoo's `cleanup_dial_me` keeps every `+`). Carriers get it as is.
fn number_target(text: &str) -> Result<Target, VerbError> {
    if text.trim().is_empty() {
        return Err(VerbError::NothingToDial);
    }
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && number.is_empty()) {
            number.push(c);
        }
    }
    let digits = number.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 || digits > MAX_NUMBER_DIGITS {
        return Err(VerbError::BadNumber(excerpt(text.trim())));
    }
    Ok(Target::Number {
        number,
        local: false,
    })
}

/// A `<Sip>` URI: `sip:` or `sips:` (any case), something after it, printable ASCII with no
/// spaces, quotes or angle brackets (it goes into a Request-URI as is). Whether it may be
/// dialled is the call layer's decision.
fn sip_uri(text: &str) -> Result<String, VerbError> {
    let uri = text.trim();
    let bad = || VerbError::BadSipUri(excerpt(uri));
    let (scheme, rest) = uri.split_once(':').ok_or_else(bad)?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let sip_scheme = scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips");
    let printable = uri
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"'));
    if !sip_scheme || host.is_empty() || !printable || uri.chars().count() > MAX_SIP_URI_CHARS {
        return Err(bad());
    }
    Ok(uri.to_string())
}

/// A `<User>` or `<Device>` id: 1 to [`MAX_ID_CHARS`] characters, none of them a space or a
/// control character. Resolved in the caller's account by the call layer.
fn kazoo_id(noun: &'static str, text: &str) -> Result<String, VerbError> {
    let id = text.trim();
    let n = id.chars().count();
    if n == 0 || n > MAX_ID_CHARS || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(VerbError::BadId {
            noun,
            value: excerpt(id),
        });
    }
    Ok(id.to_string())
}

/// Whether `callerId` can go into a From header's user part as is: a number (`+`, digits) or
/// a plain name (`anonymous`), no longer than [`MAX_CALLER_ID_CHARS`].
fn is_caller_id(id: &str) -> bool {
    id.chars().count() <= MAX_CALLER_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '*'))
}

/// A document's value as a reason quotes it: at most [`MAX_QUOTED_CHARS`] characters, so what
/// is wrong with it still shows in a log line (which caps the whole reason).
fn excerpt(value: &str) -> String {
    let mut chars = value.chars();
    let mut shown: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

/// A `true`/`false` attribute (any case); `None` when absent or empty.
fn boolean(el: &Element, name: &'static str) -> Result<Option<bool>, VerbError> {
    match el.attr(name).map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(v) => Err(VerbError::NotABool {
            name,
            value: excerpt(v),
        }),
    }
}

fn url_attr(el: &Element, name: &str) -> Option<String> {
    el.attr(name)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `method`: GET or POST in any case; default POST (Twilio and Kazoo).
fn method(el: &Element) -> Result<Method, VerbError> {
    match el.attr("method").map(str::trim) {
        None | Some("") => Ok(Method::Post),
        Some(m) => Method::parse(m).ok_or_else(|| VerbError::Method(m.to_string())),
    }
}

fn loop_count(el: &Element) -> Result<u32, VerbError> {
    match el.attr("loop") {
        None => Ok(1),
        Some(v) => number(v, "loop"),
    }
}

/// A seconds attribute, capped at [`MAX_SECONDS`].
fn seconds(el: &Element, name: &'static str, default: u32) -> Result<u32, VerbError> {
    match el.attr(name) {
        None => Ok(default),
        Some(v) => Ok(number(v, name)?.min(MAX_SECONDS)),
    }
}

fn number(v: &str, name: &'static str) -> Result<u32, VerbError> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerbError::NotANumber {
            name,
            value: v.to_string(),
        });
    }
    // All digits: only overflow can fail; treat a huge value as the largest.
    Ok(v.parse::<u32>().unwrap_or(u32::MAX))
}

/// A TwiML URL that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("invalid URL {reference:?}: {message}")]
    Invalid { reference: String, message: String },
    #[error("URL scheme {0:?} is not http or https")]
    Scheme(String),
}

/// Resolves a TwiML URL (`action`, `<Redirect>`, `<Play>`) against the URL of the document
/// that contained it (spec j.11; RFC 3986 §5.2 reference resolution, as Twilio does — unlike
/// Kazoo's path join, a leading `/` is the server root). An empty reference is the document
/// itself. Only http and https results are accepted; the fragment is dropped.
pub fn resolve_url(base: &url::Url, reference: &str) -> Result<url::Url, ResolveError> {
    let mut url = base
        .join(reference.trim())
        .map_err(|e| ResolveError::Invalid {
            reference: reference.to_string(),
            message: e.to_string(),
        })?;
    if !is_allowed_scheme(url.scheme()) {
        return Err(ResolveError::Scheme(url.scheme().to_string()));
    }
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests;
pub mod voice;
