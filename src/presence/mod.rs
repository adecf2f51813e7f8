//! Presence (issue 11): what each presence id shows (idle, ringing, busy) and the phones
//! watching it, told by SIP NOTIFY (RFC 6665) in the `dialog` (RFC 4235, busy lamp fields)
//! and `presence` (RFC 3856, PIDF) packages.
//!
//! - `state.rs`: presence ids, the lamp of each ([`Lamp`]), the table of lit lamps;
//! - `body.rs`: the NOTIFY bodies, as Kazoo's Kamailio writes them;
//! - `subscription.rs`: what a SUBSCRIBE asks and every code it gets; one subscription,
//!   its dialog and its NOTIFY;
//! - `notifier.rs`: the task that owns the subscriptions and sends the NOTIFYs;
//! - this file: the handle the rest of pivotd holds ([`Presence`]), and
//!   [`PresenceControl`], the slice of it the callflow runtime sees.
//!
//! Who sets a lamp: a flow's `manual_presence` (through [`PresenceControl`], so the runtime's
//! modules are tested without this), and the call layer, for a call's own progress, through
//! [`Presence::call_lamp`]: a [`CallLamp`] guard the call holds, which puts its dialog out
//! when dropped (the call ended, by any path, a panic included). SUBSCRIBE reaches the task
//! through admission (`call::admission`), which checks it ([`subscription::read`]),
//! authenticates the device as for an INVITE and resolves what it watches
//! ([`subscription::watched`]) without waiting on the task.
//!
//! Subscriptions and the lamps flows set are kept in the store: after a restart each
//! subscription gets a NOTIFY with the current state in its old dialog, and the lamps are lit
//! as they were. Call lamps are not kept: no call outlives a restart, so they start idle.
//!
//! With a PostgreSQL store several nodes share the lamps (issue 13): the task tells the
//! others what changed here and hears what changed there, on the store's channel (see
//! `notifier.rs`; what is shared and what expires, in `state.rs`).
//!
//! Setting a lamp never waits on the task: it is one map operation under the table's mutex
//! (never held across I/O or an await; the task holds it only to read a lamp or take the
//! changed ids) and a `Notify` rung.

pub mod body;
pub mod notifier;
pub mod state;
pub mod subscription;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};

use crate::config::live::LiveConfig;
use crate::config::Config;
use crate::logsafe::wire;
use crate::sip::dialog::{host_port, DialogSnapshot};
use crate::sip::endpoint::{Endpoint, ServerTx};
use crate::sip::outgoing::{random_token, response_bytes};
use crate::sip::transport::Proto;
use crate::store::{unix_now, Store, StoredPresence, Write};

pub use notifier::NewSubscription;
pub use state::{
    CallKey, DialogInfo, Direction, Lamp, LampError, Lamps, Origin, PresenceId, Status,
};
pub use subscription::{SubscribeRefusal, SubscribeRequest, Watcher};

/// New SUBSCRIBEs waiting for the task; beyond, 503.
const QUEUE: usize = 4096;

/// What the callflow runtime may do to presence: `manual_presence` (spec c.7, g).
pub trait PresenceControl: Send + Sync {
    /// Sets `presence_id`'s lamp (a bare name takes the account's realm, spec j.16) and tells
    /// its watchers. An id of another realm than the account's is refused: a flow lights the
    /// lamps of its own account only.
    fn set_manual(
        &self,
        account_id: &str,
        presence_id: &str,
        status: Status,
    ) -> Result<PresenceId, LampError>;
}

/// Counters for /metrics and the tests.
#[derive(Debug, Default)]
pub struct PresenceStats {
    /// Live subscriptions (ending ones until their last NOTIFY is answered).
    pub subscriptions: AtomicUsize,
    /// NOTIFYs sent.
    pub notifies: AtomicU64,
    /// NOTIFYs answered with an error or not at all.
    pub notify_failures: AtomicU64,
}

/// The lamps, shared by the handle (which sets them) and the task (which reads them).
pub(crate) struct Shared {
    lamps: Mutex<Lamps>,
    /// Ids whose watchers are owed the state again though it may not have changed (a reset).
    refresh: Mutex<HashSet<PresenceId>>,
    /// Rung when a lamp changed.
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Lamps> {
        // A panic while holding the lock leaves a consistent table (each change is one map
        // operation), so a poisoned lock is still usable.
        self.lamps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ids whose watchers are owed a NOTIFY: those changed and those to refresh.
    fn take_owed(&self) -> HashSet<PresenceId> {
        let mut owed: HashSet<PresenceId> = self.lock().take_changed().into_iter().collect();
        let mut refresh = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        owed.extend(refresh.drain());
        owed
    }
}

/// What presence needs from the server.
pub struct PresenceParts {
    /// The config in force, read per use: a reload's accounts count at once.
    pub cfg: Arc<LiveConfig>,
    pub endpoint: Arc<Endpoint>,
    pub store: Option<Store>,
}

/// The handle: sets lamps, hands SUBSCRIBEs to the task.
pub struct Presence {
    cfg: Arc<LiveConfig>,
    shared: Arc<Shared>,
    cmds: mpsc::Sender<NewSubscription>,
    store: Option<Store>,
    pub stats: Arc<PresenceStats>,
}

impl Presence {
    /// The handle, and the task to run (the server watches it). With a store, the lamps flows
    /// left lit and the subscriptions come back (read here, before anything is served).
    pub fn start(p: PresenceParts) -> (Arc<Presence>, impl Future<Output = ()> + Send + 'static) {
        // Other nodes on the same PostgreSQL database: the task hears theirs and tells them
        // ours (what was restored they read from the store themselves). Heard from before
        // the store is read, so that a change made meanwhile is not lost between the two.
        let nodes = p.store.as_ref().and_then(Store::subscribe_presence);
        let mut lamps = Lamps::default();
        let mut restored = Vec::new();
        if let Some(store) = &p.store {
            restore_lamps(store, &mut lamps);
            restored = restore_subscriptions(store, &p.cfg.get(), &p.endpoint);
        }
        if nodes.is_some() {
            lamps.share();
        }
        let shared = Arc::new(Shared {
            lamps: Mutex::new(lamps),
            refresh: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        });
        let stats = Arc::new(PresenceStats::default());
        let (cmd_tx, cmd_rx) = mpsc::channel(QUEUE);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let notifier = notifier::Notifier::new(
            p.endpoint,
            p.cfg.clone(),
            p.store.clone(),
            shared.clone(),
            stats.clone(),
            ev_tx,
        );
        let task = notifier.run(restored, cmd_rx, ev_rx, nodes);
        let handle = Arc::new(Presence {
            cfg: p.cfg,
            shared,
            cmds: cmd_tx,
            store: p.store,
            stats,
        });
        (handle, task)
    }

    /// Hands an accepted SUBSCRIBE to the task, without waiting: when its queue is full the
    /// SUBSCRIBE gets 503 here.
    pub fn submit(&self, n: NewSubscription) {
        if let Err(e) = self.cmds.try_send(n) {
            let n = match e {
                mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n,
            };
            tracing::warn!("presence: queue full, SUBSCRIBE refused");
            reply_refusal(&n.req, &n.tx, &SubscribeRefusal::Busy);
        }
    }

    /// Sets `id`'s lamp as a whole (a flow's `manual_presence`: each replaces the last; the
    /// calls' dialogs on the id stay, see [`Presence::call_lamp`]); its watchers are told if
    /// what it shows changed. A manual lamp is kept in the store (and one no longer lit taken
    /// out).
    pub fn set(&self, id: &PresenceId, lamp: Lamp) -> Result<(), LampError> {
        self.set_or_reset(id, lamp, false)
    }

    /// [`Presence::set`], or with `reset` the lamps table's reset (which also forgets what
    /// other nodes said of the id, and tells them).
    fn set_or_reset(&self, id: &PresenceId, lamp: Lamp, reset: bool) -> Result<(), LampError> {
        let kept = |l: &Lamp| l.origin == Origin::Manual && !l.is_idle();
        let now_kept = kept(&lamp).then_some(lamp.status);
        let old = {
            let mut lamps = self.shared.lock();
            if reset {
                lamps.reset(id)?
            } else {
                lamps.set(id, lamp)?
            }
        };
        let Some(old) = old else {
            return Ok(());
        };
        // Stored before the task is woken, which announces it to the other nodes: a node
        // starting meanwhile reads it from the store or hears it.
        if let Some(store) = &self.store {
            match now_kept {
                Some(status) => {
                    store.write(Write::PresenceState(StoredPresence {
                        presence_id: id.to_string(),
                        status: status.as_str().to_string(),
                        updated: unix_now(),
                    }));
                }
                None if kept(&old) => {
                    store.write(Write::ClearPresenceState(id.to_string()));
                }
                None => {}
            }
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Lights `ids` for a call with `status` and its `dialog` (Origin::Call, never stored);
    /// the guard changes them as the call goes and puts them out when dropped. Another
    /// call's dialog on the same ids is left alone: each id shows the highest of its calls.
    pub fn call_lamp(&self, ids: Vec<PresenceId>, status: Status, dialog: DialogInfo) -> CallLamp {
        CallLamp::light(self.shared.clone(), ids, status, dialog)
    }

    /// Kazoo's presence reset (the API's): `id` goes idle and every watcher of it is sent the
    /// state again, even when nothing changed — a phone whose lamp is stuck is put right.
    /// With other nodes, on every node: what they said of the id is forgotten, and a node
    /// whose calls light it says so again (a live call keeps its lamp, as here).
    pub fn reset(&self, id: &PresenceId) -> Result<(), LampError> {
        // Marked before the lamp changes: the task then takes both in one turn (one NOTIFY).
        self.shared
            .refresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        let set = self.set_or_reset(id, Lamp::idle(), true);
        self.shared.wake.notify_one();
        set
    }

    /// `text` (`name` or `name@realm`) as a presence id of the account: a bare name takes its
    /// realm; another realm is refused, for an account's ids are in its realm only.
    pub fn account_id(&self, account_id: &str, text: &str) -> Result<PresenceId, LampError> {
        let account = self
            .cfg
            .account(account_id)
            .ok_or_else(|| LampError::NoAccount(account_id.to_string()))?;
        let id = PresenceId::parse(text, &account.realm)?;
        if !id.realm().eq_ignore_ascii_case(&account.realm) {
            return Err(LampError::OtherRealm {
                realm: id.realm().to_string(),
            });
        }
        Ok(id)
    }

    /// What `id` shows now.
    pub fn lamp(&self, id: &PresenceId) -> Lamp {
        self.shared.lock().get(id)
    }

    /// Every lit lamp.
    pub fn lit(&self) -> Vec<(PresenceId, Lamp)> {
        self.shared.lock().lit()
    }

    /// Live subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.stats.subscriptions.load(Ordering::Relaxed)
    }
}

impl PresenceControl for Presence {
    fn set_manual(
        &self,
        account_id: &str,
        presence_id: &str,
        status: Status,
    ) -> Result<PresenceId, LampError> {
        let id = self.account_id(account_id, presence_id)?;
        self.set(&id, Lamp::manual(&id, status))?;
        Ok(id)
    }
}

/// A call's part in the lamps of its presence ids ([`Presence::call_lamp`]). Dropping it
/// puts the call's dialog out on each id, so no lamp stays lit after its call, whatever ended
/// it.
pub struct CallLamp {
    shared: Arc<Shared>,
    key: CallKey,
    ids: Vec<PresenceId>,
    lamp: Lamp,
}

impl CallLamp {
    fn light(
        shared: Arc<Shared>,
        ids: Vec<PresenceId>,
        status: Status,
        dialog: DialogInfo,
    ) -> CallLamp {
        let key = shared.lock().call_key();
        let lamp = CallLamp {
            shared,
            key,
            ids,
            lamp: Lamp {
                status,
                dialog: Some(dialog),
                origin: Origin::Call,
            },
        };
        lamp.show();
        lamp
    }

    /// The call is answered: busy (RFC 4235 `confirmed`), with the presentity's own tag when
    /// it is learnt only now (a callee's To tag).
    pub fn confirm(&mut self, local_tag: Option<&str>) {
        self.lamp.status = Status::Busy;
        if let (Some(d), Some(tag)) = (&mut self.lamp.dialog, local_tag) {
            d.local_tag = Some(tag.to_string());
        }
        self.show();
    }

    fn show(&self) {
        let mut lamps = self.shared.lock();
        for id in &self.ids {
            if let Err(e) = lamps.set_call(id, self.key, self.lamp.clone()) {
                tracing::warn!(id = %wire(&id.to_string()), error = %e, "presence: a call's lamp not lit");
            }
        }
        drop(lamps);
        self.shared.wake.notify_one();
    }
}

impl Drop for CallLamp {
    fn drop(&mut self) {
        let mut lamps = self.shared.lock();
        for id in &self.ids {
            lamps.put_out_call(id, self.key);
        }
        drop(lamps);
        self.shared.wake.notify_one();
    }
}

/// Answers a SUBSCRIBE with a refusal (a fresh To tag out of a dialog, RFC 3261 §8.2.6.2).
pub(crate) fn reply_refusal(req: &rsip::Request, tx: &ServerTx, refusal: &SubscribeRefusal) {
    let code = refusal.code();
    let reason = refusal.reason();
    let headers = refusal.headers();
    let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_ref())).collect();
    let tag = random_token(10);
    let bytes = response_bytes(req, code, reason.as_deref(), Some(&tag), &extra, None);
    tx.respond(code, bytes);
}

/// The lamps flows left lit.
fn restore_lamps(store: &Store, lamps: &mut Lamps) {
    if let Some(stored) = stored_lamps(store) {
        lamps.set_all(stored);
        // Restored, not changed: no watcher is owed anything for them yet.
        let _ = lamps.take_changed();
    }
}

/// The lamps set as a whole the store keeps (every node's, with PostgreSQL); `None` when it
/// cannot be read (logged).
pub(crate) fn stored_lamps(store: &Store) -> Option<Vec<(PresenceId, Status)>> {
    let rows = match store.presence_states() {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read presence states from the store");
            return None;
        }
    };
    let read = rows.into_iter().filter_map(|row| {
        match (
            PresenceId::parse(&row.presence_id, ""),
            Status::parse(&row.status),
        ) {
            (Ok(id), Some(status)) => Some((id, status)),
            _ => {
                tracing::warn!(id = %wire(&row.presence_id), "store: an unreadable lamp skipped");
                None
            }
        }
    });
    Some(read.collect())
}

/// The stored subscriptions, each going on from this process's socket of its transport (and
/// address family).
fn restore_subscriptions(
    store: &Store,
    cfg: &Config,
    endpoint: &Endpoint,
) -> Vec<subscription::Subscription> {
    let now = unix_now();
    // Rows of subscriptions that expired while pivotd was down go.
    store.write(Write::ExpireSubscriptions(now));
    let rows = match store.subscriptions(now) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read presence subscriptions from the store");
            return Vec::new();
        }
    };
    let transport = endpoint.transport();
    let local_for = |d: &DialogSnapshot| {
        let proto = Proto::from_via_token(&d.transport).unwrap_or(Proto::Udp);
        let list = transport.addrs(proto);
        let local = list
            .iter()
            .find(|a| a.is_ipv4() == d.remote.is_ipv4())
            .or(list.first())
            .copied()?;
        Some((local, host_port(cfg.sip.advertise, local)))
    };
    rows.into_iter()
        .filter_map(
            |row| match subscription::Subscription::restore(row, local_for) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "store: a presence subscription skipped");
                    None
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog(call_id: &str) -> DialogInfo {
        DialogInfo {
            id: call_id.into(),
            call_id: call_id.into(),
            local_tag: None,
            remote_tag: None,
            direction: Some(Direction::Recipient),
            remote: None,
        }
    }

    #[test]
    fn a_call_lamp_follows_its_call_and_goes_out_when_dropped_even_by_a_panic() {
        let shared = Arc::new(Shared {
            lamps: Mutex::new(Lamps::default()),
            refresh: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        });
        let a = PresenceId::parse("2001", "pbx.test").unwrap();
        let b = PresenceId::parse("alice", "pbx.test").unwrap();
        let mut one = CallLamp::light(
            shared.clone(),
            vec![a.clone(), b.clone()],
            Status::Ringing,
            dialog("c1"),
        );
        assert_eq!(shared.lock().get(&a).status, Status::Ringing);
        assert_eq!(shared.lock().get(&b).origin, Origin::Call);
        one.confirm(Some("tag-a"));
        let shown = shared.lock().get(&a);
        assert_eq!(shown.status, Status::Busy);
        assert_eq!(shown.dialog.unwrap().local_tag.as_deref(), Some("tag-a"));
        // A second call on `a`, ended by a panic in its task: its guard still puts it out.
        let s2 = shared.clone();
        let a2 = a.clone();
        let unwound = std::panic::catch_unwind(move || {
            let _two = CallLamp::light(s2, vec![a2], Status::Ringing, dialog("c2"));
            panic!("the call task fails");
        });
        assert!(unwound.is_err());
        // The busy call still shows; nothing of the second is left.
        assert_eq!(shared.lock().get(&a).status, Status::Busy);
        drop(one);
        assert!(shared.lock().lit().is_empty());
    }
}
