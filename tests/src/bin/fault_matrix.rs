//! `fault-matrix`: runs every row of the fault matrix on a fresh local system each, prints the
//! table and writes it to `docs/fault-matrix.md`.
//!
//! `cargo run -p staleless-tests --bin fault-matrix` (after `cargo build --workspace --bins`).

use std::fmt::Write as _;
use std::process::ExitCode;

use staleless_tests::faults::{self, Row};

/// Runs `rows` one after another, each on a fresh system; stops at the first that cannot run.
async fn run_rows(rows: &[Row]) -> Result<Vec<faults::RowReport>, ExitCode> {
    let mut reports = Vec::new();
    for &row in rows {
        eprintln!("running: {}", row.title());
        match faults::run(row).await {
            Ok(report) => reports.push(report),
            Err(err) => {
                eprintln!("error: {err:#}");
                return Err(ExitCode::FAILURE);
            }
        }
    }
    Ok(reports)
}

#[tokio::main]
async fn main() -> ExitCode {
    // `--hostile`: only the hostile-data rows, printed (not written to the page).
    let hostile_only = std::env::args().any(|arg| arg == "--hostile");
    let hostile = match run_rows(&Row::HOSTILE).await {
        Ok(reports) => reports,
        Err(code) => return code,
    };
    let hostile_table = faults::hostile_table(&hostile);
    println!("{hostile_table}");
    if hostile_only {
        return ExitCode::SUCCESS;
    }
    let reports = match run_rows(&Row::ALL).await {
        Ok(reports) => reports,
        Err(code) => return code,
    };
    let table = faults::table(&reports);
    println!("{table}");

    let mut page = String::from("# Fault matrix\n\n");
    let _ = writeln!(
        page,
        "Produced by `cargo build --workspace --bins && cargo run -p staleless-tests --bin fault-matrix` \
         (the same rows run as tests in `tests/tests/fault_matrix.rs`). Each row starts a fresh local \
         system (moto server; the relay as Lambda runs it: the local Lambda, the relay's Lambda binary \
         and the event source mapping invoking it, polling each shard every {} ms, with a {} s function \
         timeout; the heartbeat writer process; two API tasks; the freshness bound B = {} s and a \
         heartbeat every 0.5 s). A killed or \
         hung relay is that binary: its invocation in flight times out and is retried. Each row writes every user once, waits until \
         every task has heard ticks written after that (quiescent), warms both tasks' caches, breaks \
         something while writes go on straight to the users table with the SDK, heals it, then checks \
         every user on both tasks against DynamoDB (`ConsistentRead`).\n\n\
         *Invalidations lost* counts (key, task) pairs that never agreed with DynamoDB within {} s. \
         The rows below the first seven, and the deleted queue, are **measured during the fault**, \
         which is not repaired while measured: a tenth of the users are renamed and every (user, task) \
         pair is read every 20 ms until it serves the new name. *Worst staleness served* is, over \
         every read answered with the old name, how long after the rename was acknowledged that read \
         was made — the figure the bound B promises to cap. *Time to the new value* is the slowest \
         pair's wait for the new name (or, for the task whose DynamoDB hangs, for an error instead of \
         the old name). *Bypassed reads* are reads the tasks answered past a cache that was not \
         trusted; *failed reads* are errors answered (503 within `AWS_CALL_TIMEOUT_MS`). *Healed \
         itself*: the task repaired its queue or subscription, or read DynamoDB again, and trusted its \
         caches again, with no operator. *Worst time to consistency after repair* runs from the end of \
         the row's last write (and the repair of its fault) until every task served every user's last \
         written value, for the slowest (user, task) pair; it includes the time to read 2 x users pairs \
         over HTTP.\n",
        staleless_tests::TEST_POLL_INTERVAL_MS,
        staleless_tests::RELAY_FUNCTION_TIMEOUT.as_secs(),
        staleless_tests::SystemOptions::TEST_BOUND.as_secs(),
        faults::CHECK_PATIENCE.as_secs()
    );
    let _ = writeln!(page, "Machine: {}.\n", staleless_tests::bench::machine());
    page.push_str(&table);
    page.push_str(
        "\n## Reading\n\n\
         - No row loses an invalidation: after every fault, every user reads on both tasks what \
         DynamoDB holds.\n\
         - **No row serves a change older than the bound**, silent faults included: a hung relay, \
         a relay that cannot publish, a stopped heartbeat writer and a removed or filtered \
         subscription all stop the ticks, and past B every task reads through. Before this design \
         a silent break left the caches trusted for the safety-net TTL (3,600 s).\n\
         - The staleness each reader served over the course of each row measured during its fault, \
         with B drawn across, is plotted in `BENCHMARKS.md` (*Staleness served during each fault, \
         over time*; `scripts/bench faults`).\n\
         - *Relay hung, cannot publish, heartbeat writer stopped*: nothing a task can repair; the \
         fleet serves correct data from DynamoDB until an operator does (the template's alarms name \
         the hop). Once ticks return, each cache is flushed and hits again.\n\
         - *Subscription removed or filtered*: the task notices its queue answers while ticks are \
         silent, finds its subscription gone or altered and re-creates it, and flushes its caches.\n\
         - *Queue deleted*: the task stops trusting its caches within B (no ticks), recreates the \
         queue when its long poll returns, and resubscribes. On moto a subscription to a deleted \
         queue also makes `PublishBatch` deliver to no one after it, so the *other* task reads \
         through too while the relay retries; on AWS only the task whose queue was deleted is \
         affected.\n\
         - *DynamoDB hangs for one task*: its reads fail with 503 after the call timeout instead of \
         hanging (the invalidation evicted the entry, so nothing stale is served); the other task \
         is unaffected, and the task serves again on its own once DynamoDB answers.\n\
         - *Relay killed, SNS unavailable*: the relay resumes from its checkpoint or retries with \
         backoff; duplicates are harmless evictions.\n\
         - *Task restarted*: the new process subscribes a new queue and starts with empty caches.\n\
         - *Duplicates, reordering, poison*: evictions are idempotent; malformed bodies are counted, \
         logged and deleted, and the queues drain to empty.\n",
    );
    page.push_str(HOSTILE_INTRO);
    page.push_str(&hostile_table);
    page.push_str(HOSTILE_READING);
    let path = infra::emulator::project_root().join("docs").join("fault-matrix.md");
    // The per-shard rows are measured by `tests/tests/shards.rs`, not by this command: their
    // section of the page is kept as it is.
    if let Ok(existing) = std::fs::read_to_string(&path)
        && let Some(at) = existing.find(SHARDS_HEADING)
    {
        page.push('\n');
        page.push_str(&existing[at..]);
    }
    if let Err(err) = std::fs::write(&path, page) {
        eprintln!("error: cannot write {}: {err}", path.display());
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {}", path.display());
    let past_bound = |report: &faults::RowReport| {
        report.during_fault.as_ref().is_some_and(|probe| {
            probe.worst_staleness() > staleless_tests::SystemOptions::TEST_BOUND + std::time::Duration::from_millis(10)
        })
    };
    if reports
        .iter()
        .chain(&hostile)
        .any(|report| report.lost > 0 || past_bound(report) || report.healed_itself == Some(false))
    {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The heading of the page's per-shard section, which this command keeps.
const SHARDS_HEADING: &str = "## Every shard (simulated)";

const HOSTILE_INTRO: &str = "\n## Hostile data\n\n\
Rows of what anyone with write access to a table can write (the console, a script, a writer \
whose clock jumps), written with the SDK straight into the tables, on the same local system \
(B = 3 s, a heartbeat every 0.5 s). Each row warms both tasks, writes its data, renames a tenth \
of the users while the data stays (read every 20 ms on both tasks, as above), then removes it \
and checks every user against DynamoDB. The heartbeat rows that end in an outage give every \
subscription a filter policy matching nothing for 1.2 s (shorter than half the bound, so no \
task's subscription check can see it), with the renames 0.3 s in: only the gap in the \
heartbeats shows that invalidations were dropped.\n\n";

const HOSTILE_READING: &str = "\n- **The bound holds against the data itself.** A tick from an \
unknown writer or from further ahead than the tolerance (`TICK_FUTURE_TOLERANCE_MS`, 500 ms, \
charged against B) is refused and counted; the state is per writer, so the gap after it is \
still measured against the writer's last real beat and the outage is caught. Before, one \
heartbeat item written an hour ahead made every task keep trusting its caches through the \
outage, and the renamed users were served stale for the TTL.\n\
- *A writer's clock an hour off*: its ticks never vouch (refused when ahead, too old when \
behind), so the tasks read through: correct, slower, until the clock is fixed.\n\
- *Corrupt items stay with the item*: a corrupt role grants nothing and is listed under \
`corrupt` by `/admin/roles` (repair it with a `PATCH` naming each attribute at fault, or \
`DELETE` it); a corrupt profile fails only its own user's requests, with `corrupt_item` naming \
the attribute. Both are counted once per change (`staleless_corrupt_items_total{table}`) and \
logged with their key.\n\
- *An unreadable record of a watched table* flushes that source's caches on every task instead \
of being dropped.\n";
