//! The presence task: every subscription, and the NOTIFYs they are owed (RFC 6665 §4.2).
//!
//! One task owns the subscriptions outright (no lock): new SUBSCRIBEs arrive on a bounded
//! queue from admission, a subscription's in-dialog requests and its NOTIFYs' responses on
//! the dialog-event channel it registered with the endpoint, lamp changes as a wake-up
//! (the changed ids wait in the lamp table, so a burst of changes to one id is one NOTIFY
//! per watcher, with the latest state). NOTIFYs are the endpoint's non-INVITE client
//! transactions (retransmissions, Timer F). At most one NOTIFY per subscription is in flight
//! (so they arrive in order), and at most `max_notifies_in_flight` in all; the rest wait in
//! a FIFO, each sent the state current when its turn comes.
//!
//! A subscriber that answers 481, 408 or one of RFC 5057's other dialog-usage killers, or
//! does not answer at all (Timer F), is removed without a further NOTIFY.
//!
//! With other nodes on the same PostgreSQL database (issue 13) the task also carries the
//! lamps between them, on the store's channel (`Change::Presence`): it announces what the
//! lamps table says this node owes them (a lamp a flow or the API set, a reset, what its own
//! calls light on an id when that changed), and every `[presence] announce_interval_s` the
//! ids its calls light again; the others believe a node's call lamps for three intervals
//! (the `ttl` it sends) and the sweep forgets what was not said again, so a node that died
//! with calls up leaves no lamp lit. What it hears from the others goes into the table
//! (`Lamps::hear`), and their watchers here are told as for a local change. A node starting,
//! or whose listener reconnected (it may have missed messages), asks the others to say
//! their call lamps again; after a reconnection it also reads the lamps set as a whole from
//! the store again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;

use super::state::{self, PresenceId};
use super::subscription::{
    read, EndReason, SubscribeRefusal, SubscribeRequest, Subscription, Watcher,
};
use super::{reply_refusal, PresenceStats, Shared};
use crate::config::live::LiveConfig;
use crate::logsafe::wire;
use crate::sip::dialog::{host_port, Dialog, DialogError};
use crate::sip::endpoint::{DialogEvent, DialogId, Endpoint, ServerTx};
use crate::sip::message;
use crate::sip::outgoing::{random_token, response_bytes};
use crate::store::{unix_now, Change, Store, Write};

/// What the other nodes said, or that something may have been missed.
enum FromNodes {
    Message { node: String, body: String },
    Missed,
    Closed,
}

/// The next thing heard from the other nodes; never, without them.
async fn from_nodes(rx: &mut Option<broadcast::Receiver<Change>>) -> FromNodes {
    let Some(r) = rx else {
        return std::future::pending().await;
    };
    loop {
        return match r.recv().await {
            Ok(Change::Presence { node, body }) => FromNodes::Message { node, body },
            Ok(Change::Resync) | Err(RecvError::Lagged(_)) => FromNodes::Missed,
            // The presence channel carries nothing else.
            Ok(_) => continue,
            Err(RecvError::Closed) => FromNodes::Closed,
        };
    }
}

/// A SUBSCRIBE admission accepted (authenticated, valid, watching an id of the device's
/// account), for the task to answer.
#[derive(Debug)]
pub struct NewSubscription {
    pub req: rsip::Request,
    pub tx: ServerTx,
    pub call_id: String,
    pub asked: SubscribeRequest,
    pub watched: PresenceId,
    pub watcher: Watcher,
}

/// One subscription and where its NOTIFYs stand.
struct Live {
    sub: Subscription,
    /// The client transaction of the NOTIFY pending, if any.
    in_flight: Option<u64>,
    /// A NOTIFY is owed: the first one, a refresh's, or the lamp changed since the last.
    owed: bool,
    /// Waiting in the ready queue.
    queued: bool,
    /// Ending: the next NOTIFY is the last, with this reason.
    ending: Option<EndReason>,
    /// That last NOTIFY went out: the subscription goes when it is answered.
    final_sent: bool,
}

/// The task's state.
pub(super) struct Notifier {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) cfg: Arc<LiveConfig>,
    pub(super) store: Option<Store>,
    pub(super) shared: Arc<Shared>,
    pub(super) stats: Arc<PresenceStats>,
    /// The owner channel registered for every subscription dialog and NOTIFY.
    pub(super) events: mpsc::UnboundedSender<DialogEvent>,
    subs: HashMap<DialogId, Live>,
    /// The live (not ending) subscriptions of each presence id.
    watchers: HashMap<PresenceId, HashSet<DialogId>>,
    per_device: HashMap<Watcher, usize>,
    /// NOTIFY transactions → their subscription.
    tx_ids: HashMap<u64, DialogId>,
    ready: VecDeque<DialogId>,
    in_flight: usize,
}

/// RFC 5057 §5.1 (and RFC 6665 §4.1.2.3 for a NOTIFY's answer): responses after which the
/// subscription no longer exists at the subscriber.
fn ends_the_usage(code: u16) -> bool {
    matches!(
        code,
        404 | 405 | 408 | 410 | 416 | 480..=485 | 489 | 501 | 604
    )
}

impl Notifier {
    pub(super) fn new(
        endpoint: Arc<Endpoint>,
        cfg: Arc<LiveConfig>,
        store: Option<Store>,
        shared: Arc<Shared>,
        stats: Arc<PresenceStats>,
        events: mpsc::UnboundedSender<DialogEvent>,
    ) -> Notifier {
        Notifier {
            endpoint,
            cfg,
            store,
            shared,
            stats,
            events,
            subs: HashMap::new(),
            watchers: HashMap::new(),
            per_device: HashMap::new(),
            tx_ids: HashMap::new(),
            ready: VecDeque::new(),
            in_flight: 0,
        }
    }

    /// Serves until the command queue closes (the server is dropped).
    pub(super) async fn run(
        mut self,
        restored: Vec<Subscription>,
        mut cmds: mpsc::Receiver<NewSubscription>,
        mut events: mpsc::UnboundedReceiver<DialogEvent>,
        mut nodes: Option<broadcast::Receiver<Change>>,
    ) {
        let n = restored.len();
        for sub in restored {
            self.restore(sub);
        }
        if n > 0 {
            tracing::info!(
                subscriptions = n,
                "presence subscriptions restored from the store"
            );
        }
        self.pump();
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let every = self.announce_interval();
        let mut announce = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if nodes.is_some() {
            // What the others' calls light now: our listener may have connected before this
            // task subscribed, so its first resync went unheard.
            self.ask_nodes();
        }
        loop {
            // A panic costs the one event that caused it, never the task.
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(n) => {
                        let _ = crate::health::catch(|| self.subscribe(n));
                    }
                    None => break,
                },
                Some(ev) = events.recv() => {
                    let _ = crate::health::catch(|| self.on_event(ev));
                }
                () = self.shared.wake.notified() => {
                    let _ = crate::health::catch(|| self.on_changes());
                }
                _ = sweep.tick() => {
                    let _ = crate::health::catch(|| self.sweep(unix_now()));
                    let _ = crate::health::catch(|| self.expire_nodes(Instant::now()));
                }
                _ = announce.tick(), if nodes.is_some() => {
                    self.shared.lock().announce_own_calls();
                    let _ = crate::health::catch(|| self.announce());
                }
                heard = from_nodes(&mut nodes) => match heard {
                    FromNodes::Message { node, body } => {
                        let _ = crate::health::catch(|| self.hear(&node, &body));
                    }
                    FromNodes::Missed => {
                        self.ask_nodes();
                        self.reload_set().await;
                    }
                    FromNodes::Closed => nodes = None,
                },
            }
            let _ = crate::health::catch(|| self.pump());
        }
    }

    /// A new subscription: 200 (or a refusal), then at once a NOTIFY with the current state.
    /// Out of a dialog, Expires: 0 fetches the state: one NOTIFY that ends it.
    fn subscribe(&mut self, n: NewSubscription) {
        let NewSubscription {
            req,
            tx,
            call_id,
            asked,
            watched,
            watcher,
        } = n;
        let fetch = asked.expires == 0;
        let max = self.cfg.get().presence.max_subscriptions_per_device as usize;
        if !fetch && self.per_device.get(&watcher).copied().unwrap_or(0) >= max {
            reply_refusal(&req, &tx, &SubscribeRefusal::TooMany);
            return;
        }
        let now = unix_now();
        let local_host = host_port(self.cfg.get().sip.advertise, tx.peer().local);
        let local_tag = random_token(10);
        let sub = match Subscription::new(
            &req,
            &call_id,
            &local_tag,
            tx.peer().clone(),
            local_host,
            &asked,
            watched,
            watcher,
            now,
        ) {
            Ok(s) => s,
            Err(e) => {
                reply_refusal(&req, &tx, &SubscribeRefusal::BadDialog(e));
                return;
            }
        };
        let id = sub.id().clone();
        if !fetch {
            self.endpoint
                .register_dialog(id.clone(), self.events.clone(), None);
        }
        let headers = sub.ok_headers(now);
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        tx.respond(
            200,
            response_bytes(&req, 200, None, Some(&local_tag), &extra, None),
        );
        tracing::debug!(
            watched = %wire(&sub.watched.to_string()),
            package = sub.event.package.name(),
            expires = asked.expires,
            "presence: subscribed"
        );
        if fetch {
            self.insert(sub, Some(EndReason::Timeout));
        } else {
            self.persist(&sub, now);
            self.insert(sub, None);
        }
        self.queue(&id);
    }

    /// A stored subscription, back after a restart: owed a NOTIFY with the current state.
    fn restore(&mut self, sub: Subscription) {
        let id = sub.id().clone();
        self.endpoint
            .register_dialog(id.clone(), self.events.clone(), None);
        self.insert(sub, None);
        self.queue(&id);
    }

    fn insert(&mut self, sub: Subscription, ending: Option<EndReason>) {
        let id = sub.id().clone();
        if ending.is_none() {
            self.watchers
                .entry(sub.watched.clone())
                .or_default()
                .insert(id.clone());
            *self.per_device.entry(sub.watcher.clone()).or_default() += 1;
        }
        self.subs.insert(
            id,
            Live {
                sub,
                in_flight: None,
                owed: true,
                queued: false,
                ending,
                final_sent: false,
            },
        );
        self.stats
            .subscriptions
            .store(self.subs.len(), Ordering::Relaxed);
    }

    fn on_event(&mut self, ev: DialogEvent) {
        match ev {
            DialogEvent::Request { req, tx } => self.in_dialog(*req, *tx),
            DialogEvent::Response { id, resp } => self.answered(id, Some(resp.status_code.code())),
            DialogEvent::Timeout { id } => self.answered(id, None),
            // No INVITE in these dialogs.
            DialogEvent::Ack { .. } | DialogEvent::Cancelled | DialogEvent::AckTimeout => {}
        }
    }

    /// A request in a subscription's dialog: a refresh, an unsubscribe (RFC 6665 §4.1.2.2,
    /// §4.1.2.3), or something else (405).
    fn in_dialog(&mut self, req: rsip::Request, tx: ServerTx) {
        let reply = |code: u16, extra: &[(&str, &str)]| {
            tx.respond(code, response_bytes(&req, code, None, None, extra, None));
        };
        let id = DialogId {
            call_id: message::call_id(&req).unwrap_or_default(),
            local_tag: message::to_tag(&req).unwrap_or_default(),
        };
        let Some(live) = self.subs.get_mut(&id).filter(|l| l.ending.is_none()) else {
            reply_refusal(&req, &tx, &SubscribeRefusal::NoSubscription);
            return;
        };
        if req.method != rsip::Method::Subscribe {
            reply(405, &[("Allow", "SUBSCRIBE")]);
            return;
        }
        let cseq = message::cseq(&req).map_or(0, |c| c.0);
        if !live.sub.dialog.accept_remote_cseq(cseq, &req.method) {
            reply(500, &[("Retry-After", "1")]);
            return;
        }
        let asked = match read(&req, &self.cfg.get().presence) {
            Ok(a) => a,
            Err(refusal) => {
                reply_refusal(&req, &tx, &refusal);
                return;
            }
        };
        // Another package or id in this dialog would be a second subscription in it (dialog
        // reuse, which RFC 6665 §4.5.2 discourages): not served.
        if asked.event != live.sub.event {
            reply_refusal(&req, &tx, &SubscribeRefusal::NoSubscription);
            return;
        }
        if Dialog::contact_target(&req).is_some_and(|t| !message::is_request_target(&t)) {
            let bad = SubscribeRefusal::BadDialog(DialogError::Bad("Contact"));
            reply_refusal(&req, &tx, &bad);
            return;
        }
        // SUBSCRIBE is a target refresh request (RFC 6665 §4.1.2.2); and NOTIFYs follow the
        // subscriber to where its refresh came from (a NAT that moved it, a new TCP
        // connection), as they go where its requests come from.
        live.sub.dialog.refresh_target(&req.headers);
        live.sub.dialog.peer = tx.peer().clone();
        let now = unix_now();
        live.sub.expires_at = now + u64::from(asked.expires);
        let headers = live.sub.ok_headers(now);
        let extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        reply(200, &extra);
        if asked.expires == 0 {
            tracing::debug!(watched = %wire(&live.sub.watched.to_string()), "presence: unsubscribed");
            self.end(&id, EndReason::Timeout);
        } else {
            // RFC 6665 §4.2.1.2: a refresh is answered with the state, at once.
            live.owed = true;
            let stored = live.sub.stored(now);
            self.write(Write::Subscription(stored));
            self.queue(&id);
        }
    }

    /// The answer to a NOTIFY (`None`: none came, Timer F).
    fn answered(&mut self, tx_id: u64, code: Option<u16>) {
        let Some(id) = self.tx_ids.remove(&tx_id) else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        let Some(live) = self.subs.get_mut(&id) else {
            return;
        };
        live.in_flight = None;
        if live.final_sent {
            self.forget(&id);
            return;
        }
        match code {
            Some(200..=299) => {}
            None => {
                self.stats.notify_failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    watched = %wire(&live.sub.watched.to_string()),
                    "presence: NOTIFY not answered, subscription removed"
                );
                self.forget(&id);
                return;
            }
            Some(c) if ends_the_usage(c) => {
                self.stats.notify_failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    watched = %wire(&live.sub.watched.to_string()),
                    code = c,
                    "presence: NOTIFY refused, subscription removed"
                );
                self.forget(&id);
                return;
            }
            // Anything else (a 500 for a CSeq it did not expect, a 503): kept, and the next
            // change is sent as usual.
            Some(c) => {
                self.stats.notify_failures.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(code = c, "presence: NOTIFY answered with an error");
            }
        }
        if live.owed {
            self.queue(&id);
        }
    }

    /// How often this node says again what its calls light.
    fn announce_interval(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.cfg.get().presence.announce_interval_s.max(1),
        ))
    }

    /// Tells the other nodes what the lamps table says they are owed (nothing without
    /// them: the table notes nothing then). Through the store's writer queue: never waits.
    fn announce(&self) {
        let news = self.shared.lock().take_outbox();
        if news.is_empty() {
            return;
        }
        let Some(store) = &self.store else {
            return;
        };
        // Believed for three intervals: one lost message does not put a lamp out.
        let ttl = self.announce_interval() * 3;
        for body in state::encode(&news, ttl) {
            store.announce(body);
        }
    }

    /// Asks every node to say again what its calls light, and says ours (they may have
    /// missed it too).
    fn ask_nodes(&self) {
        if let Some(store) = &self.store {
            store.announce(state::encode_ask());
        }
        self.shared.lock().announce_own_calls();
        self.announce();
    }

    /// A message from node `node`: into the lamps table; the watchers of what changed (or
    /// was reset) are told.
    fn hear(&mut self, node: &str, body: &str) {
        let Some(message) = state::parse(body) else {
            tracing::debug!(node = %wire(node), "presence: an unreadable message from a node ignored");
            return;
        };
        let heard = self.shared.lock().hear(node, message, Instant::now());
        if heard.refused > 0 {
            tracing::warn!(node = %wire(node), refused = heard.refused, "presence: lamps of a node not kept");
        }
        if !heard.reset.is_empty() {
            let mut refresh = self
                .shared
                .refresh
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            refresh.extend(heard.reset);
        }
        self.on_changes();
    }

    /// The lamps set as a whole, read again from the store after messages may have been
    /// missed (a change made meanwhile on another node). Messages heard during the read wait
    /// in the channel and are applied after it, so the newest still wins.
    async fn reload_set(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || super::stored_lamps(&store)).await;
        if let Ok(Some(stored)) = read {
            self.shared.lock().set_all(stored);
            self.on_changes();
        }
    }

    /// Forgets the other nodes' call lamps not said again in time.
    fn expire_nodes(&mut self, now: Instant) {
        self.shared.lock().expire(now);
        self.on_changes();
    }

    /// Lamps changed (or were reset): every watcher of each is owed a NOTIFY, and the other
    /// nodes what concerns them.
    fn on_changes(&mut self) {
        self.announce();
        let changed = self.shared.take_owed();
        for pid in changed {
            let Some(ids) = self.watchers.get(&pid) else {
                continue;
            };
            let ids: Vec<DialogId> = ids.iter().cloned().collect();
            for id in ids {
                if let Some(live) = self.subs.get_mut(&id) {
                    live.owed = true;
                }
                self.queue(&id);
            }
        }
    }

    /// Ends the subscriptions that expired (RFC 6665 §4.2.2: a last NOTIFY, reason timeout).
    fn sweep(&mut self, now: u64) {
        let expired: Vec<DialogId> = self
            .subs
            .iter()
            .filter(|(_, l)| l.ending.is_none() && l.sub.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::debug!("presence: subscription expired");
            self.end(&id, EndReason::Timeout);
        }
    }

    /// Starts ending a subscription: out of the dialog table, the watchers and the store at
    /// once; it stays only until its last NOTIFY is answered.
    fn end(&mut self, id: &DialogId, reason: EndReason) {
        let Some(live) = self.subs.get_mut(id) else {
            return;
        };
        if live.ending.is_some() {
            return;
        }
        live.ending = Some(reason);
        live.owed = true;
        let (watched, watcher) = (live.sub.watched.clone(), live.sub.watcher.clone());
        self.unlink(id, &watched, &watcher);
        self.queue(id);
    }

    /// Drops a subscription without a word (its subscriber is gone, or its last NOTIFY was
    /// answered).
    fn forget(&mut self, id: &DialogId) {
        let Some(live) = self.subs.remove(id) else {
            return;
        };
        if live.ending.is_none() {
            self.unlink(id, &live.sub.watched, &live.sub.watcher);
        }
        self.stats
            .subscriptions
            .store(self.subs.len(), Ordering::Relaxed);
    }

    /// Out of the indexes, the endpoint's dialogs and the store.
    fn unlink(&mut self, id: &DialogId, watched: &PresenceId, watcher: &Watcher) {
        if let Some(set) = self.watchers.get_mut(watched) {
            set.remove(id);
            if set.is_empty() {
                self.watchers.remove(watched);
            }
        }
        if let Some(n) = self.per_device.get_mut(watcher) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_device.remove(watcher);
            }
        }
        self.endpoint.unregister_dialog(id.clone());
        self.write(Write::EndSubscription {
            call_id: id.call_id.clone(),
            local_tag: id.local_tag.clone(),
        });
    }

    /// Puts a subscription owed a NOTIFY in line, unless it is there or has one in flight
    /// (it is put in line again when that one is answered).
    fn queue(&mut self, id: &DialogId) {
        if let Some(live) = self.subs.get_mut(id) {
            if live.owed && !live.queued && live.in_flight.is_none() && !live.final_sent {
                live.queued = true;
                self.ready.push_back(id.clone());
            }
        }
    }

    /// Sends the NOTIFYs in line, while fewer than `max_notifies_in_flight` are pending.
    fn pump(&mut self) {
        let max = self.cfg.get().presence.max_notifies_in_flight as usize;
        let now = unix_now();
        while self.in_flight < max {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(live) = self.subs.get_mut(&id) else {
                continue;
            };
            live.queued = false;
            if !live.owed || live.in_flight.is_some() || live.final_sent {
                continue;
            }
            let lamp = self.shared.lock().get(&live.sub.watched);
            let req = live.sub.notify(&lamp, now, live.ending);
            live.owed = false;
            live.final_sent = live.ending.is_some();
            let tx_id = self
                .endpoint
                .send_request(&id.call_id, req, Some(self.events.clone()));
            live.in_flight = Some(tx_id);
            self.tx_ids.insert(tx_id, id.clone());
            self.in_flight += 1;
            self.stats.notifies.fetch_add(1, Ordering::Relaxed);
            // Its CSeq and version moved: the row must say so, or a restart would go back.
            if live.ending.is_none() {
                let stored = live.sub.stored(now);
                self.write(Write::Subscription(stored));
            }
        }
    }

    fn persist(&self, sub: &Subscription, now: u64) {
        self.write(Write::Subscription(sub.stored(now)));
    }

    fn write(&self, w: Write) {
        if let Some(s) = &self.store {
            s.write(w);
        }
    }
}
