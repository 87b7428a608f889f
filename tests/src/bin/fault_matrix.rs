//! `fault-matrix`: runs every row of the fault matrix on a fresh local system each, prints the
//! table and writes it to `docs/fault-matrix.md`.
//!
//! `cargo run -p staleless-tests --bin fault-matrix` (after `cargo build --workspace --bins`).

use std::fmt::Write as _;
use std::process::ExitCode;

use staleless_tests::faults::{self, Row};

#[tokio::main]
async fn main() -> ExitCode {
    let mut reports = Vec::new();
    for row in Row::ALL {
        eprintln!("running: {}", row.title());
        match faults::run(row).await {
            Ok(report) => reports.push(report),
            Err(err) => {
                eprintln!("error: {err:#}");
                return ExitCode::FAILURE;
            }
        }
    }
    let table = faults::table(&reports);
    println!("{table}");

    let mut page = String::from("# Fault matrix\n\n");
    let _ = writeln!(
        page,
        "Produced by `cargo build --workspace --bins && cargo run -p staleless-tests --bin fault-matrix` \
         (the same rows run as tests in `tests/tests/fault_matrix.rs`). Each row starts a fresh local \
         system (moto server, the relay process, two API tasks), writes every user once and warms both \
         tasks' caches, breaks something while writes go on straight to the users table with the SDK, \
         heals it, then checks every user on both tasks against DynamoDB (`ConsistentRead`).\n\n\
         *Invalidations lost* counts (key, task) pairs that never agreed with DynamoDB within {} s. \
         *Worst time to consistency* runs from the end of the row's last write (and the repair of its \
         fault) until every task served every user's last written value, for the slowest (user, task) \
         pair; it includes the time to read 2 x users pairs over HTTP.\n",
        faults::CHECK_PATIENCE.as_secs()
    );
    let _ = writeln!(page, "Machine: {}.\n", staleless_tests::bench::machine());
    page.push_str(&table);
    page.push_str(
        "\n## Reading\n\n\
         - No row loses an invalidation: after every fault, every user reads on both tasks what \
         DynamoDB holds.\n\
         - *Relay killed*: the relay resumes from its on-disk checkpoint; records of the batch it \
         was killed in are published again (duplicates are harmless evictions).\n\
         - *SNS unavailable*: the relay keeps the failed records unacknowledged and retries with \
         backoff (at most 2 s between tries), so the time includes that backoff.\n\
         - *Queue deleted*: a task learns its queue is gone when its current long poll returns \
         (`POLL_WAIT_SECS`, 20 s), then recreates and resubscribes it, removes the dead \
         subscription and flushes its caches. On moto a subscription to a deleted queue also makes \
         `PublishBatch` deliver to no one after it, so the *other* task waits too while the relay \
         retries; on AWS only the task whose queue was deleted is affected. A shorter \
         `POLL_WAIT_SECS` shortens this at the price of more empty receives.\n\
         - *Task restarted*: the new process subscribes a new queue and starts with empty caches; \
         what it reads is fresh.\n\
         - *Duplicates, reordering, poison*: evictions are idempotent; malformed bodies are counted, \
         logged and deleted, and the queues drain to empty.\n",
    );
    let path = infra::emulator::project_root().join("docs").join("fault-matrix.md");
    if let Err(err) = std::fs::write(&path, page) {
        eprintln!("error: cannot write {}: {err}", path.display());
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {}", path.display());
    if reports.iter().any(|report| report.lost > 0) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
