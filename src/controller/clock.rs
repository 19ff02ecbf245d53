//! The controller's only source of "now". Production reads the system clock; tests inject a
//! [`FakeClock`] and move it across weeks, so restore windows and statutory deadlines can be
//! crossed in milliseconds without a single sleep.

use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt};
use jiff::{SignedDuration, Timestamp};

/// Where the controller reads the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Yields whenever the time jumps (a fake clock moved forward), so that every request is
    /// planned again at the new time: a requeue computed at the old time would otherwise only
    /// fire after the real delay. The system clock never jumps.
    fn jumps(&self) -> BoxStream<'static, ()> {
        stream::pending().boxed()
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that stands still until moved. Moving it (or [`FakeClock::tick`]) makes the
/// controller reconcile every request.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<Timestamp>,
    jumped: tokio::sync::watch::Sender<u64>,
}

impl FakeClock {
    pub fn new(start: Timestamp) -> Arc<Self> {
        Arc::new(FakeClock {
            now: Mutex::new(start),
            jumped: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Sets the time (backwards too) and wakes the controller.
    pub fn set(&self, at: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = at;
        self.tick();
    }

    /// Moves the time forward by `d` and wakes the controller.
    pub fn advance(&self, d: SignedDuration) {
        let at = self.now().checked_add(d).unwrap_or(Timestamp::MAX);
        self.set(at);
    }

    /// Wakes the controller without moving the time: every request is reconciled again (a
    /// forced resync).
    pub fn tick(&self) {
        self.jumped.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn jumps(&self) -> BoxStream<'static, ()> {
        let mut rx = self.jumped.subscribe();
        rx.mark_unchanged();
        stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_clock_moves_only_when_told_and_reports_jumps() {
        let start: Timestamp = "2024-01-31T12:00:00Z".parse().unwrap();
        let clock = FakeClock::new(start);
        let mut jumps = clock.jumps();
        assert_eq!(clock.now(), start);
        clock.advance(SignedDuration::from_hours(24 * 15));
        assert_eq!(clock.now(), "2024-02-15T12:00:00Z".parse().unwrap());
        tokio::time::timeout(std::time::Duration::from_secs(5), jumps.next())
            .await
            .expect("a jump is reported")
            .expect("stream open");
    }

    #[test]
    fn system_clock_is_close_to_now() {
        let d = SystemClock.now().duration_since(Timestamp::now()).abs();
        assert!(d < SignedDuration::from_secs(5));
    }
}
