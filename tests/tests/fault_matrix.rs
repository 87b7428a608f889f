//! The fault matrix, one test per row: whatever breaks, no invalidation is lost — every key
//! written during the row ends up reading the same on both tasks as in DynamoDB — and, for the
//! rows measured during their fault, no task serves a change older than the bound `B`.

use std::time::Duration;

use staleless_tests::SystemOptions;
use staleless_tests::faults::{self, Row};

/// Clock granularity of the bound's arithmetic (ticks carry milliseconds).
const ROUNDING: Duration = Duration::from_millis(10);

async fn nothing_lost(row: Row) -> anyhow::Result<()> {
    nothing_lost_in(&faults::run(row).await?)
}

fn nothing_lost_in(report: &faults::RowReport) -> anyhow::Result<()> {
    let row = report.row;
    if row.is_hostile() {
        println!("{}", faults::hostile_table(std::slice::from_ref(report)));
    } else {
        println!("{}", faults::table(std::slice::from_ref(report)));
    }
    assert!(report.writes > 0, "{report:?}");
    assert!(report.checked > 0, "{report:?}");
    assert_eq!(report.lost, 0, "lost invalidations in {report:?}");
    if row.probes_during_fault() {
        let probe = report.during_fault.as_ref().expect("the row probes during its fault");
        assert!(probe.writes > 0, "{report:?}");
        // The promise, not a speed: a read made more than B after a change was acknowledged
        // never returns the value from before it, however slowly it is answered.
        assert!(
            probe.worst_staleness() <= SystemOptions::TEST_BOUND + ROUNDING,
            "a task served a change {:?} old, past the bound of {:?}: {report:?}",
            probe.worst_staleness(),
            SystemOptions::TEST_BOUND
        );
    }
    if row.heals_itself() {
        assert_eq!(
            report.healed_itself,
            Some(true),
            "the task did not heal itself: {report:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn relay_killed_mid_burst_and_restarted() -> anyhow::Result<()> {
    nothing_lost(Row::RelayKilledMidBurst).await
}

#[tokio::test]
async fn sns_unavailable_then_back() -> anyhow::Result<()> {
    nothing_lost(Row::SnsUnavailable).await
}

#[tokio::test]
async fn one_task_queue_deleted_out_of_band() -> anyhow::Result<()> {
    nothing_lost(Row::QueueDeletedOutOfBand).await
}

#[tokio::test]
async fn task_restarted_while_writes_continue() -> anyhow::Result<()> {
    nothing_lost(Row::TaskRestartedDuringWrites).await
}

#[tokio::test]
async fn duplicate_and_reordered_invalidations() -> anyhow::Result<()> {
    nothing_lost(Row::DuplicateAndReorderedMessages).await
}

#[tokio::test]
async fn poison_messages() -> anyhow::Result<()> {
    nothing_lost(Row::PoisonMessages).await
}

#[tokio::test]
async fn burst_of_1000_writes_across_500_users_under_reads() -> anyhow::Result<()> {
    nothing_lost(Row::BurstWithReads).await
}

#[tokio::test]
async fn relay_hung_never_healed_while_measured() -> anyhow::Result<()> {
    nothing_lost(Row::RelayHung).await
}

#[tokio::test]
async fn relay_cannot_publish_never_healed_while_measured() -> anyhow::Result<()> {
    nothing_lost(Row::RelayCannotPublish).await
}

#[tokio::test]
async fn one_task_subscription_removed() -> anyhow::Result<()> {
    nothing_lost(Row::SubscriptionRemoved).await
}

#[tokio::test]
async fn one_subscription_filtered_to_nothing() -> anyhow::Result<()> {
    nothing_lost(Row::SubscriptionFilteredToNothing).await
}

#[tokio::test]
async fn heartbeat_writer_stopped_never_healed_while_measured() -> anyhow::Result<()> {
    let report = faults::run(Row::HeartbeatWriterStopped).await?;
    let probe = report.during_fault.as_ref().expect("probed");
    assert!(
        probe.bypassed_reads > 0,
        "no ticks, no trust: the tasks read through: {report:?}"
    );
    nothing_lost_in(&report)
}

#[tokio::test]
async fn dynamodb_reads_hang_for_one_task() -> anyhow::Result<()> {
    let report = faults::run(Row::DynamoHangsForOneTask).await?;
    let probe = report.during_fault.as_ref().expect("probed");
    assert!(
        probe.failed_reads() > 0,
        "the hung task answered errors, not waits: {report:?}"
    );
    nothing_lost_in(&report)
}

// Hostile data: what anyone with write access to a table can write. Each row asserts what the
// others do (nothing lost, nothing older than B served while it stays) and, inside the row, that
// the damage stays with the item it spoils.

#[tokio::test]
async fn hostile_corrupt_role_item() -> anyhow::Result<()> {
    let report = faults::run(Row::CorruptRoleItem).await?;
    assert_eq!(
        report.during_fault.as_ref().expect("probed").failed_reads(),
        0,
        "{report:?}"
    );
    nothing_lost_in(&report)
}

#[tokio::test]
async fn hostile_corrupt_profile() -> anyhow::Result<()> {
    let report = faults::run(Row::CorruptProfile).await?;
    assert_eq!(
        report.during_fault.as_ref().expect("probed").failed_reads(),
        0,
        "{report:?}"
    );
    nothing_lost_in(&report)
}

#[tokio::test]
async fn hostile_heartbeats_from_the_future_then_a_short_outage() -> anyhow::Result<()> {
    nothing_lost(Row::HeartbeatsFromTheFuture).await
}

#[tokio::test]
async fn hostile_heartbeats_from_the_past_then_a_short_outage() -> anyhow::Result<()> {
    nothing_lost(Row::HeartbeatsFromThePast).await
}

#[tokio::test]
async fn hostile_forged_writer_then_a_short_outage() -> anyhow::Result<()> {
    nothing_lost(Row::ForgedWriter).await
}

#[tokio::test]
async fn hostile_writer_clock_an_hour_ahead() -> anyhow::Result<()> {
    let report = faults::run(Row::WriterClockAhead).await?;
    assert!(
        report.during_fault.as_ref().expect("probed").bypassed_reads > 0,
        "{report:?}"
    );
    nothing_lost_in(&report)
}

#[tokio::test]
async fn hostile_writer_clock_an_hour_behind() -> anyhow::Result<()> {
    let report = faults::run(Row::WriterClockBehind).await?;
    assert!(
        report.during_fault.as_ref().expect("probed").bypassed_reads > 0,
        "{report:?}"
    );
    nothing_lost_in(&report)
}

#[tokio::test]
async fn hostile_unreadable_record_of_a_watched_table() -> anyhow::Result<()> {
    nothing_lost(Row::UnreadableRecord).await
}
