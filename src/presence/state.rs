//! Presence ids and the lamp each one shows: what is known of an id (idle, ringing, busy, and
//! the dialog when known), kept until changed. An id is lit by a lamp set as a whole (a flow's
//! `manual_presence`) and by the dialogs of the calls on it, each call under its own
//! [`CallKey`]; it shows the highest (busy > ringing > idle). No I/O here: the [`Lamps`]
//! table records which ids changed, and the notifier (`notifier.rs`) tells their watchers.
//!
//! A presence id is `name@realm` (Kazoo's `presence_id`, spec c.7): a bare `name` takes the
//! account's realm (spec j.16). Ids arrive from the network (a SUBSCRIBE's Request-URI, a
//! pivot answer), so they are read as bytes and held to a small grammar before anything
//! keeps them: `%XX` escapes decoded, then only the characters a SIP URI user part may carry
//! unescaped (RFC 3261 §25.1 unreserved and user-unreserved), at most [`MAX_USER_BYTES`]; the
//! realm a host name or an IP address, in lower case. Such an id goes into a URI and an XML
//! document without further escaping of the URI.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use md5::{Digest, Md5};

pub use crate::flow::modules::manual_presence::Status;

/// Longest user part kept, in bytes (after `%XX` decoding).
pub const MAX_USER_BYTES: usize = 128;

/// Most lamps that are not idle at once (idle lamps are not kept): a pivot server lighting
/// ids without end cannot grow memory without end.
pub const MAX_LIT_LAMPS: usize = 100_000;

/// Why a text is not a presence id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("the user part is empty")]
    EmptyUser,
    #[error("the user part is longer than {MAX_USER_BYTES} bytes")]
    UserTooLong,
    #[error("the user part holds a character a presence id cannot carry")]
    BadUser,
    #[error("the realm is not a host name or an IP address")]
    BadRealm,
}

/// A presence id, normalised: the user part decoded and checked, the realm in lower case.
/// Ordered and hashed by both parts; the user part is case-sensitive (RFC 3261 §19.1.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PresenceId {
    user: String,
    realm: String,
}

impl PresenceId {
    /// `name` or `name@realm` (the last `@` splits them); `default_realm` fills a bare name.
    pub fn parse(text: &str, default_realm: &str) -> Result<PresenceId, IdError> {
        match text.rsplit_once('@') {
            Some((user, realm)) => PresenceId::from_parts(user, realm),
            None => PresenceId::from_parts(text, default_realm),
        }
    }

    /// From a user part as written in a URI (`%XX` escapes allowed) and a realm.
    pub fn from_parts(user: &str, realm: &str) -> Result<PresenceId, IdError> {
        Ok(PresenceId {
            user: normalise_user(user)?,
            realm: normalise_realm(realm)?,
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// `sip:user@realm`: the entity of the documents, the identity of a manual dialog.
    pub fn uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.realm)
    }

    /// Kazoo's dialog id for a lamp set by hand: the lower-case hex MD5 of `user@realm`
    /// (`cf_manual_presence.erl`), so that updates of one id replace each other.
    pub fn manual_dialog_id(&self) -> String {
        Md5::digest(self.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Display for PresenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.realm)
    }
}

/// RFC 3261 §25.1 `unreserved` and `user-unreserved`: what a URI user part carries unescaped.
fn user_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b)
}

fn normalise_user(user: &str) -> Result<String, IdError> {
    if user.is_empty() {
        return Err(IdError::EmptyUser);
    }
    // Bounded before decoding too: decoding only shrinks, but the work should not grow with
    // what a peer sends.
    if user.len() > MAX_USER_BYTES * 3 {
        return Err(IdError::UserTooLong);
    }
    let decoded = crate::sip::message::percent_decode(user);
    if decoded.is_empty() {
        return Err(IdError::EmptyUser);
    }
    if decoded.len() > MAX_USER_BYTES {
        return Err(IdError::UserTooLong);
    }
    // A `%` left (a broken escape) or any byte outside the set, UTF-8 included, is refused.
    if !decoded.bytes().all(user_byte) {
        return Err(IdError::BadUser);
    }
    Ok(decoded)
}

fn normalise_realm(realm: &str) -> Result<String, IdError> {
    let realm = realm.to_ascii_lowercase();
    let ip = realm
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(&realm);
    if crate::config::is_host_name(&realm) || ip.parse::<IpAddr>().is_ok() {
        Ok(realm)
    } else {
        Err(IdError::BadRealm)
    }
}

/// Which way a call goes, seen from the presence id (RFC 4235 `direction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The id placed the call.
    Initiator,
    /// The id is called.
    Recipient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Initiator => "initiator",
            Direction::Recipient => "recipient",
        }
    }
}

/// The dialog a lamp shows (RFC 4235 §4.1), as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialogInfo {
    /// The `id` attribute, unique among the id's dialogs.
    pub id: String,
    /// The dialog's Call-ID.
    pub call_id: String,
    pub local_tag: Option<String>,
    pub remote_tag: Option<String>,
    /// None for a lamp set by hand (Kazoo sends no direction then).
    pub direction: Option<Direction>,
    /// The other party's URI; `None`: the presence id's own (as Kazoo's manual lamps).
    pub remote: Option<String>,
}

/// Who set a lamp: a flow (`manual_presence`, kept in the store) or a call's own progress
/// (not kept: calls do not outlive a restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Manual,
    Call,
}

/// What an id shows now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lamp {
    pub status: Status,
    /// The dialog behind a ringing or busy lamp.
    pub dialog: Option<DialogInfo>,
    pub origin: Origin,
}

impl Lamp {
    /// No call: what an id shows until something lights it.
    pub fn idle() -> Lamp {
        Lamp {
            status: Status::Idle,
            dialog: None,
            origin: Origin::Manual,
        }
    }

    /// A lamp set by hand, with Kazoo's dialog: its id and Call-ID the MD5 of the presence
    /// id, no tags, no direction.
    pub fn manual(id: &PresenceId, status: Status) -> Lamp {
        if status == Status::Idle {
            return Lamp::idle();
        }
        let md5 = id.manual_dialog_id();
        Lamp {
            status,
            dialog: Some(DialogInfo {
                id: md5.clone(),
                call_id: md5,
                local_tag: None,
                remote_tag: None,
                direction: None,
                remote: None,
            }),
            origin: Origin::Manual,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.status == Status::Idle
    }
}

/// Why a lamp was not set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LampError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("the presence id's realm {realm:?} is not the account's")]
    OtherRealm { realm: String },
    #[error("no account {0:?}")]
    NoAccount(String),
    #[error("{MAX_LIT_LAMPS} lamps are lit already")]
    Full,
}

/// One call's dialog on a presence id, handed out by [`Lamps::call_key`]: a call lights an
/// id under its key, changes it and puts it out, without touching another call's dialog on
/// the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(u64);

/// The rank of a status among an id's dialogs: what the lamp shows is the highest.
fn rank(status: Status) -> u8 {
    match status {
        Status::Idle => 0,
        Status::Ringing => 1,
        Status::Busy => 2,
    }
}

/// One lit part of an id, and when it last changed (newer wins a tie).
#[derive(Debug)]
struct Part {
    lamp: Lamp,
    seq: u64,
}

/// What lights one id: the lamp set as a whole (a flow's `manual_presence`, one per id, each
/// replacing the last) and the dialogs of the calls in progress on it, each under its own
/// key — two calls on one phone, two phones sharing a `presence_id`, the forks of a call to a
/// user. The id shows the highest of them (busy > ringing), the newest among equals, and is
/// idle only when every part is out.
#[derive(Debug, Default)]
struct Entry {
    set: Option<Part>,
    calls: HashMap<CallKey, Part>,
}

impl Entry {
    fn shown(&self) -> Lamp {
        self.set
            .iter()
            .chain(self.calls.values())
            .max_by_key(|p| (rank(p.lamp.status), p.seq))
            .map_or_else(Lamp::idle, |p| p.lamp.clone())
    }

    fn is_empty(&self) -> bool {
        self.set.is_none() && self.calls.is_empty()
    }
}

/// Every lit id, and the ids whose lamp changed since the notifier last looked. An id not in
/// the table is idle: ids go when their last part is out, so the table holds only what is
/// lit.
#[derive(Debug, Default)]
pub struct Lamps {
    lit: HashMap<PresenceId, Entry>,
    changed: HashSet<PresenceId>,
    /// Counts every change, for the newest-wins tie; also the source of call keys.
    seq: u64,
}

impl Lamps {
    /// What `id` shows now.
    pub fn get(&self, id: &PresenceId) -> Lamp {
        self.lit.get(id).map_or_else(Lamp::idle, Entry::shown)
    }

    /// Sets the lamp of `id` set as a whole (a flow's, kept in the store when manual): it
    /// replaces the last one set, and leaves the calls' dialogs on the id alone. Returns the
    /// lamp it replaces when it is another (idle when none was set), `None` when the same.
    /// The watchers are owed a NOTIFY when what the id shows changed.
    pub fn set(&mut self, id: &PresenceId, lamp: Lamp) -> Result<Option<Lamp>, LampError> {
        let old = self
            .lit
            .get(id)
            .and_then(|e| e.set.as_ref())
            .map_or_else(Lamp::idle, |p| p.lamp.clone());
        if old == lamp {
            return Ok(None);
        }
        let part = (!lamp.is_idle()).then(|| Part {
            lamp,
            seq: self.tick(),
        });
        self.change(id, |e| e.set = part)?;
        Ok(Some(old))
    }

    /// A key for a new call's dialog.
    pub fn call_key(&mut self) -> CallKey {
        CallKey(self.tick())
    }

    /// Lights (or changes) `key`'s dialog on `id`; an idle lamp puts it out.
    pub fn set_call(&mut self, id: &PresenceId, key: CallKey, lamp: Lamp) -> Result<(), LampError> {
        if lamp.is_idle() {
            self.put_out_call(id, key);
            return Ok(());
        }
        let seq = self.tick();
        self.change(id, |e| {
            e.calls.insert(key, Part { lamp, seq });
        })
    }

    /// Puts out `key`'s dialog on `id` (nothing when it is not lit).
    pub fn put_out_call(&mut self, id: &PresenceId, key: CallKey) {
        if self.lit.get(id).is_some_and(|e| e.calls.contains_key(&key)) {
            // Removing never needs room.
            let _ = self.change(id, |e| {
                e.calls.remove(&key);
            });
        }
    }

    /// Applies `f` to `id`'s entry; notes the id as changed when what it shows changed, and
    /// drops the entry once nothing lights it. A new id needs room under [`MAX_LIT_LAMPS`].
    fn change(&mut self, id: &PresenceId, f: impl FnOnce(&mut Entry)) -> Result<(), LampError> {
        let before = self.get(id);
        let now = match self.lit.get_mut(id) {
            Some(entry) => {
                f(entry);
                let now = entry.shown();
                if entry.is_empty() {
                    self.lit.remove(id);
                }
                now
            }
            None => {
                let mut entry = Entry::default();
                f(&mut entry);
                if entry.is_empty() {
                    return Ok(());
                }
                if self.lit.len() >= MAX_LIT_LAMPS {
                    return Err(LampError::Full);
                }
                let now = entry.shown();
                self.lit.insert(id.clone(), entry);
                now
            }
        };
        if now != before {
            self.changed.insert(id.clone());
        }
        Ok(())
    }

    fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The ids changed since the last call.
    pub fn take_changed(&mut self) -> Vec<PresenceId> {
        self.changed.drain().collect()
    }

    /// Every lit lamp, in id order.
    pub fn lit(&self) -> Vec<(PresenceId, Lamp)> {
        let mut v: Vec<_> = self
            .lit
            .iter()
            .map(|(k, e)| (k.clone(), e.shown()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Result<PresenceId, IdError> {
        PresenceId::parse(s, "PBX.test")
    }

    #[test]
    fn a_bare_name_takes_the_default_realm_in_lower_case() {
        let p = id("2001").unwrap();
        assert_eq!((p.user(), p.realm()), ("2001", "pbx.test"));
        assert_eq!(p.to_string(), "2001@pbx.test");
        assert_eq!(p.uri(), "sip:2001@pbx.test");
        let p = id("alice@Other.Example").unwrap();
        assert_eq!(p.to_string(), "alice@other.example");
        // The user part keeps its case (RFC 3261 §19.1.4); the realm does not.
        assert_ne!(id("Alice").unwrap(), id("alice").unwrap());
        assert_eq!(id("a@PBX.TEST").unwrap(), id("a").unwrap());
        // The last @ splits: an @ cannot be in a user part unescaped, so this is refused.
        assert_eq!(id("a@b@pbx.test"), Err(IdError::BadUser));
    }

    #[test]
    fn escapes_are_decoded_and_the_grammar_held() {
        assert_eq!(id("%2A3101").unwrap().user(), "*3101");
        assert_eq!(id("*3101").unwrap(), id("%2a3101").unwrap());
        assert_eq!(id("+15551234;x=1").unwrap().user(), "+15551234;x=1");
        for bad in [
            "a b", "a<b", "a\"b", "é", "a%2", "a%zz", "a%40b", "%00", "a\r\nb", "#1",
        ] {
            assert_eq!(id(bad), Err(IdError::BadUser), "{bad:?}");
        }
        assert_eq!(id(""), Err(IdError::EmptyUser));
        assert_eq!(id("@pbx.test"), Err(IdError::EmptyUser));
        assert_eq!(id(&"a".repeat(MAX_USER_BYTES)).unwrap().user().len(), 128);
        assert_eq!(
            id(&"a".repeat(MAX_USER_BYTES + 1)),
            Err(IdError::UserTooLong)
        );
        assert_eq!(id(&"%41".repeat(2000)), Err(IdError::UserTooLong));
    }

    #[test]
    fn realms_are_host_names_or_addresses() {
        assert_eq!(id("a@192.0.2.7").unwrap().realm(), "192.0.2.7");
        assert_eq!(id("a@[2001:DB8::1]").unwrap().realm(), "[2001:db8::1]");
        for bad in [
            "a@",
            "a@-x.test",
            "a@x_y.test",
            "a@x.test:5060",
            "a@x..test",
            "a@é.test",
        ] {
            assert_eq!(id(bad), Err(IdError::BadRealm), "{bad:?}");
        }
        assert_eq!(
            PresenceId::parse("a", "not a realm"),
            Err(IdError::BadRealm)
        );
    }

    #[test]
    fn a_manual_lamp_carries_kazoos_md5_dialog_id() {
        let p = id("2001").unwrap();
        let lamp = Lamp::manual(&p, Status::Busy);
        let d = lamp.dialog.unwrap();
        // md5("2001@pbx.test"), lower-case hex, as Kazoo's kz_term:to_hex_binary.
        assert_eq!(d.id, "65a7ad380a91bba05368b47624ab1b43");
        assert_eq!(d.call_id, d.id);
        assert_eq!(d.direction, None);
        assert_eq!(Lamp::manual(&p, Status::Idle), Lamp::idle());
    }

    #[test]
    fn the_table_keeps_lit_lamps_until_changed_and_says_what_changed() {
        let mut t = Lamps::default();
        let a = id("a").unwrap();
        let b = id("b").unwrap();
        assert!(t.get(&a).is_idle());
        assert_eq!(t.set(&a, Lamp::idle()), Ok(None));
        assert!(t.take_changed().is_empty());
        assert_eq!(
            t.set(&a, Lamp::manual(&a, Status::Ringing)),
            Ok(Some(Lamp::idle()))
        );
        assert_eq!(t.set(&a, Lamp::manual(&a, Status::Ringing)), Ok(None));
        assert_eq!(
            t.set(&b, Lamp::manual(&b, Status::Busy)).unwrap(),
            Some(Lamp::idle())
        );
        let mut changed = t.take_changed();
        changed.sort();
        assert_eq!(changed, [a.clone(), b.clone()]);
        assert_eq!(t.get(&a).status, Status::Ringing);
        assert_eq!(t.lit().len(), 2);
        // Back to idle: dropped from the table, and a change.
        assert!(t.set(&a, Lamp::idle()).unwrap().is_some());
        assert_eq!(t.take_changed(), std::slice::from_ref(&a));
        assert_eq!(t.lit().len(), 1);
    }

    fn call(status: Status, call_id: &str) -> Lamp {
        Lamp {
            status,
            dialog: Some(DialogInfo {
                id: call_id.into(),
                call_id: call_id.into(),
                local_tag: None,
                remote_tag: None,
                direction: Some(Direction::Recipient),
                remote: None,
            }),
            origin: Origin::Call,
        }
    }

    #[test]
    fn several_calls_on_one_id_show_the_highest_and_go_idle_with_the_last() {
        let mut t = Lamps::default();
        let a = id("2001").unwrap();
        let (k1, k2) = (t.call_key(), t.call_key());
        assert_ne!(k1, k2);
        t.set_call(&a, k1, call(Status::Ringing, "c1")).unwrap();
        assert_eq!(t.take_changed(), std::slice::from_ref(&a));
        t.set_call(&a, k2, call(Status::Busy, "c2")).unwrap();
        assert_eq!(t.get(&a), call(Status::Busy, "c2"));
        assert_eq!(t.take_changed().len(), 1);
        // A second call ringing under a busy one changes nothing seen.
        t.set_call(&a, k1, call(Status::Ringing, "c1")).unwrap();
        assert!(t.take_changed().is_empty());
        // The busy call ends: the ringing one shows.
        t.put_out_call(&a, k2);
        assert_eq!(t.get(&a), call(Status::Ringing, "c1"));
        assert_eq!(t.take_changed().len(), 1);
        // Putting out what is not lit is nothing.
        t.put_out_call(&a, k2);
        assert!(t.take_changed().is_empty());
        // Among equals, the newest shows.
        t.set_call(&a, k2, call(Status::Ringing, "c2")).unwrap();
        assert_eq!(t.get(&a), call(Status::Ringing, "c2"));
        t.set_call(&a, k1, call(Status::Idle, "c1")).unwrap();
        t.put_out_call(&a, k2);
        assert!(t.get(&a).is_idle());
        assert!(t.lit().is_empty(), "an id goes with its last part");
        assert_eq!(t.take_changed(), std::slice::from_ref(&a));
    }

    #[test]
    fn a_lamp_set_by_hand_and_calls_share_an_id() {
        let mut t = Lamps::default();
        let a = id("2001").unwrap();
        let k = t.call_key();
        t.set_call(&a, k, call(Status::Busy, "c1")).unwrap();
        // A flow's ringing under a call: the call still shows, the flow's is kept.
        assert_eq!(
            t.set(&a, Lamp::manual(&a, Status::Ringing)),
            Ok(Some(Lamp::idle()))
        );
        assert_eq!(t.get(&a).origin, Origin::Call);
        t.put_out_call(&a, k);
        assert_eq!(t.get(&a), Lamp::manual(&a, Status::Ringing));
        // The flow's idle puts out its own lamp only.
        t.set_call(&a, k, call(Status::Ringing, "c1")).unwrap();
        let _ = t.set(&a, Lamp::manual(&a, Status::Busy)).unwrap();
        assert_eq!(t.get(&a).origin, Origin::Manual);
        assert_eq!(
            t.set(&a, Lamp::idle()),
            Ok(Some(Lamp::manual(&a, Status::Busy)))
        );
        assert_eq!(t.get(&a), call(Status::Ringing, "c1"));
    }
}
