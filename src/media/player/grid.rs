//! The timing of one shard: absolute due times of phase slots on a 20 ms grid.

use std::time::{Duration, Instant};

const PERIOD_NS: u64 = 20_000_000;

/// The pacing grid of one shard: subtick `k` is phase `k % slots` of packet tick `k / slots`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Grid {
    start: Instant,
    pub(super) slots: u64,
    slot_ns: u64,
}

impl Grid {
    pub(super) fn new(start: Instant, slots: u32) -> Grid {
        let slots = u64::from(slots.max(1));
        Grid {
            start,
            slots,
            slot_ns: PERIOD_NS / slots,
        }
    }

    /// Due time of subtick `k`; whole periods are added exactly so nothing drifts.
    pub(super) fn due(&self, k: u64) -> Instant {
        let ns = (k / self.slots)
            .saturating_mul(PERIOD_NS)
            .saturating_add((k % self.slots) * self.slot_ns);
        self.start + Duration::from_nanos(ns)
    }

    /// The latest subtick whose due time is not after `t`.
    pub(super) fn subtick_at(&self, t: Instant) -> u64 {
        let ns =
            u64::try_from(t.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        let tick = ns / PERIOD_NS;
        let slot = ((ns % PERIOD_NS) / self.slot_ns).min(self.slots - 1);
        tick.saturating_mul(self.slots).saturating_add(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_no_drift_and_finds_subticks() {
        let start = Instant::now();
        let g = Grid::new(start, 20);
        assert_eq!(g.due(0), start);
        assert_eq!(g.due(20), start + Duration::from_millis(20));
        assert_eq!(g.due(3 * 20 + 7), start + Duration::from_millis(67));
        // 60 s of packets: exactly 3000 periods, not an accumulated rounding error.
        assert_eq!(g.due(3000 * 20), start + Duration::from_secs(60));
        assert_eq!(g.subtick_at(start + Duration::from_micros(67_500)), 67);
        assert_eq!(g.subtick_at(start), 0);
        // Uneven split: 3 slots of 6.666 ms, periods still exact.
        let g3 = Grid::new(start, 3);
        assert_eq!(g3.due(3 * 50), start + Duration::from_secs(1));
        assert_eq!(
            g3.subtick_at(start + Duration::from_millis(19_999) / 1000),
            2
        );
    }
}
