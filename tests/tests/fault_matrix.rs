//! The fault matrix, one test per row: whatever breaks, no invalidation is lost — every key
//! written during the row ends up reading the same on both tasks as in DynamoDB.

use staleless_tests::faults::{self, Row};

async fn nothing_lost(row: Row) -> anyhow::Result<()> {
    let report = faults::run(row).await?;
    println!("{}", faults::table(std::slice::from_ref(&report)));
    assert!(report.writes > 0, "{report:?}");
    assert!(report.checked > 0, "{report:?}");
    assert_eq!(report.lost, 0, "lost invalidations in {report:?}");
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
