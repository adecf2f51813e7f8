//! A shard: its streams by phase slot, the commands applied to them, and its thread.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::grid::Grid;
use super::pacer::ShardStats;
use super::stream::{Playing, Stream, TickTotals, HEADER_BYTES, PAYLOAD_BYTES};
use super::{Command, PlayResult};

/// When a shard is this far behind, it jumps to the present instead of bursting the backlog.
const MAX_BEHIND: Duration = Duration::from_millis(60);

/// A new stream joins the fullest slot that holds fewer than this many, else the least loaded
/// one. The thread wakes only for slots with streams, so packing them into a few slots saves
/// wake-ups (thread switches) at moderate loads; 64 packets are a fraction of a millisecond
/// of `sendto`s, far inside the 2 ms lateness budget. Beyond 64 per slot the streams spread
/// evenly as before.
const SLOT_FILL: usize = 64;

struct Shard {
    /// Streams per phase slot.
    slots: Vec<Vec<Stream>>,
    /// Stream id -> (slot, index in that slot's Vec).
    index: HashMap<u64, (usize, usize)>,
    stats: Arc<ShardStats>,
}

impl Shard {
    fn new(slots: u32, stats: Arc<ShardStats>) -> Shard {
        Shard {
            slots: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            index: HashMap::new(),
            stats,
        }
    }

    fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn stream(&mut self, id: u64) -> Option<&mut Stream> {
        let (slot, i) = *self.index.get(&id)?;
        self.slots.get_mut(slot)?.get_mut(i)
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add(n) => {
                let id = n.id;
                self.remove(id);
                let slot = self.slot_for_new();
                if let Some(list) = self.slots.get_mut(slot) {
                    list.push(Stream::from_new(*n));
                    self.index.insert(id, (slot, list.len() - 1));
                }
            }
            Command::Remove(id) => self.remove(id),
            Command::SetCodec {
                id,
                payload_type,
                silence,
                payload,
            } => {
                if let Some(s) = self.stream(id) {
                    s.payload_type = payload_type & 0x7f;
                    s.silence = silence;
                    if let (Some(play), Some(payload)) = (s.playing.as_mut(), payload) {
                        play.offset = play.offset.min(payload.len());
                        play.payload = payload;
                    }
                }
            }
            Command::Play { id, payload, done } => match self.stream(id) {
                Some(s) if !payload.is_empty() => {
                    // Replacing a running play drops it, which answers Stopped.
                    s.playing = Some(Playing {
                        payload,
                        offset: 0,
                        done: Some(done),
                    });
                }
                Some(_) => {
                    let _ = done.send(PlayResult::Finished);
                }
                None => {
                    let _ = done.send(PlayResult::Stopped);
                }
            },
            Command::Stop(id) => {
                if let Some(s) = self.stream(id) {
                    s.playing = None;
                }
            }
        }
        self.stats
            .streams
            .store(self.index.len(), Ordering::Relaxed);
    }

    /// The fullest slot with streams and room (fewer than [`SLOT_FILL`]), else the least
    /// loaded one.
    fn slot_for_new(&self) -> usize {
        let slots = self.slots.iter().enumerate();
        slots
            .clone()
            .filter(|(_, v)| !v.is_empty() && v.len() < SLOT_FILL)
            .max_by_key(|(_, v)| v.len())
            .or_else(|| slots.min_by_key(|(_, v)| v.len()))
            .map_or(0, |(i, _)| i)
    }

    /// The first subtick from `k` on whose slot holds streams (`k` itself when none does).
    fn next_busy(&self, grid: &Grid, k: u64) -> u64 {
        (0..grid.slots)
            .map(|d| k.saturating_add(d))
            .find(|&j| {
                self.slots
                    .get((j % grid.slots) as usize)
                    .is_some_and(|v| !v.is_empty())
            })
            .unwrap_or(k)
    }

    fn remove(&mut self, id: u64) {
        let Some((slot, i)) = self.index.remove(&id) else {
            return;
        };
        let Some(list) = self.slots.get_mut(slot) else {
            return;
        };
        if i < list.len() {
            drop(list.swap_remove(i));
            if let Some(moved) = list.get(i) {
                self.index.insert(moved.id, (slot, i));
            }
        }
    }

    fn run_subtick(&mut self, grid: &Grid, k: u64, buf: &mut [u8; HEADER_BYTES + PAYLOAD_BYTES]) {
        let slot = (k % grid.slots) as usize;
        let tick = k / grid.slots;
        let due = grid.due(k);
        let mut totals = TickTotals::default();
        if let Some(list) = self.slots.get_mut(slot) {
            if !list.is_empty() {
                self.stats
                    .subtick_late(Instant::now().saturating_duration_since(due));
            }
            for s in list.iter_mut() {
                s.on_tick(tick, due, buf, &mut totals);
            }
        }
        if totals.sent + totals.errors > 0 {
            let st = &self.stats;
            st.packets_sent.fetch_add(totals.sent, Ordering::Relaxed);
            st.send_errors.fetch_add(totals.errors, Ordering::Relaxed);
            st.late_packets.fetch_add(totals.late, Ordering::Relaxed);
            st.max_lateness_ns
                .fetch_max(totals.max_late_ns, Ordering::Relaxed);
        }
    }
}

/// A panic while handling one command or one subtick costs that command or tick (counted and
/// logged by the panic hook), never the pacer thread, whose death would silence every stream
/// on it.
fn guarded(f: impl FnOnce()) {
    let _ = crate::health::catch(f);
}

/// A shard's thread: sleep until the next subtick with streams, apply the commands queued
/// meanwhile, send, repeat.
pub(super) fn run_shard(rx: Receiver<Command>, stats: Arc<ShardStats>, slots: u32) {
    let grid = Grid::new(Instant::now(), slots);
    let mut shard = Shard::new(slots, stats.clone());
    let mut buf = [0u8; HEADER_BYTES + PAYLOAD_BYTES];
    let mut k: u64 = 0;
    loop {
        loop {
            match rx.try_recv() {
                Ok(cmd) => guarded(|| shard.handle(cmd)),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if shard.is_empty() {
            // Nothing to pace: block until a command, then rejoin the grid at the next subtick.
            match rx.recv() {
                Ok(cmd) => guarded(|| shard.handle(cmd)),
                Err(_) => return,
            }
            k = grid.subtick_at(Instant::now()).saturating_add(1);
            continue;
        }
        // Empty slots are passed over: no wake-up without a packet due. Recomputed after every
        // sleep, since the commands applied since may have filled an earlier slot.
        let next = shard.next_busy(&grid, k);
        let now = Instant::now();
        let due = grid.due(next);
        if now < due {
            // Commands wait for the subtick (at most 20 ms, and never past the next packet of
            // the stream they are for, whose slot wakes the thread): a command waking the
            // thread cost a futex wake in the sender and a switch here, several per call.
            std::thread::sleep(due - now);
            continue;
        }
        if now - due > MAX_BEHIND {
            // Far behind (the machine stalled): skip to the present rather than burst.
            let current = grid.subtick_at(now);
            stats
                .skipped_slots
                .fetch_add(current.saturating_sub(next), Ordering::Relaxed);
            k = current.max(next);
            continue;
        }
        guarded(|| shard.run_subtick(&grid, next, &mut buf));
        k = next.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::player::{NewStream, SendClock, SendGate, StreamStats};
    use std::net::{SocketAddr, UdpSocket};
    use tokio::sync::oneshot;

    /// Always open towards one address (the gate rules are the session's, tested there).
    struct Open(SocketAddr);

    impl SendGate for Open {
        fn check(
            &self,
            _: std::time::Instant,
            _: &mut crate::media::player::TargetCache,
        ) -> Result<SocketAddr, crate::media::player::Blocked> {
            Ok(self.0)
        }
    }

    fn stream(id: u64, socket: Arc<UdpSocket>, remote: SocketAddr) -> Box<NewStream> {
        Box::new(NewStream {
            id,
            socket,
            guard: Arc::new(()),
            gate: Arc::new(Open(remote)),
            payload_type: 8,
            silence: 0xD5,
            ssrc: 0x1234_5678,
            clock: Arc::new(SendClock::new(0xFFFF, 1000)),
            stats: Arc::new(StreamStats::default()),
            srtp: Arc::default(),
        })
    }

    #[test]
    fn shard_builds_packets_pads_and_finishes() {
        let rx_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx_sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let tx_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let mut shard = Shard::new(4, Arc::new(ShardStats::default()));
        shard.handle(Command::Add(stream(
            7,
            tx_sock,
            rx_sock.local_addr().unwrap(),
        )));
        let (slot, _) = shard.index[&7];
        let (done_tx, mut done_rx) = oneshot::channel();
        let payload: Arc<[u8]> = (0..200u8).collect::<Vec<u8>>().into();
        shard.handle(Command::Play {
            id: 7,
            payload,
            done: done_tx,
        });
        let grid = Grid::new(Instant::now(), 4);
        let mut buf = [0u8; 172];
        // Tick 5 in this stream's slot, then tick 6.
        shard.run_subtick(&grid, 5 * 4 + slot as u64, &mut buf);
        assert!(done_rx.try_recv().is_err());
        shard.run_subtick(&grid, 6 * 4 + slot as u64, &mut buf);
        assert_eq!(done_rx.try_recv(), Ok(PlayResult::Finished));
        let mut got = [0u8; 400];
        let n = rx_sock.recv(&mut got).unwrap();
        assert_eq!(n, 172);
        let p = rtp_rs::RtpReader::new(&got[..n]).unwrap();
        assert!(p.mark());
        assert_eq!(p.payload_type(), 8);
        assert_eq!(u16::from(p.sequence_number()), 0xFFFF);
        assert_eq!(p.timestamp(), 1000 + 5 * 160);
        assert_eq!(p.ssrc(), 0x1234_5678);
        assert_eq!(p.payload(), &(0..160u8).collect::<Vec<u8>>()[..]);
        let n = rx_sock.recv(&mut got).unwrap();
        let p = rtp_rs::RtpReader::new(&got[..n]).unwrap();
        assert!(!p.mark());
        assert_eq!(u16::from(p.sequence_number()), 0);
        assert_eq!(p.timestamp(), 1000 + 6 * 160);
        let mut want: Vec<u8> = (160..200u8).collect();
        want.resize(160, 0xD5);
        assert_eq!(p.payload(), &want[..]);
        assert_eq!(shard.stats.packets_sent.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_late_subtick_sets_the_standing_lateness() {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = sock.local_addr().unwrap();
        let stats = Arc::new(ShardStats::default());
        let mut shard = Shard::new(1, stats.clone());
        let mut buf = [0u8; 172];
        // An empty shard's subticks say nothing.
        let grid = Grid::new(Instant::now() - Duration::from_millis(100), 1);
        shard.run_subtick(&grid, 0, &mut buf);
        assert_eq!(stats.standing_lateness.load(Ordering::Relaxed), 0);
        shard.handle(Command::Add(stream(1, sock, to)));
        shard.run_subtick(&grid, 0, &mut buf);
        shard.run_subtick(&grid, 4, &mut buf);
        // The least of the two: subtick 4 was due 80 ms after subtick 0.
        let least = Duration::from_nanos(stats.standing_lateness.load(Ordering::Relaxed) - 1);
        assert!(least >= Duration::from_millis(20), "{least:?}");
        assert!(least < Duration::from_millis(90), "{least:?}");
    }

    #[test]
    fn streams_pack_into_few_slots_and_empty_slots_are_passed_over() {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = sock.local_addr().unwrap();
        let mut shard = Shard::new(20, Arc::new(ShardStats::default()));
        let grid = Grid::new(Instant::now(), 20);
        let n = SLOT_FILL as u64 + 1;
        for id in 1..=n {
            shard.handle(Command::Add(stream(id, sock.clone(), to)));
        }
        // The first SLOT_FILL share one slot; the next one opens another.
        let first = shard.index[&1].0;
        assert!((1..n).all(|id| shard.index[&id].0 == first));
        let second = shard.index[&n].0;
        assert_ne!(second, first);
        let busy = [first.min(second) as u64, first.max(second) as u64];
        // From any subtick, the next one to wake for is one of the two busy slots.
        for k in 0..40u64 {
            let next = shard.next_busy(&grid, k);
            assert!(next >= k && next < k + 20, "{k} -> {next}");
            assert!(busy.contains(&(next % 20)), "{k} -> {next}");
            let expect = (k..).find(|j| busy.contains(&(j % 20))).unwrap();
            assert_eq!(next, expect);
        }
        // Once the second slot empties, a new stream goes back into the first (it has room
        // again after a removal) rather than into an empty slot.
        shard.handle(Command::Remove(n));
        shard.handle(Command::Remove(1));
        shard.handle(Command::Add(stream(n + 1, sock.clone(), to)));
        assert_eq!(shard.index[&(n + 1)].0, first);
        assert_eq!(shard.next_busy(&grid, first as u64 + 1), first as u64 + 20);
    }

    #[test]
    fn shard_remove_keeps_index_consistent() {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let to = sock.local_addr().unwrap();
        let mut shard = Shard::new(1, Arc::new(ShardStats::default()));
        for id in 1..=3 {
            shard.handle(Command::Add(stream(id, sock.clone(), to)));
        }
        shard.handle(Command::Remove(1));
        assert_eq!(shard.index.len(), 2);
        for id in [2, 3] {
            assert_eq!(shard.stream(id).map(|s| s.id), Some(id));
        }
        assert!(shard.stream(1).is_none());
        assert_eq!(shard.stats.streams.load(Ordering::Relaxed), 2);
        // A play on a removed stream answers Stopped at once.
        let (tx, mut rx) = oneshot::channel();
        shard.handle(Command::Play {
            id: 1,
            payload: Arc::from(&[1u8][..]),
            done: tx,
        });
        assert_eq!(rx.try_recv(), Ok(PlayResult::Stopped));
    }

    #[test]
    fn codec_switch_carries_on_at_the_same_offset() {
        let rx_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx_sock
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let tx_sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let mut shard = Shard::new(1, Arc::new(ShardStats::default()));
        shard.handle(Command::Add(stream(
            3,
            tx_sock,
            rx_sock.local_addr().unwrap(),
        )));
        let (done_tx, _done_rx) = oneshot::channel();
        shard.handle(Command::Play {
            id: 3,
            payload: Arc::from(&[1u8; 480][..]),
            done: done_tx,
        });
        let grid = Grid::new(Instant::now(), 1);
        let mut buf = [0u8; 172];
        shard.run_subtick(&grid, 1, &mut buf);
        // The same audio in another codec: two packets left, sent as the new one.
        let mut other = vec![2u8; 160];
        other.extend_from_slice(&[3u8; 320]);
        shard.handle(Command::SetCodec {
            id: 3,
            payload_type: 0,
            silence: 0xFF,
            payload: Some(other.into()),
        });
        shard.run_subtick(&grid, 2, &mut buf);
        let mut got = [0u8; 400];
        for (pt, byte) in [(8, 1u8), (0, 3u8)] {
            let n = rx_sock.recv(&mut got).unwrap();
            let p = rtp_rs::RtpReader::new(&got[..n]).unwrap();
            assert_eq!(p.payload_type(), pt);
            assert!(p.payload().iter().all(|b| *b == byte), "PT {pt}");
        }
    }
}
