//! Presence ids and the lamp each one shows: what is known of an id (idle, ringing, busy, and
//! the dialog when known), kept until changed. An id is lit by a lamp set as a whole (a flow's
//! `manual_presence`) and by the dialogs of the calls on it, each call under its own
//! [`CallKey`]; it shows the highest (busy > ringing > idle). No I/O here: the [`Lamps`]
//! table records which ids changed, and the notifier (`notifier.rs`) tells their watchers.
//!
//! Several nodes on one PostgreSQL database (issue 13): a lamp set as a whole is shared (the
//! store keeps it, and a change is told to every node, which sets it too); the calls are
//! each node's own, so a node tells the others what its calls light on an id ([`News`]) and
//! keeps, per id, what each other node's calls light, as one more call that expires unless
//! told again ([`Lamps::hear`], [`Lamps::expire`]). The table notes what this node owes the
//! others ([`Lamps::take_outbox`]); the messages' wire format ([`encode`], [`parse`]) is
//! here too, for another node's message is input like a SUBSCRIBE.
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
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

pub use crate::flow::modules::manual_presence::Status;

/// Longest user part kept, in bytes (after `%XX` decoding).
pub const MAX_USER_BYTES: usize = 128;

/// Most lamps that are not idle at once (idle lamps are not kept): a pivot server lighting
/// ids without end cannot grow memory without end.
pub const MAX_LIT_LAMPS: usize = 100_000;

/// Most lamps other nodes' calls light here at once (one per node and id): a node (or
/// something else on the database) announcing without end cannot grow memory without end.
pub const MAX_REMOTE_LAMPS: usize = 100_000;

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
    #[error("{MAX_REMOTE_LAMPS} lamps of other nodes are lit already")]
    RemoteFull,
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
///
/// Beside them, what the calls of each other node sharing the store light on the id (one
/// part per node, as that node announced it, `nodes`): it counts as one more call, and goes
/// when that node says so or stops saying it is lit (`until`).
#[derive(Debug, Default)]
struct Entry {
    set: Option<Part>,
    calls: HashMap<CallKey, Part>,
    nodes: HashMap<String, Remote>,
}

/// Another node's calls on an id, and until when that is believed without being told again.
#[derive(Debug)]
struct Remote {
    part: Part,
    until: Instant,
}

/// The highest part: busy > ringing, the newest among equals.
fn highest<'a>(parts: impl Iterator<Item = &'a Part>) -> Option<&'a Part> {
    parts.max_by_key(|p| (rank(p.lamp.status), p.seq))
}

impl Entry {
    fn shown(&self) -> Lamp {
        let remote = self.nodes.values().map(|r| &r.part);
        highest(self.set.iter().chain(self.calls.values()).chain(remote))
            .map_or_else(Lamp::idle, |p| p.lamp.clone())
    }

    /// What this node's own calls light (what it tells the other nodes), idle when none.
    fn own_calls(&self) -> Lamp {
        highest(self.calls.values()).map_or_else(Lamp::idle, |p| p.lamp.clone())
    }

    fn is_empty(&self) -> bool {
        self.set.is_none() && self.calls.is_empty() && self.nodes.is_empty()
    }
}

/// What this node owes the others since it last told them: ids reset by the API, ids whose
/// lamp set as a whole changed, ids whose own calls show something else.
#[derive(Debug, Default)]
struct Outbox {
    resets: HashSet<PresenceId>,
    manual: HashSet<PresenceId>,
    calls: HashSet<PresenceId>,
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
    /// Other nodes share the lamps (PostgreSQL): local changes are noted in `outbox`.
    sharing: bool,
    outbox: Outbox,
    /// Parts of other nodes held, every id together (bounded by [`MAX_REMOTE_LAMPS`]).
    remote: usize,
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
        let old = self.set_part(id, lamp, false)?;
        if old.is_some() && self.sharing {
            self.outbox.manual.insert(id.clone());
        }
        Ok(old)
    }

    /// Kazoo's reset (the API's): the lamp set as a whole goes out (returned as [`set`]
    /// does) and what other nodes said of the id is forgotten — they are told, and those
    /// whose calls still light it say so again. This node's calls keep their lamps.
    ///
    /// [`set`]: Lamps::set
    pub fn reset(&mut self, id: &PresenceId) -> Result<Option<Lamp>, LampError> {
        let old = self.set_part(id, Lamp::idle(), true)?;
        if self.sharing {
            self.outbox.manual.remove(id);
            self.outbox.resets.insert(id.clone());
        }
        Ok(old)
    }

    /// Replaces the lamp set as a whole, and with `forget_nodes` the other nodes' parts;
    /// the old lamp when it changed.
    fn set_part(
        &mut self,
        id: &PresenceId,
        lamp: Lamp,
        forget_nodes: bool,
    ) -> Result<Option<Lamp>, LampError> {
        let entry = self.lit.get(id);
        let old = entry
            .and_then(|e| e.set.as_ref())
            .map_or_else(Lamp::idle, |p| p.lamp.clone());
        let forget = forget_nodes && entry.is_some_and(|e| !e.nodes.is_empty());
        if old == lamp && !forget {
            return Ok(None);
        }
        let part = (old != lamp && !lamp.is_idle()).then(|| Part {
            lamp: lamp.clone(),
            seq: self.tick(),
        });
        let mut forgotten = 0;
        self.change(id, |e| {
            if old != lamp {
                e.set = part;
            }
            if forget {
                forgotten = e.nodes.len();
                e.nodes.clear();
            }
        })?;
        self.remote = self.remote.saturating_sub(forgotten);
        Ok((old != lamp).then_some(old))
    }

    /// The lamps set as a whole become `stored` (the store's rows: at start, and after
    /// messages from other nodes may have been missed); one not among them goes out. Not
    /// owed to the other nodes: the store is theirs too.
    pub fn set_all(&mut self, stored: Vec<(PresenceId, Status)>) {
        let stored: HashMap<PresenceId, Status> = stored.into_iter().collect();
        let gone: Vec<PresenceId> = self
            .lit
            .iter()
            .filter(|(id, e)| e.set.is_some() && !stored.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            let _ = self.set_part(&id, Lamp::idle(), false);
        }
        for (id, status) in stored {
            let lamp = Lamp::manual(&id, status);
            if self.set_part(&id, lamp, false).is_err() {
                tracing::warn!(id = %crate::logsafe::wire(&id.to_string()), "presence: a stored lamp not lit, no room");
            }
        }
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
        let before = self.own_calls(id);
        let seq = self.tick();
        self.change(id, |e| {
            e.calls.insert(key, Part { lamp, seq });
        })?;
        self.note_own_calls(id, before);
        Ok(())
    }

    /// Puts out `key`'s dialog on `id` (nothing when it is not lit).
    pub fn put_out_call(&mut self, id: &PresenceId, key: CallKey) {
        if self.lit.get(id).is_some_and(|e| e.calls.contains_key(&key)) {
            let before = self.own_calls(id);
            // Removing never needs room.
            let _ = self.change(id, |e| {
                e.calls.remove(&key);
            });
            self.note_own_calls(id, before);
        }
    }

    fn own_calls(&self, id: &PresenceId) -> Lamp {
        self.lit.get(id).map_or_else(Lamp::idle, Entry::own_calls)
    }

    /// The other nodes are owed what this node's calls light on `id` when it changed.
    fn note_own_calls(&mut self, id: &PresenceId, before: Lamp) {
        if self.sharing && self.own_calls(id) != before {
            self.outbox.calls.insert(id.clone());
        }
    }

    /// Other nodes share these lamps: from now on local changes are noted for them
    /// ([`Lamps::take_outbox`]). Never on SQLite, where nothing would take them.
    pub fn share(&mut self) {
        self.sharing = true;
    }

    /// What the other nodes are owed, resets first (a reset then a new lamp set in one
    /// message must leave the new lamp).
    pub fn take_outbox(&mut self) -> Vec<News> {
        let out = std::mem::take(&mut self.outbox);
        let mut news: Vec<News> = out.resets.into_iter().map(News::Reset).collect();
        for id in out.manual {
            let status = self
                .lit
                .get(&id)
                .and_then(|e| e.set.as_ref())
                .map_or(Status::Idle, |p| p.lamp.status);
            news.push(News::Manual(id, status));
        }
        for id in out.calls {
            let lamp = self.own_calls(&id);
            news.push(News::Calls(id, lamp));
        }
        news
    }

    /// Every id this node's calls light, owed to the other nodes again: the periodic
    /// announcement that keeps them lit there, and the answer to a node that asks.
    pub fn announce_own_calls(&mut self) {
        if !self.sharing {
            return;
        }
        let ids = self.lit.iter().filter(|(_, e)| !e.calls.is_empty());
        self.outbox.calls.extend(ids.map(|(id, _)| id.clone()));
    }

    /// What node `node` told: applied as it says (nothing announced back, but for a reset
    /// of an id this node's calls light, whose lamp it says again). Returns the ids reset,
    /// whose watchers are owed the state even when it did not change; errors (no room) are
    /// counted in [`Heard::refused`].
    pub fn hear(&mut self, node: &str, message: NodeMessage, now: Instant) -> Heard {
        let mut heard = Heard::default();
        if node.is_empty() || node.len() > MAX_NODE_BYTES {
            heard.refused += 1;
            return heard;
        }
        let (ttl, items) = match message {
            NodeMessage::Ask => {
                self.announce_own_calls();
                return heard;
            }
            NodeMessage::News { ttl, items } => (ttl, items),
        };
        for item in items {
            let done = match item {
                News::Calls(id, lamp) => self.node_calls(node, &id, lamp, now + ttl),
                News::Manual(id, status) => {
                    let lamp = Lamp::manual(&id, status);
                    self.set_part(&id, lamp, false).map(drop)
                }
                News::Reset(id) => {
                    let done = self.set_part(&id, Lamp::idle(), true).map(drop);
                    if self.lit.get(&id).is_some_and(|e| !e.calls.is_empty()) && self.sharing {
                        self.outbox.calls.insert(id.clone());
                    }
                    heard.reset.push(id);
                    done
                }
            };
            if done.is_err() {
                heard.refused += 1;
            }
        }
        heard
    }

    /// Node `node`'s calls light `id` with `lamp` (idle: no more) until `until`. The same
    /// lamp told again only moves `until`: among equals the one that changed last shows,
    /// not the one last repeated.
    fn node_calls(
        &mut self,
        node: &str,
        id: &PresenceId,
        lamp: Lamp,
        until: Instant,
    ) -> Result<(), LampError> {
        let held = self.lit.get(id).and_then(|e| e.nodes.get(node));
        let new = held.is_none();
        if lamp.is_idle() {
            if !new {
                self.remote = self.remote.saturating_sub(1);
                let _ = self.change(id, |e| {
                    e.nodes.remove(node);
                });
            }
            return Ok(());
        }
        if held.is_some_and(|r| r.part.lamp == lamp) {
            if let Some(r) = self.lit.get_mut(id).and_then(|e| e.nodes.get_mut(node)) {
                r.until = until;
            }
            return Ok(());
        }
        if new && self.remote >= MAX_REMOTE_LAMPS {
            return Err(LampError::RemoteFull);
        }
        let part = Part {
            lamp,
            seq: self.tick(),
        };
        self.change(id, |e| {
            e.nodes.insert(node.to_owned(), Remote { part, until });
        })?;
        if new {
            self.remote += 1;
        }
        Ok(())
    }

    /// Forgets what other nodes said of their calls and did not say again before `now`:
    /// a node that stopped (or lost the database) leaves no lamp lit for ever.
    pub fn expire(&mut self, now: Instant) {
        let stale: Vec<(PresenceId, String)> = self
            .lit
            .iter()
            .flat_map(|(id, e)| {
                e.nodes
                    .iter()
                    .filter(|(_, r)| r.until <= now)
                    .map(move |(n, _)| (id.clone(), n.clone()))
            })
            .collect();
        for (id, node) in stale {
            self.remote = self.remote.saturating_sub(1);
            let _ = self.change(&id, |e| {
                e.nodes.remove(&node);
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

/// Longest node name kept (the store's are 16 hex digits).
const MAX_NODE_BYTES: usize = 64;

/// Longest message [`encode`] writes, and [`parse`] reads (PostgreSQL's `NOTIFY` payload
/// must stay under 8000 bytes, with the store's prefix: see `store::MAX_ANNOUNCE_BYTES`).
pub const MAX_MESSAGE_BYTES: usize = 7000;

/// The longest a node's lamps are believed without being told again, whatever it asks.
pub const MAX_TTL: Duration = Duration::from_secs(3 * 3600);

/// What one node tells the others about an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum News {
    /// What the sender's own calls light on the id (idle: nothing any more).
    Calls(PresenceId, Lamp),
    /// The lamp set as a whole (a flow's, the API's `set`), stored by the sender already.
    Manual(PresenceId, Status),
    /// The API's reset: the lamp set as a whole goes out and what the nodes said of the
    /// id is forgotten (each node whose calls light it says so again).
    Reset(PresenceId),
}

/// A message between nodes (`Change::Presence`'s body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMessage {
    /// News; the sender's call lamps are believed for `ttl` unless told again.
    News { ttl: Duration, items: Vec<News> },
    /// A node started or missed messages: every node says again what its calls light.
    Ask,
}

/// What [`Lamps::hear`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// Ids reset: their watchers are owed the state.
    pub reset: Vec<PresenceId>,
    /// Items not applied (no room, a node name too long).
    pub refused: usize,
}

/// The JSON on the wire: `{"v":1,"ttl":90,"items":[{"id":"2001@pbx.test","k":"calls",
/// "status":"busy","dialog":{…}}, {"id":…,"k":"manual","status":"ringing"},
/// {"id":…,"k":"reset"}]}`, or `{"v":1,"ask":true}`.
/// (Read only: [`encode`] writes it by hand, to pack items up to the size limit.)
#[derive(Deserialize)]
struct Wire {
    v: u32,
    #[serde(default)]
    ttl: u64,
    #[serde(default)]
    ask: bool,
    /// Read one by one: a bad item is left out, not the message.
    #[serde(default)]
    items: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct WireItem {
    id: String,
    k: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dialog: Option<WireDialog>,
}

#[derive(Serialize, Deserialize)]
struct WireDialog {
    id: String,
    call_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote: Option<String>,
}

/// The version of the wire format; another is not read.
const WIRE_VERSION: u32 = 1;

/// Longest dialog id and Call-ID sent or kept (cut, on a character boundary).
const MAX_DIALOG_ID: usize = 256;
/// Longest tag sent or kept (a longer one is left out: it is optional).
const MAX_TAG: usize = 128;
/// Longest remote party sent or kept (left out when longer).
const MAX_REMOTE: usize = 512;

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A call's dialog held to the sizes above (it comes from the network): every item then
/// fits in a message with room for several.
fn fitted(d: &DialogInfo) -> DialogInfo {
    let short = |s: &Option<String>, max: usize| s.clone().filter(|s| s.len() <= max);
    DialogInfo {
        id: cut(&d.id, MAX_DIALOG_ID),
        call_id: cut(&d.call_id, MAX_DIALOG_ID),
        local_tag: short(&d.local_tag, MAX_TAG),
        remote_tag: short(&d.remote_tag, MAX_TAG),
        direction: d.direction,
        remote: short(&d.remote, MAX_REMOTE),
    }
}

fn wire_item(news: &News) -> WireItem {
    let item = |id: &PresenceId, k: &str| WireItem {
        id: id.to_string(),
        k: k.into(),
        status: None,
        dialog: None,
    };
    match news {
        News::Calls(id, lamp) => WireItem {
            status: Some(lamp.status.as_str().into()),
            dialog: lamp.dialog.as_ref().map(|d| {
                let d = fitted(d);
                WireDialog {
                    id: d.id,
                    call_id: d.call_id,
                    local_tag: d.local_tag,
                    remote_tag: d.remote_tag,
                    direction: d.direction.map(|d| d.as_str().into()),
                    remote: d.remote,
                }
            }),
            ..item(id, "calls")
        },
        News::Manual(id, status) => WireItem {
            status: Some(status.as_str().into()),
            ..item(id, "manual")
        },
        News::Reset(id) => item(id, "reset"),
    }
}

/// `news` as messages of at most [`MAX_MESSAGE_BYTES`], as few as fit, in order; `ttl` is
/// how long the receivers believe the call lamps (whole seconds, at least one).
pub fn encode(news: &[News], ttl: Duration) -> Vec<String> {
    let head = format!(
        r#"{{"v":{WIRE_VERSION},"ttl":{},"items":["#,
        ttl.as_secs().max(1)
    );
    let tail = "]}";
    let mut out = Vec::new();
    let mut body = head.clone();
    for n in news {
        let Ok(item) = serde_json::to_string(&wire_item(n)) else {
            continue;
        };
        // Cannot happen with the sizes held above (an id is at most ~400 bytes); kept
        // from the message rather than sent too long.
        if head.len() + item.len() + tail.len() > MAX_MESSAGE_BYTES {
            continue;
        }
        if body.len() + 1 + item.len() + tail.len() > MAX_MESSAGE_BYTES {
            body.push_str(tail);
            out.push(std::mem::replace(&mut body, head.clone()));
        }
        if body.len() > head.len() {
            body.push(',');
        }
        body.push_str(&item);
    }
    if body.len() > head.len() {
        body.push_str(tail);
        out.push(body);
    }
    out
}

/// The message asking every node for its call lamps.
pub fn encode_ask() -> String {
    format!(r#"{{"v":{WIRE_VERSION},"ask":true}}"#)
}

/// Reads another node's message. Anything unreadable as a whole (too long, not JSON, another
/// version) is `None`; an item that is not right (a bad id, status or direction, a lit call
/// without its dialog) is left out and the others kept.
pub fn parse(body: &str) -> Option<NodeMessage> {
    if body.len() > MAX_MESSAGE_BYTES {
        return None;
    }
    let wire: Wire = serde_json::from_str(body).ok()?;
    if wire.v != WIRE_VERSION {
        return None;
    }
    if wire.ask {
        return Some(NodeMessage::Ask);
    }
    let ttl = Duration::from_secs(wire.ttl.max(1)).min(MAX_TTL);
    let items = wire.items.iter().filter_map(read_item).collect();
    Some(NodeMessage::News { ttl, items })
}

fn read_item(v: &serde_json::Value) -> Option<News> {
    let w = WireItem::deserialize(v).ok()?;
    // The realm must be there: every id a node announces is whole.
    let id = PresenceId::parse(&w.id, "").ok()?;
    let status = || w.status.as_deref().and_then(Status::parse);
    match w.k.as_str() {
        "reset" => Some(News::Reset(id)),
        "manual" => Some(News::Manual(id, status()?)),
        "calls" => {
            let status = status()?;
            if status == Status::Idle {
                return Some(News::Calls(id, Lamp::idle()));
            }
            let d = w.dialog.as_ref()?;
            let direction = match d.direction.as_deref() {
                None => None,
                Some("initiator") => Some(Direction::Initiator),
                Some("recipient") => Some(Direction::Recipient),
                Some(_) => return None,
            };
            let dialog = fitted(&DialogInfo {
                id: d.id.clone(),
                call_id: d.call_id.clone(),
                local_tag: d.local_tag.clone(),
                remote_tag: d.remote_tag.clone(),
                direction,
                remote: d.remote.clone(),
            });
            let lamp = Lamp {
                status,
                dialog: Some(dialog),
                origin: Origin::Call,
            };
            Some(News::Calls(id, lamp))
        }
        _ => None,
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

    fn news(ttl_s: u64, items: Vec<News>) -> NodeMessage {
        NodeMessage::News {
            ttl: Duration::from_secs(ttl_s),
            items,
        }
    }

    #[test]
    fn another_nodes_calls_count_as_one_more_call_and_expire_unless_told_again() {
        let mut t = Lamps::default();
        t.share();
        let a = id("2001").unwrap();
        let t0 = Instant::now();
        let heard = t.hear(
            "n2",
            news(3, vec![News::Calls(a.clone(), call(Status::Ringing, "r1"))]),
            t0,
        );
        assert_eq!(heard, Heard::default());
        assert_eq!(t.get(&a), call(Status::Ringing, "r1"));
        assert_eq!(t.take_changed(), std::slice::from_ref(&a));
        // What others said is never announced back.
        assert!(t.take_outbox().is_empty());
        // A local busy call shows over the remote ringing; the remote busy, newer, over it.
        let k = t.call_key();
        t.set_call(&a, k, call(Status::Busy, "c1")).unwrap();
        assert_eq!(t.get(&a), call(Status::Busy, "c1"));
        let busy = call(Status::Busy, "r1");
        t.hear(
            "n2",
            news(3, vec![News::Calls(a.clone(), busy.clone())]),
            t0,
        );
        assert_eq!(t.get(&a), busy);
        // Told again (the periodic announcement): it keeps its place among equals, and
        // lives on.
        let _ = t.take_changed();
        t.set_call(&a, k, call(Status::Busy, "c1")).unwrap();
        assert_eq!(t.get(&a), call(Status::Busy, "c1"));
        let t2 = t0 + Duration::from_secs(2);
        t.hear(
            "n2",
            news(3, vec![News::Calls(a.clone(), busy.clone())]),
            t2,
        );
        assert_eq!(
            t.get(&a),
            call(Status::Busy, "c1"),
            "a repeat is not a change"
        );
        t.expire(t0 + Duration::from_secs(4));
        t.put_out_call(&a, k);
        assert_eq!(t.get(&a), busy, "still believed until t2 + 3 s");
        let _ = t.take_changed();
        // Not told again: gone, and the id idle.
        t.expire(t2 + Duration::from_secs(3));
        assert!(t.get(&a).is_idle());
        assert!(t.lit().is_empty());
        assert_eq!(t.take_changed(), std::slice::from_ref(&a));
        assert_eq!(t.remote, 0);
        // A node saying its calls are out: out at once.
        t.hear(
            "n3",
            news(3, vec![News::Calls(a.clone(), busy.clone())]),
            t0,
        );
        t.hear(
            "n3",
            news(3, vec![News::Calls(a.clone(), Lamp::idle())]),
            t0,
        );
        assert!(t.lit().is_empty());
        assert_eq!(t.remote, 0);
    }

    #[test]
    fn two_nodes_on_one_id_show_the_highest_and_the_id_goes_idle_with_the_last() {
        let mut t = Lamps::default();
        let a = id("2001").unwrap();
        let t0 = Instant::now();
        t.hear(
            "n2",
            news(30, vec![News::Calls(a.clone(), call(Status::Busy, "x"))]),
            t0,
        );
        t.hear(
            "n3",
            news(30, vec![News::Calls(a.clone(), call(Status::Ringing, "y"))]),
            t0,
        );
        assert_eq!(t.get(&a), call(Status::Busy, "x"));
        t.hear(
            "n2",
            news(30, vec![News::Calls(a.clone(), Lamp::idle())]),
            t0,
        );
        assert_eq!(t.get(&a), call(Status::Ringing, "y"));
        t.hear(
            "n3",
            news(30, vec![News::Calls(a.clone(), Lamp::idle())]),
            t0,
        );
        assert!(t.get(&a).is_idle());
        assert!(t.lit().is_empty());
    }

    #[test]
    fn local_changes_are_owed_to_the_other_nodes_only_when_sharing() {
        let a = id("2001").unwrap();
        let b = id("2002").unwrap();
        let mut alone = Lamps::default();
        let k = alone.call_key();
        alone.set_call(&a, k, call(Status::Busy, "c1")).unwrap();
        let _ = alone.set(&b, Lamp::manual(&b, Status::Busy));
        alone.announce_own_calls();
        assert!(alone.take_outbox().is_empty(), "nothing kept without nodes");

        let mut t = Lamps::default();
        t.share();
        let (k1, k2) = (t.call_key(), t.call_key());
        t.set_call(&a, k1, call(Status::Ringing, "c1")).unwrap();
        let _ = t.set(&b, Lamp::manual(&b, Status::Busy));
        let mut out = t.take_outbox();
        out.sort_by_key(|n| format!("{n:?}"));
        assert_eq!(
            out,
            [
                News::Calls(a.clone(), call(Status::Ringing, "c1")),
                News::Manual(b.clone(), Status::Busy),
            ]
        );
        // A second call ringing under a busy one: what the calls show is the same, nothing
        // owed; a lamp set by hand is not a call's.
        t.set_call(&a, k1, call(Status::Busy, "c1")).unwrap();
        let _ = t.take_outbox();
        t.set_call(&a, k2, call(Status::Ringing, "c2")).unwrap();
        let _ = t.set(&a, Lamp::manual(&a, Status::Ringing));
        assert_eq!(t.take_outbox(), [News::Manual(a.clone(), Status::Ringing)]);
        // The periodic announcement: the ids the calls light, with what they show.
        t.announce_own_calls();
        assert_eq!(
            t.take_outbox(),
            [News::Calls(a.clone(), call(Status::Busy, "c1"))]
        );
        t.put_out_call(&a, k1);
        t.put_out_call(&a, k2);
        assert_eq!(t.take_outbox(), [News::Calls(a.clone(), Lamp::idle())]);
        // A reset: owed as a reset, after which a new lamp set is owed as set.
        t.reset(&b).unwrap();
        let _ = t.set(&b, Lamp::manual(&b, Status::Ringing));
        assert_eq!(
            t.take_outbox(),
            [
                News::Reset(b.clone()),
                News::Manual(b.clone(), Status::Ringing)
            ]
        );
    }

    #[test]
    fn a_reset_heard_forgets_the_nodes_and_the_lamp_set_but_not_this_nodes_calls() {
        let mut t = Lamps::default();
        t.share();
        let a = id("2001").unwrap();
        let t0 = Instant::now();
        t.hear(
            "n2",
            news(
                30,
                vec![
                    News::Manual(a.clone(), Status::Ringing),
                    News::Calls(a.clone(), call(Status::Busy, "x")),
                ],
            ),
            t0,
        );
        assert_eq!(t.get(&a), call(Status::Busy, "x"));
        assert!(t.take_outbox().is_empty());
        let k = t.call_key();
        t.set_call(&a, k, call(Status::Ringing, "c1")).unwrap();
        let _ = t.take_outbox();
        let heard = t.hear("n3", news(30, vec![News::Reset(a.clone())]), t0);
        assert_eq!(heard.reset, std::slice::from_ref(&a));
        assert_eq!(t.get(&a), call(Status::Ringing, "c1"));
        assert_eq!(t.remote, 0);
        // This node's call is said again, for the nodes forgot it too.
        assert_eq!(
            t.take_outbox(),
            [News::Calls(a.clone(), call(Status::Ringing, "c1"))]
        );
        // A local reset forgets the nodes too, and leaves the call.
        t.hear(
            "n2",
            news(30, vec![News::Calls(a.clone(), call(Status::Busy, "x"))]),
            t0,
        );
        assert_eq!(t.reset(&a), Ok(None));
        assert_eq!(t.get(&a), call(Status::Ringing, "c1"));
        assert_eq!(t.take_outbox(), [News::Reset(a.clone())]);
        // Asked: every id its calls light.
        t.hear("n4", NodeMessage::Ask, t0);
        assert_eq!(
            t.take_outbox(),
            [News::Calls(a.clone(), call(Status::Ringing, "c1"))]
        );
    }

    #[test]
    fn messages_read_back_and_are_cut_to_fit() {
        let a = id("2001").unwrap();
        let mut long = call(Status::Busy, &"é".repeat(1000));
        if let Some(d) = &mut long.dialog {
            d.remote = Some(format!("sip:{}@x", "r".repeat(2000)));
            d.local_tag = Some("t".repeat(MAX_TAG + 1));
            d.remote_tag = Some("rt".into());
        }
        let items = vec![
            News::Reset(a.clone()),
            News::Manual(a.clone(), Status::Busy),
            News::Calls(a.clone(), call(Status::Ringing, "c1")),
            News::Calls(a.clone(), Lamp::idle()),
            News::Calls(a.clone(), long),
        ];
        let bodies = encode(&items, Duration::from_secs(90));
        assert_eq!(bodies.len(), 1);
        let Some(NodeMessage::News { ttl, items: back }) = parse(&bodies[0]) else {
            panic!("{}", bodies[0]);
        };
        assert_eq!(ttl, Duration::from_secs(90));
        assert_eq!(back[..4], items[..4]);
        let News::Calls(_, cut_lamp) = &back[4] else {
            panic!("{back:?}");
        };
        let d = cut_lamp.dialog.as_ref().unwrap();
        // 256 bytes of two-byte characters: 128 of them, no character split.
        assert_eq!(d.call_id, "é".repeat(128));
        assert_eq!((d.remote.as_ref(), d.local_tag.as_ref()), (None, None));
        assert_eq!(d.remote_tag.as_deref(), Some("rt"));
        assert_eq!(parse(&encode_ask()), Some(NodeMessage::Ask));
        // Many: several messages, each under the limit, nothing lost.
        let many: Vec<News> = (0..500)
            .map(|i| {
                let id = id(&format!("user-{i}")).unwrap();
                News::Calls(
                    id,
                    call(Status::Busy, &format!("call-{i}-{}", "x".repeat(100))),
                )
            })
            .collect();
        let bodies = encode(&many, Duration::from_secs(90));
        assert!(bodies.len() > 1);
        let mut back = Vec::new();
        for b in &bodies {
            assert!(b.len() <= MAX_MESSAGE_BYTES, "{}", b.len());
            let Some(NodeMessage::News { items, .. }) = parse(b) else {
                panic!("{b}");
            };
            back.extend(items);
        }
        assert_eq!(back, many);
    }

    #[test]
    fn hostile_messages_are_ignored_whole_or_item_by_item_never_a_panic() {
        let whole = |b: &str| parse(b);
        let items = |b: &str| match parse(b) {
            Some(NodeMessage::News { items, .. }) => items,
            other => panic!("{b}: {other:?}"),
        };
        let good = encode(
            &[News::Calls(id("2001").unwrap(), call(Status::Busy, "c1"))],
            Duration::from_secs(90),
        )
        .remove(0);
        // Cut anywhere (a split character included), or not JSON: nothing.
        let odd = format!(
            r#"{{"v":1,"ttl":5,"items":[{{"id":"é{}"}}]}}"#,
            "é".repeat(5)
        );
        for text in [&good, &odd] {
            for end in 0..text.len() - 1 {
                if text.is_char_boundary(end) {
                    assert_eq!(whole(&text[..end]), None, "{}", &text[..end]);
                }
            }
        }
        let bytes = String::from_utf8_lossy(&[b'{', 0xff, 0xfe, b'}']).into_owned();
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"v":2,"ask":true}"#,
            r#"{"v":"1"}"#,
            &bytes,
            r#"{"v":1,"items":{}}"#,
            r#"{"v":1,"ttl":-1}"#,
        ] {
            assert_eq!(whole(bad), None, "{bad}");
        }
        // Too long as a whole, even when well formed.
        let huge = format!(
            r#"{{"v":1,"items":[],"pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(whole(&huge), None);
        // Deeply nested: skipped in an unknown key, refused where items are (no overflow).
        let nest = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
        let skipped = whole(&format!(r#"{{"v":1,"x":{nest}}}"#));
        assert!(matches!(skipped, Some(NodeMessage::News { items, .. }) if items.is_empty()));
        assert_eq!(whole(&format!(r#"{{"v":1,"items":{nest}}}"#)), None);
        // Bad items go, good ones stay; a huge ttl is held to the most.
        let mixed = r#"{"v":1,"ttl":99999999999,"items":[
            {"id":"2001","k":"manual","status":"busy"},
            {"id":"a b@pbx.test","k":"manual","status":"busy"},
            {"id":"2001@pbx.test","k":"manual"},
            {"id":"2001@pbx.test","k":"manual","status":"on fire"},
            {"id":"2001@pbx.test","k":"calls","status":"busy"},
            {"id":"2001@pbx.test","k":"calls","status":"busy","dialog":{"id":"x"}},
            {"id":"2001@pbx.test","k":"calls","status":"busy",
             "dialog":{"id":"x","call_id":"x","direction":"sideways"}},
            {"id":"2001@pbx.test","k":"explode"},
            {"k":"reset"},
            {"id":"2001@pbx.test","k":"reset","extra":[1,2,3]},
            {"id":"2001@pbx.test","k":"calls","status":"idle"}
        ]}"#;
        let p = id("2001").unwrap();
        assert_eq!(
            items(mixed),
            [News::Reset(p.clone()), News::Calls(p.clone(), Lamp::idle())]
        );
        let Some(NodeMessage::News { ttl, .. }) = parse(mixed) else {
            panic!();
        };
        assert_eq!(ttl, MAX_TTL);
        // What the parse lets through, applied by a node with a name too long: refused.
        let mut t = Lamps::default();
        let heard = t.hear(&"n".repeat(65), parse(mixed).unwrap(), Instant::now());
        assert_eq!(heard.refused, 1);
        assert!(t.lit().is_empty());
    }

    #[test]
    fn the_lamps_of_other_nodes_are_bounded() {
        let mut t = Lamps::default();
        let a = id("2001").unwrap();
        t.remote = MAX_REMOTE_LAMPS;
        let heard = t.hear(
            "n2",
            news(30, vec![News::Calls(a.clone(), call(Status::Busy, "x"))]),
            Instant::now(),
        );
        assert_eq!(heard.refused, 1);
        assert!(t.lit().is_empty());
    }

    #[test]
    fn the_stored_lamps_replace_the_lamps_set_and_leave_the_calls() {
        let mut t = Lamps::default();
        t.share();
        let (a, b, c) = (id("a").unwrap(), id("b").unwrap(), id("c").unwrap());
        let _ = t.set(&a, Lamp::manual(&a, Status::Busy));
        let _ = t.set(&b, Lamp::manual(&b, Status::Busy));
        let k = t.call_key();
        t.set_call(&b, k, call(Status::Ringing, "c1")).unwrap();
        let _ = (t.take_changed(), t.take_outbox());
        t.set_all(vec![
            (c.clone(), Status::Ringing),
            (a.clone(), Status::Busy),
        ]);
        assert_eq!(t.get(&a), Lamp::manual(&a, Status::Busy));
        assert_eq!(
            t.get(&b),
            call(Status::Ringing, "c1"),
            "its set lamp gone, not its call"
        );
        assert_eq!(t.get(&c), Lamp::manual(&c, Status::Ringing));
        let mut changed = t.take_changed();
        changed.sort();
        assert_eq!(changed, [b, c]);
        assert!(
            t.take_outbox().is_empty(),
            "the store is every node's: nothing owed"
        );
    }
}
