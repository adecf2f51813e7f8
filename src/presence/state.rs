//! Presence ids and the lamp each one shows: what is known of an id (idle, ringing, busy, and
//! the dialog when known), kept until changed. No I/O here: the [`Lamps`] table records which
//! ids changed, and the notifier (`notifier.rs`) tells their watchers.
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

/// Every lit lamp, and the ids whose lamp changed since the notifier last looked. An id not
/// in the table is idle: idle lamps are dropped, so the table holds only what is lit.
#[derive(Debug, Default)]
pub struct Lamps {
    lit: HashMap<PresenceId, Lamp>,
    changed: HashSet<PresenceId>,
}

impl Lamps {
    /// What `id` shows now.
    pub fn get(&self, id: &PresenceId) -> Lamp {
        self.lit.get(id).cloned().unwrap_or_else(Lamp::idle)
    }

    /// Sets `id`'s lamp; returns the lamp it replaces when it changed (its watchers are then
    /// owed a NOTIFY), `None` when it is the same.
    pub fn set(&mut self, id: &PresenceId, lamp: Lamp) -> Result<Option<Lamp>, LampError> {
        let old = self.get(id);
        if old == lamp {
            return Ok(None);
        }
        if lamp.is_idle() {
            self.lit.remove(id);
        } else {
            if old.is_idle() && self.lit.len() >= MAX_LIT_LAMPS {
                return Err(LampError::Full);
            }
            self.lit.insert(id.clone(), lamp);
        }
        self.changed.insert(id.clone());
        Ok(Some(old))
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
            .map(|(k, l)| (k.clone(), l.clone()))
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
}
