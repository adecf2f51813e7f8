//! The NOTIFY bodies: RFC 4235 `application/dialog-info+xml` for `Event: dialog` and RFC 3863
//! PIDF `application/pidf+xml` for `Event: presence`, both as Kazoo's Kamailio writes them
//! (spec g; Kamailio's `kazoo` module, `defs.h` and `kz_pua.c`), with the entity the
//! presentity's URI as Kamailio's `presence_xml` / `presence_dialoginfo` aggregation sends it.
//!
//! Written with quick-xml's writer, which escapes every attribute value and text: dialog ids
//! and URIs come off the wire. Characters XML 1.0 cannot carry at all (controls) are dropped.
//!
//! The status of a lamp maps to a dialog state as Kazoo's does (`cf_manual_presence.erl`):
//! idle → `terminated`, ringing → `early`, busy → `confirmed`. An idle id with no dialog
//! behind it is a `full` document with no dialog (RFC 4235 §4.1: no dialogs, nothing in
//! progress). An id several calls light gets one `<dialog>`, the one it shows (`state.rs`):
//! RFC 4235 allows several, but Kamailio's `presence_dialoginfo` with `force_single_dialog`
//! sends one, for the phones that read only the first.

use std::borrow::Cow;
use std::io;

use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::state::{Lamp, PresenceId, Status};

pub const DIALOG_INFO_TYPE: &str = "application/dialog-info+xml";
pub const PIDF_TYPE: &str = "application/pidf+xml";

const DIALOG_INFO_NS: &str = "urn:ietf:params:xml:ns:dialog-info";
const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
const DATA_MODEL_NS: &str = "urn:ietf:params:xml:ns:pidf:data-model";
const RPID_NS: &str = "urn:ietf:params:xml:ns:pidf:rpid";
const CIPID_NS: &str = "urn:ietf:params:xml:ns:pidf:cipid";

/// The RFC 4235 dialog state of a status (Kazoo's mapping).
pub fn dialog_state(status: Status) -> &'static str {
    match status {
        Status::Idle => "terminated",
        Status::Ringing => "early",
        Status::Busy => "confirmed",
    }
}

/// The PIDF note and RPID activity of a status, as Kamailio's `kazoo` module writes them:
/// early → `Busy` / `<rpid:busy/>`, confirmed → `On the Phone` / `<rpid:on-the-phone/>`,
/// otherwise `Available` and no activity.
pub fn pidf_note(status: Status) -> (&'static str, Option<&'static str>) {
    match status {
        Status::Ringing => ("Busy", Some("rpid:busy")),
        Status::Busy => ("On the Phone", Some("rpid:on-the-phone")),
        Status::Idle => ("Available", None),
    }
}

/// An `application/dialog-info+xml` document with the whole state of `entity` (`state="full"`);
/// `version` is the subscription's count of documents sent (RFC 4235 §4.1: 0, 1, 2 …).
pub fn dialog_info(entity: &PresenceId, version: u32, lamp: &Lamp) -> Vec<u8> {
    document(|w| {
        let uri = entity.uri();
        let root = BytesStart::new("dialog-info").with_attributes([
            ("xmlns", DIALOG_INFO_NS),
            ("version", version.to_string().as_str()),
            ("state", "full"),
            ("entity", uri.as_str()),
        ]);
        let Some(d) = &lamp.dialog else {
            return w.write_event(Event::Empty(root));
        };
        w.write_event(Event::Start(root.borrow()))?;
        let mut dialog = BytesStart::new("dialog");
        dialog.push_attribute(("id", xml_safe(&d.id).as_ref()));
        dialog.push_attribute(("call-id", xml_safe(&d.call_id).as_ref()));
        if let Some(t) = &d.local_tag {
            dialog.push_attribute(("local-tag", xml_safe(t).as_ref()));
        }
        if let Some(t) = &d.remote_tag {
            dialog.push_attribute(("remote-tag", xml_safe(t).as_ref()));
        }
        if let Some(dir) = d.direction {
            dialog.push_attribute(("direction", dir.as_str()));
        }
        w.write_event(Event::Start(dialog.borrow()))?;
        w.create_element("state")
            .write_text_content(BytesText::new(dialog_state(lamp.status)))?;
        party(w, "local", Some(entity.user()), &uri)?;
        match &d.remote {
            Some(other) => party(w, "remote", None, &xml_safe(other))?,
            None => party(w, "remote", Some(entity.user()), &uri)?,
        };
        w.write_event(Event::End(dialog.to_end()))?;
        w.write_event(Event::End(root.to_end()))
    })
}

/// `<local>` or `<remote>`: the identity (with a display name when given) and the target.
fn party(w: &mut Writer<Vec<u8>>, name: &str, display: Option<&str>, uri: &str) -> io::Result<()> {
    w.create_element(name).write_inner_content(|w| {
        let identity = w.create_element("identity");
        let identity = match display {
            Some(d) => identity.with_attribute(("display", d)),
            None => identity,
        };
        identity.write_text_content(BytesText::new(uri))?;
        w.create_element("target")
            .with_attribute(("uri", uri))
            .write_empty()?;
        Ok(())
    })?;
    Ok(())
}

/// An `application/pidf+xml` document as Kamailio's `kazoo` module writes it
/// (`PRESENCE_BODY`): the basic status always `open`, one tuple whose id is the dialog's
/// Call-ID (Kazoo's MD5 of the id when no call is behind it), the note at the top and in the
/// RPID person, the activity there.
pub fn pidf(entity: &PresenceId, lamp: &Lamp) -> Vec<u8> {
    document(|w| {
        let uri = entity.uri();
        let tuple_id = match &lamp.dialog {
            Some(d) => xml_safe(&d.call_id).into_owned(),
            None => entity.manual_dialog_id(),
        };
        let (note, activity) = pidf_note(lamp.status);
        let root = BytesStart::new("presence").with_attributes([
            ("xmlns", PIDF_NS),
            ("xmlns:dm", DATA_MODEL_NS),
            ("xmlns:rpid", RPID_NS),
            ("xmlns:c", CIPID_NS),
            ("entity", uri.as_str()),
        ]);
        w.write_event(Event::Start(root.borrow()))?;
        w.create_element("tuple")
            .with_attributes([("xmlns", PIDF_NS), ("id", tuple_id.as_str())])
            .write_inner_content(|w| {
                w.create_element("status").write_inner_content(|w| {
                    w.create_element("basic")
                        .write_text_content(BytesText::new("open"))?;
                    Ok(())
                })?;
                Ok(())
            })?;
        w.create_element("note")
            .with_attribute(("xmlns", PIDF_NS))
            .write_text_content(BytesText::new(note))?;
        w.create_element("dm:person")
            .with_attributes([
                ("xmlns:dm", DATA_MODEL_NS),
                ("xmlns:rpid", RPID_NS),
                ("id", "1"),
            ])
            .write_inner_content(|w| {
                w.create_element("rpid:activities")
                    .write_inner_content(|w| {
                        if let Some(a) = activity {
                            w.create_element(a).write_empty()?;
                        }
                        Ok(())
                    })?;
                w.create_element("dm:note")
                    .write_text_content(BytesText::new(note))?;
                Ok(())
            })?;
        w.write_event(Event::End(root.to_end()))
    })
}

/// The XML declaration, then what `body` writes, indented for the people reading NOTIFYs.
fn document(body: impl FnOnce(&mut Writer<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
    let mut w = Writer::new_with_indent(Vec::with_capacity(768), b' ', 2);
    let written = w
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .and_then(|()| body(&mut w));
    // Writing into a Vec cannot fail; were it to, an empty body is still a valid NOTIFY.
    match written {
        Ok(()) => w.into_inner(),
        Err(_) => Vec::new(),
    }
}

/// The text without the characters XML 1.0 cannot carry (controls other than tab, CR, LF);
/// the writer escapes the rest.
fn xml_safe(s: &str) -> Cow<'_, str> {
    let ok = |c: char| !c.is_control() || matches!(c, '\t' | '\n' | '\r');
    if s.chars().all(ok) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().filter(|&c| ok(c)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::state::{DialogInfo, Direction, Origin};
    use quick_xml::Reader;

    /// One element of a parsed document: its path from the root, attributes and text.
    #[derive(Debug)]
    struct El {
        path: String,
        attrs: Vec<(String, String)>,
        text: String,
    }

    fn element(path: &[String], e: &BytesStart<'_>) -> El {
        let attrs = e
            .attributes()
            .map(|a| {
                let a = a.expect("attribute");
                (
                    String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                    a.unescape_value().expect("escaped value").into_owned(),
                )
            })
            .collect();
        El {
            path: path.join("/"),
            attrs,
            text: String::new(),
        }
    }

    /// Parses a document with quick-xml's reader into its elements, in document order.
    fn parse(xml: &[u8]) -> Vec<El> {
        let text = std::str::from_utf8(xml).expect("UTF-8");
        assert!(
            text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"),
            "{text}"
        );
        let mut r = Reader::from_str(text);
        let mut path: Vec<String> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        let mut out: Vec<El> = Vec::new();
        loop {
            match r.read_event().expect("well-formed XML") {
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
                        out[i].text.push_str(t.unescape().expect("text").trim());
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert!(path.is_empty(), "unbalanced: {path:?}");
        out
    }

    fn find<'a>(els: &'a [El], path: &str) -> &'a El {
        els.iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("no {path} in {els:?}"))
    }

    fn attr<'a>(e: &'a El, name: &str) -> Option<&'a str> {
        e.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn id() -> PresenceId {
        PresenceId::parse("2001", "pbx.test").unwrap()
    }

    #[test]
    fn dialog_info_maps_each_status_to_kazoos_dialog_state() {
        let id = id();
        for (status, state) in [(Status::Ringing, "early"), (Status::Busy, "confirmed")] {
            let doc = parse(&dialog_info(&id, 7, &Lamp::manual(&id, status)));
            let root = find(&doc, "dialog-info");
            assert_eq!(attr(root, "xmlns"), Some(DIALOG_INFO_NS));
            assert_eq!(attr(root, "version"), Some("7"));
            assert_eq!(attr(root, "state"), Some("full"));
            assert_eq!(attr(root, "entity"), Some("sip:2001@pbx.test"));
            let d = find(&doc, "dialog-info/dialog");
            assert_eq!(attr(d, "id"), Some("65a7ad380a91bba05368b47624ab1b43"));
            assert_eq!(attr(d, "call-id"), attr(d, "id"));
            // A lamp set by hand has no direction and no tags (Kazoo sends none).
            assert_eq!(attr(d, "direction"), None);
            assert_eq!(attr(d, "local-tag"), None);
            assert_eq!(find(&doc, "dialog-info/dialog/state").text, state);
            let local = find(&doc, "dialog-info/dialog/local/identity");
            assert_eq!(local.text, "sip:2001@pbx.test");
            assert_eq!(attr(local, "display"), Some("2001"));
            assert_eq!(
                attr(find(&doc, "dialog-info/dialog/remote/target"), "uri"),
                Some("sip:2001@pbx.test")
            );
        }
        // Idle with nothing behind it: a full document with no dialog.
        let doc = parse(&dialog_info(&id, 0, &Lamp::idle()));
        assert_eq!(doc.len(), 1, "{doc:?}");
        assert_eq!(attr(&doc[0], "version"), Some("0"));
        assert_eq!(attr(&doc[0], "state"), Some("full"));
        // An idle lamp that still names its dialog shows it terminated.
        let mut ended = Lamp::manual(&id, Status::Busy);
        ended.status = Status::Idle;
        let doc = parse(&dialog_info(&id, 1, &ended));
        assert_eq!(find(&doc, "dialog-info/dialog/state").text, "terminated");
    }

    #[test]
    fn a_calls_dialog_shows_its_tags_direction_and_other_party() {
        let id = id();
        let lamp = Lamp {
            status: Status::Busy,
            dialog: Some(DialogInfo {
                id: "d1".into(),
                call_id: "abc@host".into(),
                local_tag: Some("lt".into()),
                remote_tag: Some("rt".into()),
                direction: Some(Direction::Recipient),
                remote: Some("sip:5551234@carrier.test".into()),
            }),
            origin: Origin::Call,
        };
        let doc = parse(&dialog_info(&id, 3, &lamp));
        let d = find(&doc, "dialog-info/dialog");
        assert_eq!(attr(d, "call-id"), Some("abc@host"));
        assert_eq!(attr(d, "local-tag"), Some("lt"));
        assert_eq!(attr(d, "remote-tag"), Some("rt"));
        assert_eq!(attr(d, "direction"), Some("recipient"));
        let remote = find(&doc, "dialog-info/dialog/remote/identity");
        assert_eq!(remote.text, "sip:5551234@carrier.test");
        assert_eq!(attr(remote, "display"), None);
        let doc = parse(&pidf(&id, &lamp));
        assert_eq!(attr(find(&doc, "presence/tuple"), "id"), Some("abc@host"));
    }

    #[test]
    fn wire_values_are_escaped_and_controls_dropped() {
        let id = PresenceId::parse("a&b'c", "pbx.test").unwrap();
        let lamp = Lamp {
            status: Status::Ringing,
            dialog: Some(DialogInfo {
                id: "x\"><evil/>".into(),
                call_id: "c<\u{1}>&".into(),
                local_tag: Some("'".into()),
                remote_tag: None,
                direction: None,
                remote: Some("sip:x@y</identity>".into()),
            }),
            origin: Origin::Call,
        };
        let doc = parse(&dialog_info(&id, 1, &lamp));
        let d = find(&doc, "dialog-info/dialog");
        assert_eq!(attr(d, "id"), Some("x\"><evil/>"));
        assert_eq!(attr(d, "call-id"), Some("c<>&"));
        assert_eq!(attr(d, "local-tag"), Some("'"));
        assert!(!doc.iter().any(|e| e.path.ends_with("evil")));
        assert_eq!(
            attr(find(&doc, "dialog-info"), "entity"),
            Some("sip:a&b'c@pbx.test")
        );
        assert_eq!(
            find(&doc, "dialog-info/dialog/remote/identity").text,
            "sip:x@y</identity>"
        );
        let doc = parse(&pidf(&id, &lamp));
        assert_eq!(attr(find(&doc, "presence/tuple"), "id"), Some("c<>&"));
    }

    #[test]
    fn pidf_is_kamailios_basic_open_note_and_activity() {
        let id = id();
        for (status, note, activity) in [
            (Status::Idle, "Available", None),
            (Status::Ringing, "Busy", Some("rpid:busy")),
            (Status::Busy, "On the Phone", Some("rpid:on-the-phone")),
        ] {
            let doc = parse(&pidf(&id, &Lamp::manual(&id, status)));
            let root = find(&doc, "presence");
            assert_eq!(attr(root, "xmlns"), Some(PIDF_NS));
            assert_eq!(attr(root, "xmlns:dm"), Some(DATA_MODEL_NS));
            assert_eq!(attr(root, "xmlns:rpid"), Some(RPID_NS));
            assert_eq!(attr(root, "xmlns:c"), Some(CIPID_NS));
            assert_eq!(attr(root, "entity"), Some("sip:2001@pbx.test"));
            let tuple = find(&doc, "presence/tuple");
            assert_eq!(attr(tuple, "id"), Some("65a7ad380a91bba05368b47624ab1b43"));
            assert_eq!(find(&doc, "presence/tuple/status/basic").text, "open");
            assert_eq!(find(&doc, "presence/note").text, note);
            assert_eq!(attr(find(&doc, "presence/dm:person"), "id"), Some("1"));
            assert_eq!(find(&doc, "presence/dm:person/dm:note").text, note);
            let acts: Vec<&str> = doc
                .iter()
                .filter_map(|e| e.path.strip_prefix("presence/dm:person/rpid:activities/"))
                .collect();
            assert_eq!(acts, activity.into_iter().collect::<Vec<_>>(), "{status:?}");
            find(&doc, "presence/dm:person/rpid:activities");
        }
    }
}
