//! The trust rules of the freshness guarantee, as pure functions of the tick, the writer and the
//! time: which ticks count, and when a cache may be served. [`super::ChannelHealth`] holds the
//! state they are applied to; `docs/design.md` explains why they keep the bound.
//!
//! A tick is only as good as the heartbeat item it came from, and anyone with write access to a
//! table can write one. So a tick counts only when
//! - its writer is one of the configured heartbeat writers (`HEARTBEAT_WRITERS`): an item
//!   written under any other name vouches for nothing, and
//! - it was not written further in the future than the skew tolerance `T`
//!   (`TICK_FUTURE_TOLERANCE_MS`): a future time would make every later tick look late and hide
//!   a backlog or a gap until the wall clock caught up with it.
//!
//! And the tolerance is charged against the bound: a tick vouches only while its lag plus `T` is
//! within `B`. A writer whose clock runs ahead by up to `T` then still cannot extend trust past
//! `B` of real time, and one whose clock runs behind only makes its ticks look older (bypass
//! sooner, never trust longer).

use std::time::Duration;

/// The tolerance of a writer's clock running ahead of a task's, unless configured: AWS's time
/// sync keeps EC2, Lambda and Fargate clocks within a millisecond or so, so half a second is
/// hundreds of times the skew expected there, and costs only that much of the bound.
pub const DEFAULT_FUTURE_TOLERANCE: Duration = Duration::from_millis(500);

/// Why a tick was refused (the `reason` label of `staleless_ticks_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickRejection {
    /// Its writer is not a configured heartbeat writer (or the tick names none).
    UnknownWriter,
    /// It was written further in the future than the tolerance.
    FromTheFuture,
}

impl TickRejection {
    /// The metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownWriter => "unknown_writer",
            Self::FromTheFuture => "future",
        }
    }
}

/// The rules of one task: its bound, its writers and the skew it tolerates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRules {
    /// The staleness bound `B`.
    bound: Duration,
    /// How far ahead of this task's clock a tick may be written; at most half the bound.
    future_tolerance: Duration,
    /// The heartbeat writers whose ticks count, each with its own state.
    writers: Vec<String>,
}

impl TrustRules {
    /// Rules for `bound`, trusting ticks of `writers` written at most `future_tolerance` ahead
    /// (capped at half the bound, so a tick always has room to vouch). No writer is the
    /// default one.
    #[must_use]
    pub fn new(bound: Duration, future_tolerance: Duration, writers: &[String]) -> Self {
        let mut writers: Vec<String> = writers
            .iter()
            .map(|writer| writer.trim().to_owned())
            .filter(|writer| !writer.is_empty())
            .collect();
        writers.dedup();
        if writers.is_empty() {
            writers.push(staleless_protocol::keys::DEFAULT_HEARTBEAT_WRITER.to_owned());
        }
        Self {
            bound,
            future_tolerance: future_tolerance.min(bound / 2),
            writers,
        }
    }

    /// The default writer and tolerance.
    #[must_use]
    pub fn with_bound(bound: Duration) -> Self {
        Self::new(bound, DEFAULT_FUTURE_TOLERANCE, &[])
    }

    /// The bound `B`.
    #[must_use]
    pub const fn bound(&self) -> Duration {
        self.bound
    }

    /// The tolerance `T` in effect.
    #[must_use]
    pub const fn future_tolerance(&self) -> Duration {
        self.future_tolerance
    }

    /// The configured writers, in slot order.
    #[must_use]
    pub fn writers(&self) -> &[String] {
        &self.writers
    }

    /// The state slot of a tick written by `writer` at `written_ms` (writer's clock, Unix ms)
    /// and arriving at `now_ms` (this task's clock), or why it does not count.
    ///
    /// # Errors
    /// [`TickRejection`].
    pub fn admit(&self, writer: Option<&str>, written_ms: i64, now_ms: i64) -> Result<usize, TickRejection> {
        let slot = writer
            .and_then(|writer| self.writers.iter().position(|known| known == writer))
            .ok_or(TickRejection::UnknownWriter)?;
        if written_ms.saturating_sub(now_ms) > millis(self.future_tolerance) {
            return Err(TickRejection::FromTheFuture);
        }
        Ok(slot)
    }

    /// Whether one writer's ticks vouch for a cache at `now_ms`: its newest admitted tick was
    /// written at `newest_written_ms` and one arrived `since_arrival` ago. Both must be recent:
    /// the write time (plus the tolerance) catches a backlog, the arrival (this task's monotonic
    /// clock) a silent path or a writer's clock running ahead.
    #[must_use]
    pub fn vouches(&self, newest_written_ms: Option<i64>, since_arrival: Option<Duration>, now_ms: i64) -> bool {
        let lag_ok = newest_written_ms.is_some_and(|written| {
            now_ms
                .saturating_sub(written)
                .saturating_add(millis(self.future_tolerance))
                <= millis(self.bound)
        });
        lag_ok && since_arrival.is_some_and(|gap| gap <= self.bound)
    }

    /// How far past the bound one writer's ticks are at `now_ms` (zero while they vouch).
    #[must_use]
    pub fn beyond_bound(
        &self,
        newest_written_ms: Option<i64>,
        since_arrival: Option<Duration>,
        now_ms: i64,
    ) -> Duration {
        if self.vouches(newest_written_ms, since_arrival, now_ms) {
            return Duration::ZERO;
        }
        let lag = newest_written_ms.map_or(0, |written| {
            now_ms
                .saturating_sub(written)
                .saturating_add(millis(self.future_tolerance))
        });
        let lag = Duration::from_millis(u64::try_from(lag).unwrap_or(0));
        lag.max(since_arrival.unwrap_or(Duration::ZERO))
            .saturating_sub(self.bound)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a tick written at `written_ms` shows that heartbeats of its writer went missing since
/// that writer's newest tick before it (written at `previous_ms`): a gap over one and a half of
/// the writer's `interval_ms`. The path then dropped messages for at least an interval —
/// invalidations may be among them — even if trust never lapsed. Unknown values say nothing.
///
/// Both times are the same writer's: the state is per writer, so another writer's clock (or an
/// item forged under another name) can neither hide a gap nor fake one.
#[must_use]
pub fn heartbeats_missed(previous_ms: Option<i64>, written_ms: i64, interval_ms: Option<u64>) -> bool {
    match (previous_ms, interval_ms.and_then(|ms| i64::try_from(ms).ok())) {
        (Some(previous), Some(interval)) if interval > 0 => {
            written_ms.saturating_sub(previous) > interval.saturating_mul(3) / 2
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn rules() -> TrustRules {
        TrustRules::new(
            Duration::from_secs(15),
            Duration::from_millis(500),
            &["staleless".to_owned(), "backup".to_owned()],
        )
    }

    #[test]
    fn only_configured_writers_count_each_in_its_own_slot() {
        let rules = rules();
        assert_eq!(rules.admit(Some("staleless"), NOW, NOW), Ok(0));
        assert_eq!(rules.admit(Some("backup"), NOW, NOW), Ok(1));
        assert_eq!(rules.admit(Some("evil"), NOW, NOW), Err(TickRejection::UnknownWriter));
        assert_eq!(rules.admit(None, NOW, NOW), Err(TickRejection::UnknownWriter));
        assert_eq!(TrustRules::with_bound(Duration::from_secs(15)).writers(), ["staleless"]);
    }

    #[test]
    fn a_tick_from_further_ahead_than_the_tolerance_is_refused() {
        let rules = rules();
        assert_eq!(rules.admit(Some("staleless"), NOW + 500, NOW), Ok(0));
        assert_eq!(
            rules.admit(Some("staleless"), NOW + 501, NOW),
            Err(TickRejection::FromTheFuture)
        );
        assert_eq!(
            rules.admit(Some("staleless"), NOW + 3_600_000, NOW),
            Err(TickRejection::FromTheFuture)
        );
        assert_eq!(
            rules.admit(Some("staleless"), i64::MAX, i64::MIN),
            Err(TickRejection::FromTheFuture)
        );
        assert_eq!(
            rules.admit(Some("staleless"), NOW - 3_600_000, NOW),
            Ok(0),
            "a late tick is admitted; it just vouches for nothing"
        );
    }

    #[test]
    fn the_tolerance_is_charged_against_the_bound() {
        let rules = rules();
        let arrived = Some(Duration::from_secs(1));
        assert!(rules.vouches(Some(NOW - 14_500), arrived, NOW));
        assert!(
            !rules.vouches(Some(NOW - 14_501), arrived, NOW),
            "14.5 s plus 0.5 s of tolerance is the bound"
        );
        assert!(rules.vouches(Some(NOW + 500), arrived, NOW));
        assert!(!rules.vouches(Some(NOW), Some(Duration::from_millis(15_001)), NOW));
        assert!(!rules.vouches(None, arrived, NOW));
        assert!(!rules.vouches(Some(NOW), None, NOW));
        assert_eq!(
            rules.beyond_bound(Some(NOW - 20_000), arrived, NOW),
            Duration::from_millis(5_500)
        );
        assert_eq!(rules.beyond_bound(Some(NOW), arrived, NOW), Duration::ZERO);
    }

    #[test]
    fn the_tolerance_never_takes_more_than_half_the_bound() {
        let rules = TrustRules::new(Duration::from_secs(2), Duration::from_secs(60), &[]);
        assert_eq!(rules.future_tolerance(), Duration::from_secs(1));
    }

    #[test]
    fn a_gap_of_more_than_one_and_a_half_intervals_means_heartbeats_went_missing() {
        assert!(!heartbeats_missed(None, 10_000, Some(5_000)), "the first tick");
        assert!(!heartbeats_missed(Some(5_000), 10_000, Some(5_000)), "the next beat");
        assert!(!heartbeats_missed(Some(5_000), 12_500, Some(5_000)), "a late beat");
        assert!(heartbeats_missed(Some(5_000), 15_000, Some(5_000)), "one beat missing");
        assert!(
            !heartbeats_missed(Some(15_000), 10_000, Some(5_000)),
            "an older tick arriving late"
        );
        assert!(
            !heartbeats_missed(Some(5_000), 60_000, None),
            "a writer that does not say its interval"
        );
        assert!(!heartbeats_missed(Some(5_000), 60_000, Some(0)));
    }
}
