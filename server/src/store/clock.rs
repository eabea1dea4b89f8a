//! The database's clock. Leases are written by one process and judged expired by another,
//! possibly on another machine: if each used its own clock, a machine whose clock is behind
//! would write leases that others see as long expired (and run its attempts again), one whose
//! clock is ahead would hold runs of a dead worker far past their lease. So every lease time
//! (claim, heartbeat, expiry check) is read from one clock, the database's.
//!
//! PostgreSQL: the offset between this process's clock and the server's `clock_timestamp()` is
//! measured at start (`Store::sync_clock`) and again every minute (`Store::run_clock`), and
//! [`DbClock::now`] is this process's clock corrected by it (to within half a round trip).
//! SQLite: the database is a file on this machine, every process that opens it shares the
//! machine's clock, which is then the database's.
use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, TimeDelta, Utc};

/// This process's view of the database's clock (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct DbClock {
    /// Database clock minus this process's clock, in microseconds.
    offset_us: Arc<AtomicI64>,
}

impl DbClock {
    /// The database's current time.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::microseconds(self.offset_us.load(Ordering::Relaxed))
    }

    /// Database clock minus this process's clock, as last measured.
    pub fn offset(&self) -> TimeDelta {
        TimeDelta::microseconds(self.offset_us.load(Ordering::Relaxed))
    }

    /// Records a measurement: the database read `db` between this process's `sent` and
    /// `received`.
    pub(super) fn record(&self, sent: DateTime<Utc>, db: DateTime<Utc>, received: DateTime<Utc>) {
        let midpoint = sent + (received - sent) / 2;
        let offset = (db - midpoint).num_microseconds().unwrap_or(0);
        let before = self.offset_us.swap(offset, Ordering::Relaxed);
        if (offset - before).abs() > 1_000_000 {
            tracing::info!(
                offset_ms = offset / 1000,
                "this machine's clock differs from the database's; leases use the database's"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};

    use super::DbClock;

    #[test]
    fn now_is_corrected_by_the_measured_offset() {
        let clock = DbClock::default();
        let sent = Utc::now();
        // The database answered 60 s ahead of us, after a 10 ms round trip.
        clock.record(
            sent,
            sent + TimeDelta::seconds(60) + TimeDelta::milliseconds(5),
            sent + TimeDelta::milliseconds(10),
        );
        assert_eq!(clock.offset(), TimeDelta::seconds(60));
        let gap = clock.now() - Utc::now();
        assert!(
            (gap - TimeDelta::seconds(60)).abs() < TimeDelta::seconds(1),
            "{gap:?}"
        );
    }
}
