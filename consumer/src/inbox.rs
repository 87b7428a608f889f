//! The inbox: what a task does with each body its queue delivers, at the channel's time, and
//! nothing else — no AWS call. [`crate::Subscriber`] feeds it from SQS; the conformance vectors
//! (`protocol/conformance/`) feed it by hand with a [`crate::ManualClock`], so every rule of
//! message handling is specified once, as data, and checked without a queue.
//!
//! An invalidation evicts its keys from its source's caches; a flush clears what it names; a
//! tick is admitted or refused by the trust rules, flushing its cache first when it restores
//! trust or shows that heartbeats went missing; AWS's on-failure message of a stream flushes
//! that table's caches (every cache, for a table this task does not know). Anything else is
//! malformed: counted, logged by the caller, and skipped.

use std::sync::Arc;

use staleless_protocol::{DecodeError, GiveUp, Invalidation, decode, decode_give_up};

use crate::caches::Caches;
use crate::health::ChannelHealth;
use crate::trust::{SlotProof, TickRejection, heartbeats_missed};

/// What became of one body.
#[derive(Debug)]
pub enum Received {
    /// An invalidation or a flush, applied.
    Applied,
    /// A tick: admitted, or refused (it then changed nothing).
    Tick(Result<(), TickRejection>),
    /// AWS's on-failure message: the caches of the stream's table were flushed.
    GiveUp,
    /// Not a message of this protocol version (nor a give-up): counted, to be skipped.
    Malformed(DecodeError),
}

impl Received {
    /// The `outcome` label of `<prefix>_queue_messages_total`.
    #[must_use]
    pub const fn outcome(&self) -> &'static str {
        match self {
            Self::Applied | Self::Tick(_) => "applied",
            Self::GiveUp => "give_up",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// Applies queue bodies to the trust and the caches of one task.
#[derive(Clone)]
pub struct Inbox {
    /// The trust ticks are recorded into; its clock is the time messages arrive at.
    health: Arc<ChannelHealth>,
    /// The caches it evicts from, by source.
    caches: Caches,
    /// Table name → source, for the event source mapping's give-up messages, which name a
    /// table's stream and not a source.
    tables: Vec<(String, String)>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Inbox")
            .field("caches", &self.caches)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox recording ticks into `health` and evicting from `caches`.
    #[must_use]
    pub const fn new(health: Arc<ChannelHealth>, caches: Caches) -> Self {
        Self {
            health,
            caches,
            tables: Vec::new(),
        }
    }

    /// Names the table whose stream feeds `source`: records of it given up by the event source
    /// mapping flush that source's caches (and records of an unnamed table flush every cache).
    #[must_use]
    pub fn with_table(mut self, table: &str, source: &str) -> Self {
        self.tables.push((table.to_owned(), source.to_owned()));
        self
    }

    /// Applies one queue body now (the channel's clock), and counts it.
    pub fn receive(&self, body: &str) -> Received {
        let received = match decode(body) {
            Ok(invalidation) => self.apply(&invalidation, self.health.now_ms()),
            Err(_) if let Some(give_up) = decode_give_up(body) => {
                self.flush_given_up(&give_up);
                Received::GiveUp
            }
            Err(err) => Received::Malformed(err),
        };
        metrics::counter!(self.health.metric_names().queue_messages.clone(), "outcome" => received.outcome())
            .increment(1);
        received
    }

    /// Flushes every cache: the channel lost messages (a new queue or subscription).
    pub fn flush_all_sources(&self, why: &'static str) {
        tracing::info!(reason = why, "flushing caches");
        self.caches.flush_sources();
    }

    /// A tick of `source` arrived. A tick that does not count (an unknown writer, a time
    /// further ahead than the tolerance) is counted and changes nothing. If it brings that cache
    /// back within the bound, whatever was cached while it was untrusted may have missed
    /// invalidations, so the cache is flushed *before* the tick is recorded (and trust returns).
    /// If it shows that its writer's heartbeats went missing while the cache stayed trusted (an
    /// outage shorter than the bound), messages were dropped and the cache is flushed too.
    fn record_tick(
        &self,
        source: &str,
        writer: Option<&str>,
        written_at_ms: i64,
        proof: &SlotProof<'_>,
        interval_ms: Option<u64>,
    ) -> Result<(), TickRejection> {
        let channel = &self.health;
        let names = channel.metric_names();
        let admission = match channel.admit_tick(source, writer, written_at_ms, proof) {
            Ok(admission) => admission,
            Err(rejection) => {
                metrics::counter!(names.ticks_rejected.clone(), "source" => source.to_owned(), "reason" => rejection.as_str())
                    .increment(1);
                tracing::warn!(
                    source = %source,
                    writer = writer.unwrap_or(""),
                    written_at_ms,
                    lead_ms = written_at_ms.saturating_sub(channel.now_ms()),
                    reason = rejection.as_str(),
                    "tick refused: it vouches for nothing"
                );
                return Err(rejection);
            }
        };
        if admission.restores_trust {
            let beyond = channel.time_beyond_bound(source);
            let cache = channel.cache_of(source).unwrap_or(source).to_owned();
            metrics::counter!(names.channel_bypass_seconds.clone(), "cache" => cache).increment(beyond.as_secs());
            self.caches.flush_source(source);
            tracing::info!(source = %source, bypassed_secs = beyond.as_secs(), "ticks back within the bound; cache flushed and trusted again");
        } else if heartbeats_missed(admission.previous_ms, written_at_ms, interval_ms) {
            metrics::counter!(names.tick_gaps.clone(), "source" => source.to_owned()).increment(1);
            self.caches.flush_source(source);
            tracing::warn!(
                source = %source,
                writer = writer.unwrap_or(""),
                slot = proof.slot,
                gap_ms = written_at_ms.saturating_sub(admission.previous_ms.unwrap_or(written_at_ms)),
                "heartbeats went missing on the way here; cache flushed"
            );
        }
        channel.record_tick(&admission, written_at_ms, proof);
        metrics::counter!(names.ticks.clone(), "source" => source.to_owned()).increment(1);
        Ok(())
    }

    /// The event source mapping gave up records of a table (AWS's on-failure message, sent to the
    /// topic): their invalidations will never arrive, so that table's caches are flushed — every
    /// cache when the table is not one of this task's (a renamed table must not be missed).
    fn flush_given_up(&self, give_up: &GiveUp) {
        let source = give_up
            .table()
            .and_then(|table| self.tables.iter().find(|(known, _)| known == table))
            .map(|(_, source)| source.as_str());
        match source {
            Some(source) => self.caches.flush_source(source),
            None => self.flush_all_sources("records of an unknown stream given up"),
        }
        let label = source.unwrap_or("all");
        metrics::counter!(self.health.metric_names().give_up_flushes.clone(), "source" => label.to_owned())
            .increment(1);
        tracing::warn!(
            source = label,
            stream = %give_up.stream_arn,
            shard = give_up.shard_id.as_deref().unwrap_or(""),
            first_sequence_number = give_up.start_sequence_number.as_deref().unwrap_or(""),
            last_sequence_number = give_up.end_sequence_number.as_deref().unwrap_or(""),
            records = give_up.batch_size.unwrap_or(0),
            "the event source mapping gave up records: their invalidations are lost, cache flushed"
        );
    }

    fn apply(&self, invalidation: &Invalidation, now_ms: i64) -> Received {
        if let Invalidation::Tick {
            source,
            written_at_ms,
            writer,
            slot,
            slots,
            covered,
            interval_ms,
        } = invalidation
        {
            let proof = SlotProof::of(slot.as_deref(), slots.as_deref(), *covered);
            return Received::Tick(self.record_tick(
                source.as_str(),
                writer.as_deref(),
                *written_at_ms,
                &proof,
                *interval_ms,
            ));
        }
        let evicted = self.caches.apply(invalidation);
        let names = self.health.metric_names();
        match invalidation {
            Invalidation::Invalidate { source, keys } => {
                metrics::counter!(names.invalidations_applied.clone(), "source" => source.to_string())
                    .increment(u64::try_from(evicted).unwrap_or(0));
                let lag = metrics::histogram!(names.invalidation_lag.clone());
                for key in keys.iter().filter(|key| key.at_ms > 0) {
                    #[allow(clippy::cast_precision_loss)] // milliseconds of lag fit an f64 exactly
                    lag.record(now_ms.saturating_sub(key.at_ms).max(0) as f64 / 1_000.0);
                }
                tracing::debug!(source = %source, keys = keys.len(), "invalidation applied");
            }
            Invalidation::FlushAll { source, reason } => {
                let label = source.as_ref().map_or("all", staleless_protocol::Source::as_str);
                metrics::counter!(names.invalidations_applied.clone(), "source" => label.to_owned()).increment(1);
                tracing::info!(
                    source = label,
                    reason = reason.as_deref().unwrap_or(""),
                    "flush applied"
                );
            }
            Invalidation::Tick { .. } => {}
        }
        Received::Applied
    }
}
