//! The trust rules of the freshness guarantee, as pure functions of the tick, the writer and the
//! time: which ticks count, and when a cache may be served. [`crate::ChannelHealth`] holds the
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
//!
//! **Every shard.** A table's stream has one shard per partition, read on its own; a heartbeat
//! item proves only the shard its key hashes to. So a writer writes one item per open shard (a
//! *slot*), each tick names its slot and every slot the writer writes, and a [`WriterLedger`]
//! vouches only while every slot announced within the bound has a recent tick, and the writer
//! says its slots cover the stream. One stuck shard then stops trust within `B`, however many
//! others flow. A slot announced once is required for a whole bound after its last
//! announcement, so an announcement that names fewer slots (forged, or after a split) cannot
//! drop a stuck shard's slot sooner than its own ticks would have aged out.

use std::collections::HashMap;
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
    /// Its source is not one this task caches.
    UnknownSource,
}

impl TickRejection {
    /// The metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownWriter => "unknown_writer",
            Self::FromTheFuture => "future",
            Self::UnknownSource => "unknown_source",
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

    /// The last monotonic ms at which a slot's ticks vouch, computed at (`now_ms`, `mono_ms`):
    /// its newest tick (written at `written_ms`, writer's clock) must be younger than `B` less
    /// the tolerance, carried onto the monotonic clock now — the lag catches a backlog — and one
    /// must have arrived within `B` (at `arrived_mono_ms`) — the arrival catches a silent path or
    /// a writer's clock running ahead. Negative when that moment has passed.
    #[must_use]
    pub fn slot_deadline(&self, written_ms: i64, arrived_mono_ms: u64, now_ms: i64, mono_ms: u64) -> i128 {
        let lag_left = i128::from(written_ms) + i128::from(millis(self.bound))
            - i128::from(millis(self.future_tolerance))
            - i128::from(now_ms);
        let by_lag = i128::from(mono_ms) + lag_left;
        let by_arrival = i128::from(arrived_mono_ms) + i128::from(millis(self.bound));
        by_lag.min(by_arrival)
    }
}

/// What a tick says besides its writer and time: its slot, and the writer's announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotProof<'a> {
    /// The heartbeat item the tick came from.
    pub slot: &'a str,
    /// Every slot the writer writes into the table; `None` means only this one.
    pub slots: Option<&'a [String]>,
    /// Whether they cover every open shard of the stream.
    pub covered: bool,
}

impl<'a> SlotProof<'a> {
    /// The proof of a writer that predates slots: slot `0`, alone, covering the stream.
    pub const SINGLE: SlotProof<'static> = SlotProof {
        slot: staleless_protocol::keys::FIRST_HEARTBEAT_SLOT,
        slots: None,
        covered: true,
    };

    /// The proof of a tick's fields (absent ones as a writer that predates slots means them).
    #[must_use]
    pub fn of(slot: Option<&'a str>, slots: Option<&'a [String]>, covered: Option<bool>) -> Self {
        Self {
            slot: slot.unwrap_or(staleless_protocol::keys::FIRST_HEARTBEAT_SLOT),
            slots,
            covered: covered.unwrap_or(true),
        }
    }
}

/// The newest admitted tick of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotTicks {
    /// Its write time (writer's clock, Unix ms): only grows.
    newest_written_ms: i64,
    /// When a tick of it last arrived (this task's monotonic ms).
    arrived_mono_ms: u64,
}

/// One writer's admitted ticks of one source, per slot, and what it announced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterLedger {
    /// Per slot.
    slots: HashMap<String, SlotTicks>,
    /// Slot → when (monotonic ms) a tick last announced it.
    announced: HashMap<String, u64>,
    /// Write time of the newest tick, whose `covered` flag stands.
    newest_written_ms: Option<i64>,
    /// Whether the newest tick said the slots cover the stream.
    covered: bool,
}

impl WriterLedger {
    /// The newest write time of `slot` before now: what a gap of that slot is measured against.
    #[must_use]
    pub fn previous_ms(&self, slot: &str) -> Option<i64> {
        self.slots.get(slot).map(|ticks| ticks.newest_written_ms)
    }

    /// The newest write time over every slot.
    #[must_use]
    pub fn newest_written_ms(&self) -> Option<i64> {
        self.slots.values().map(|ticks| ticks.newest_written_ms).max()
    }

    /// When a tick of any slot last arrived (monotonic ms).
    #[must_use]
    pub fn last_arrival_mono_ms(&self) -> Option<u64> {
        self.slots.values().map(|ticks| ticks.arrived_mono_ms).max()
    }

    /// Records an admitted tick written at `written_ms`, arriving at `mono_ms`.
    pub fn record(&mut self, proof: &SlotProof<'_>, written_ms: i64, mono_ms: u64) {
        let ticks = self.slots.entry(proof.slot.to_owned()).or_insert(SlotTicks {
            newest_written_ms: written_ms,
            arrived_mono_ms: mono_ms,
        });
        // An older tick arriving late (at-least-once delivery reorders) proves the path works
        // now, not that later changes were sent: the write time only grows.
        ticks.newest_written_ms = ticks.newest_written_ms.max(written_ms);
        ticks.arrived_mono_ms = mono_ms;
        // Only a covering announcement sets what is required: the candidates a writer tries
        // while it looks for a new shard's slot (it says `covered: false` meanwhile) must not
        // stay required after it settles on one.
        if proof.covered {
            let own = [proof.slot.to_owned()];
            for slot in proof.slots.unwrap_or(&own).iter().chain(&own) {
                self.announced.insert(slot.clone(), mono_ms);
            }
        }
        if self.newest_written_ms.is_none_or(|newest| written_ms >= newest) {
            self.newest_written_ms = Some(written_ms);
            self.covered = proof.covered;
        }
    }

    /// The last monotonic ms at which this writer vouches, computed at (`now_ms`, `mono_ms`):
    /// every slot announced within the bound must have a tick written within `B` less the
    /// tolerance and arrived within `B`; `None` when it vouches for nothing (no slot, a slot
    /// without a tick, or not covering the stream). Conservative as time passes: a slot that
    /// stops being required later still counts until the next tick recomputes.
    #[must_use]
    pub fn vouches_until(&self, rules: &TrustRules, now_ms: i64, mono_ms: u64) -> Option<u64> {
        if !self.covered {
            return None;
        }
        let bound = u64::try_from(rules.bound.as_millis()).unwrap_or(u64::MAX);
        let mut until: Option<u64> = None;
        for (slot, announced) in &self.announced {
            if mono_ms.saturating_sub(*announced) > bound {
                continue;
            }
            let ticks = self.slots.get(slot)?;
            let slot_until = rules.slot_deadline(ticks.newest_written_ms, ticks.arrived_mono_ms, now_ms, mono_ms);
            if slot_until < 0 {
                return None;
            }
            let slot_until = u64::try_from(slot_until).unwrap_or(u64::MAX);
            until = Some(until.map_or(slot_until, |until| until.min(slot_until)));
        }
        until.filter(|until| *until >= mono_ms)
    }

    /// The slots required now, sorted, each with its newest write time and arrival (monotonic
    /// ms), for the operators' report.
    #[must_use]
    pub fn required_slots(&self, rules: &TrustRules, mono_ms: u64) -> Vec<(String, Option<(i64, u64)>)> {
        let bound = u64::try_from(rules.bound.as_millis()).unwrap_or(u64::MAX);
        let mut slots: Vec<(String, Option<(i64, u64)>)> = self
            .announced
            .iter()
            .filter(|(_, announced)| mono_ms.saturating_sub(**announced) <= bound)
            .map(|(slot, _)| {
                let ticks = self
                    .slots
                    .get(slot)
                    .map(|ticks| (ticks.newest_written_ms, ticks.arrived_mono_ms));
                (slot.clone(), ticks)
            })
            .collect();
        slots.sort();
        slots
    }

    /// Whether the newest tick said the slots cover the stream.
    #[must_use]
    pub const fn covered(&self) -> bool {
        self.covered
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
        // Written now, arrived now: vouches for B less T.
        assert_eq!(rules.slot_deadline(NOW, 0, NOW, 0), 14_500);
        // Written 14.5 s ago, arrived a second ago: its time is up now.
        assert_eq!(rules.slot_deadline(NOW - 14_500, 0, NOW, 1_000), 1_000);
        assert!(rules.slot_deadline(NOW - 14_501, 0, NOW, 1_000) < 1_000);
        // Written half a second ahead (the tolerance): vouches for the whole bound.
        assert_eq!(rules.slot_deadline(NOW + 500, 0, NOW, 0), 15_000);
        // Arrived 15 s ago: the arrival decides, whatever the write time says.
        assert_eq!(rules.slot_deadline(NOW, 0, NOW, 15_001), 15_000);
        assert!(
            rules.slot_deadline(i64::MIN, 0, i64::MAX, u64::MAX) < i128::from(u64::MAX),
            "extremes never overflow into trust"
        );
    }

    #[test]
    fn the_tolerance_never_takes_more_than_half_the_bound() {
        let rules = TrustRules::new(Duration::from_secs(2), Duration::from_secs(60), &[]);
        assert_eq!(rules.future_tolerance(), Duration::from_secs(1));
    }

    fn proof<'a>(slot: &'a str, slots: &'a [String], covered: bool) -> SlotProof<'a> {
        SlotProof {
            slot,
            slots: Some(slots),
            covered,
        }
    }

    #[test]
    fn a_writer_vouches_only_while_every_announced_slot_is_fresh() {
        let rules = rules();
        let slots: Vec<String> = ["0", "1", "2", "3"].map(str::to_owned).to_vec();
        let mut ledger = WriterLedger::default();
        for slot in ["0", "1", "2"] {
            ledger.record(&proof(slot, &slots, true), NOW, 0);
        }
        assert_eq!(ledger.vouches_until(&rules, NOW, 0), None, "slot 3 has no tick yet");
        ledger.record(&proof("3", &slots, true), NOW, 0);
        assert_eq!(ledger.vouches_until(&rules, NOW, 0), Some(14_500), "B less T");
        // Slots 0-2 keep beating; slot 3's shard is stuck: trust ends with slot 3's last tick.
        for second in 1..=20u64 {
            let now = NOW + i64::try_from(second * 1_000).expect("small");
            for slot in ["0", "1", "2"] {
                ledger.record(&proof(slot, &slots, true), now, second * 1_000);
            }
        }
        assert_eq!(ledger.vouches_until(&rules, NOW + 20_000, 20_000), None);
        assert_eq!(ledger.previous_ms("3"), Some(NOW));
    }

    #[test]
    fn a_writer_that_does_not_cover_the_stream_vouches_for_nothing_until_it_does() {
        let rules = rules();
        let slots = vec!["0".to_owned()];
        let mut ledger = WriterLedger::default();
        ledger.record(&proof("0", &slots, false), NOW, 0);
        assert_eq!(ledger.vouches_until(&rules, NOW, 0), None);
        ledger.record(&proof("0", &slots, true), NOW + 1, 1);
        assert!(ledger.vouches_until(&rules, NOW + 1, 1).is_some());
        // An older tick arriving late does not take the newer word back.
        ledger.record(&proof("0", &slots, false), NOW - 5_000, 2);
        assert!(ledger.vouches_until(&rules, NOW + 2, 2).is_some());
    }

    #[test]
    fn candidates_tried_while_not_covering_are_never_required() {
        let rules = rules();
        let mut ledger = WriterLedger::default();
        let candidates: Vec<String> = ["0", "1", "2"].map(str::to_owned).to_vec();
        for slot in ["1", "2"] {
            ledger.record(&proof(slot, &candidates, false), NOW, 0);
        }
        let settled: Vec<String> = vec!["0".to_owned(), "1".to_owned()];
        for slot in ["0", "1"] {
            ledger.record(&proof(slot, &settled, true), NOW + 100, 100);
        }
        let required: Vec<String> = ledger
            .required_slots(&rules, 100)
            .into_iter()
            .map(|(slot, _)| slot)
            .collect();
        assert_eq!(required, ["0", "1"], "candidate 2 is not required");
        assert!(ledger.vouches_until(&rules, NOW + 100, 100).is_some());
    }

    #[test]
    fn an_announcement_naming_fewer_slots_drops_a_slot_only_a_bound_later() {
        let rules = rules();
        let both: Vec<String> = vec!["0".to_owned(), "1".to_owned()];
        let one: Vec<String> = vec!["0".to_owned()];
        let mut ledger = WriterLedger::default();
        ledger.record(&proof("0", &both, true), NOW, 0);
        ledger.record(&proof("1", &both, true), NOW, 0);
        // A split retires slot 1 (or a forger says so): it is still required for a bound.
        ledger.record(&proof("0", &one, true), NOW + 1_000, 1_000);
        assert_eq!(
            ledger.vouches_until(&rules, NOW + 1_000, 1_000),
            Some(14_500),
            "slot 1's own ticks still decide"
        );
        ledger.record(&proof("0", &one, true), NOW + 16_000, 16_000);
        assert_eq!(ledger.vouches_until(&rules, NOW + 16_000, 16_000), Some(30_500));
        let required: Vec<String> = ledger
            .required_slots(&rules, 16_000)
            .into_iter()
            .map(|(slot, _)| slot)
            .collect();
        assert_eq!(required, ["0"]);
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
