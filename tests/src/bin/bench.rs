//! `bench`: the three cache modes side by side, in one run on one machine — throughput and
//! latency, staleness across three tasks, relay and queue costs, memory — printed as one table
//! and written to `BENCHMARKS.md`.
//!
//! Run it with `scripts/bench`, which first builds the release binaries and runs the criterion
//! benches whose results this reads (`target/criterion/`). Settings (environment, for quick
//! trial runs; the defaults are what `BENCHMARKS.md` reports):
//! `BENCH_SECS` (20) and `BENCH_WARMUP_SECS` (5) per throughput run, `BENCH_ROUNDS` (3
//! interleaved rounds of `event` then `ttl` throughput), `BENCH_CONCURRENCY` (32),
//! `BENCH_USERS` (1000), `BENCH_WRITES` (1000), `BENCH_WRITE_CONCURRENCY` (2, SDK writes in
//! flight during the `event` staleness run; a second run at twice that shows the emulator's
//! saturation), `BENCH_TTL_SECS` (2, the TTL of the `ttl` staleness run), `BENCH_PROFILES`
//! (100000), `BENCH_OUT` (`BENCHMARKS.md`; `-` for none).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use staleless_tests::bench::{self, LoadReport, MemoryReport, StalenessOptions, StalenessReport, Users};
use staleless_tests::bench_proxy::{self, CountingProxy};
use staleless_tests::{LocalSystem, SystemOptions};

/// Separates the generated page from the hand-written reading kept across runs.
const READING_MARKER: &str = "<!-- Everything below this line is kept by scripts/bench across runs. -->";

/// What one run measures.
struct Settings {
    /// Measured seconds per throughput run.
    secs: u64,
    /// Interleaved rounds (event, ttl, event, ttl, …) of the throughput comparison.
    rounds: usize,
    /// Unrecorded seconds before each throughput run (connections, caches, allocator).
    warmup_secs: u64,
    /// Requests in flight during throughput runs.
    concurrency: usize,
    /// Distinct users behind the Zipf draw.
    users: usize,
    /// SDK writes per staleness run.
    writes: usize,
    /// SDK writes in flight during the `event` staleness run.
    write_concurrency: usize,
    /// `CACHE_TTL_SECS` of the `ttl` staleness run: short, so 1,000 writes finish.
    ttl_secs: u64,
    /// Profiles cached for the memory figure.
    profiles: usize,
    /// Where the page goes; `None` for stdout only.
    out: Option<std::path::PathBuf>,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        let out = match std::env::var("BENCH_OUT") {
            Ok(value) if value == "-" => None,
            Ok(value) => Some(value.into()),
            Err(_) => Some(infra::emulator::project_root().join("BENCHMARKS.md")),
        };
        Self {
            secs: env_number("BENCH_SECS", 20),
            rounds: usize::try_from(env_number("BENCH_ROUNDS", 3)).unwrap_or(3).max(1),
            warmup_secs: env_number("BENCH_WARMUP_SECS", 5),
            concurrency: usize::try_from(env_number("BENCH_CONCURRENCY", 32)).unwrap_or(32),
            users: usize::try_from(env_number("BENCH_USERS", 1_000))
                .unwrap_or(1_000)
                .max(100),
            writes: usize::try_from(env_number("BENCH_WRITES", 1_000)).unwrap_or(1_000),
            write_concurrency: usize::try_from(env_number("BENCH_WRITE_CONCURRENCY", 2))
                .unwrap_or(2)
                .max(1),
            ttl_secs: env_number("BENCH_TTL_SECS", 2).max(1),
            profiles: usize::try_from(env_number("BENCH_PROFILES", 100_000)).unwrap_or(100_000),
            out,
        }
    }

    /// Writes in flight during the contrast run: twice the measured run's.
    const fn busier_write_concurrency(&self) -> usize {
        self.write_concurrency * 2
    }
}

/// Everything the table shows.
#[derive(Default)]
struct Results {
    load: Vec<(&'static str, LoadReport)>,
    staleness: Vec<(String, StalenessReport)>,
    /// `event` staleness with twice the writes in flight: the same path under a busier emulator.
    busier_staleness: Option<StalenessReport>,
    idle_receives_per_task_hour: Option<(f64, u64, Duration)>,
    live_publish_calls: Option<(u64, usize)>,
    memory: Option<MemoryReport>,
    /// Throughput of `event` and `ttl` per interleaved round, in run order.
    rounds: Vec<(f64, f64)>,
    /// Reads the `event` tasks answered past a bypassed cache, over every `event` system of the
    /// run (a healthy steady state has none).
    bypassed_reads: u64,
}

/// The freshness settings of a deployment with the template's defaults (`B` = 15 s, `H` = 5 s):
/// the bench measures the product as shipped, not the tests' short bound.
fn shipped(options: SystemOptions) -> SystemOptions {
    SystemOptions {
        staleness_bound: Duration::from_secs(15),
        heartbeat_interval: Duration::from_secs(5),
        ..options
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::from_env();
    // Before anything starts, so the load average is the machine's own.
    let machine = bench::machine();
    let started = Instant::now();
    let mut results = Results::default();
    let outcome = run(&settings, &mut results).await;
    if let Err(err) = &outcome {
        eprintln!("error: {err:#}");
        eprintln!("(the table below holds what was measured before the error)");
    }
    let page = render(&settings, &results, started.elapsed(), &machine);
    println!("{page}");
    if let Some(path) = &settings.out {
        // The reading below the marker is written by a person who looked at the figures; a new
        // run replaces the figures and keeps it.
        let kept = std::fs::read_to_string(path)
            .ok()
            .and_then(|old| old.split_once(READING_MARKER).map(|(_, reading)| reading.to_owned()))
            .unwrap_or_else(|| "\n## Reading\n\n(to be written after looking at the figures)\n".to_owned());
        let page = format!("{page}\n{READING_MARKER}{kept}");
        if let Err(err) = std::fs::write(path, &page) {
            eprintln!("error: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(settings: &Settings, results: &mut Results) -> anyhow::Result<()> {
    let http = bench::load_client(settings.concurrency * 2)?;
    let warmup = Duration::from_secs(settings.warmup_secs);
    let measure = Duration::from_secs(settings.secs);

    // 1. event: three tasks, SQS and SNS through counting proxies. Throughput on task 0, the
    //    idle queue traffic meanwhile (reads cause none), then staleness, then memory.
    eprintln!("event: starting three tasks");
    let capacity = (settings.profiles + settings.users + 1_000).to_string();
    let mut system = LocalSystem::start(shipped(SystemOptions {
        tasks: 0,
        cache_mode: "event".into(),
        task_env: vec![("CACHE_MAX_PROFILES".into(), capacity)],
        ..SystemOptions::default()
    }))
    .await?;
    let outcome = event_phase(settings, &http, &mut system, results, measure).await;
    if let Ok(bypassed) = system.bypassed_reads().await {
        results.bypassed_reads += bypassed;
    }
    system.stop().await;
    outcome?;

    // 2. event and ttl (its default TTL) throughput, one task each, in interleaved rounds: one
    //    round per mode is mostly the noise of two shared cores.
    let mut by_round = Vec::new();
    for round in 1..=settings.rounds {
        eprintln!("throughput round {round} of {}: event, then ttl", settings.rounds);
        let (event, bypassed) = throughput_only("event", settings, &http, warmup, measure).await?;
        results.bypassed_reads += bypassed;
        let (ttl, _) = throughput_only("ttl", settings, &http, warmup, measure).await?;
        results.rounds.push((event.rps(), ttl.rps()));
        by_round.push((event, ttl));
    }
    // The table shows the round whose ratio is the median one, so its figures belong together.
    let median = median_round(&results.rounds);
    if let Some((event, ttl)) = median.and_then(|index| by_round.into_iter().nth(index)) {
        results.load.push(("event", event));
        results.load.push(("ttl", ttl));
    }

    // 3. ttl with a short TTL, three tasks: staleness.
    eprintln!("ttl: staleness with CACHE_TTL_SECS={}", settings.ttl_secs);
    let system = LocalSystem::start(shipped(SystemOptions {
        tasks: 3,
        cache_mode: "ttl".into(),
        task_env: vec![("CACHE_TTL_SECS".into(), settings.ttl_secs.to_string())],
        ..SystemOptions::default()
    }))
    .await?;
    let outcome = async {
        let users = bench::bench_users(&system, settings.users).await?;
        bench::staleness(&system, &http, &users, ttl_staleness_options(settings)).await
    }
    .await;
    system.stop().await;
    results
        .staleness
        .push((format!("ttl (CACHE_TTL_SECS={})", settings.ttl_secs), outcome?));

    // 4. off, one task: throughput.
    eprintln!("off: throughput");
    let (outcome, _) = throughput_only("off", settings, &http, warmup, measure).await?;
    results.load.push(("off", outcome));
    Ok(())
}

/// `event / ttl` of each round.
fn ratios(rounds: &[(f64, f64)]) -> Vec<f64> {
    rounds
        .iter()
        .map(|(event, ttl)| event / ttl.max(f64::EPSILON))
        .collect()
}

/// The index of the round with the median `event / ttl` ratio (the lower middle one for an even
/// count).
fn median_round(rounds: &[(f64, f64)]) -> Option<usize> {
    let ratios = ratios(rounds);
    let mut order: Vec<usize> = (0..ratios.len()).collect();
    order.sort_by(|a, b| ratios[*a].total_cmp(&ratios[*b]));
    order.get(order.len().saturating_sub(1) / 2).copied()
}

async fn event_phase(
    settings: &Settings,
    http: &reqwest::Client,
    system: &mut LocalSystem,
    results: &mut Results,
    idle: Duration,
) -> anyhow::Result<()> {
    let sqs_proxy = CountingProxy::start(system.aws.endpoint()).await?;
    let sns_proxy = CountingProxy::start(system.aws.endpoint()).await?;
    system
        .restart_relay_with(&[("AWS_ENDPOINT_URL_SNS".into(), sns_proxy.url().to_owned())])
        .await?;
    for _ in 0..3 {
        system
            .add_task(&[("AWS_ENDPOINT_URL_SQS".into(), sqs_proxy.url().to_owned())])
            .await?;
    }
    let users = bench::bench_users(system, settings.users).await?;
    // Every invalidation of the inserts above has reached every task once ticks written after
    // them have: the idle window below is idle.
    system.until_quiescent().await?;

    eprintln!("event: idle queue traffic");
    let idle_from = (sqs_proxy.counts(), Instant::now());
    tokio::time::sleep(idle).await;
    let window = idle_from.1.elapsed();
    let receives = bench_proxy::delta(&idle_from.0, &sqs_proxy.counts(), "ReceiveMessage");
    let per_task_hour = receives as f64 / system.tasks.len() as f64 * 3_600.0 / window.as_secs_f64();
    results.idle_receives_per_task_hour = Some((per_task_hour, receives, window));

    eprintln!("event: staleness");
    let sns_before = sns_proxy.counts();
    let report = bench::staleness(
        system,
        http,
        &users,
        event_staleness_options(settings, settings.write_concurrency),
    )
    .await?;
    let publish_calls = bench_proxy::delta(&sns_before, &sns_proxy.counts(), "PublishBatch");
    results.live_publish_calls = Some((publish_calls, report.writes));
    results.staleness.push(("event".into(), report));

    let busier = settings.busier_write_concurrency();
    eprintln!("event: staleness with {busier} writes in flight");
    let options = event_staleness_options(settings, busier);
    results.busier_staleness = Some(bench::staleness(system, http, &users, options).await?);

    if settings.profiles > 0 {
        eprintln!("event: memory with {} profiles", settings.profiles);
        results.memory = Some(bench::memory(system, http, 0, settings.profiles).await?);
    }
    Ok(())
}

fn event_staleness_options(settings: &Settings, concurrency: usize) -> StalenessOptions {
    StalenessOptions {
        writes: settings.writes,
        // The default 2 in flight makes about 25 writes/s, as many as 4 do on a 2-core machine:
        // beyond that moto (one Python process serving every call of the path) is saturated and
        // extra writes only queue inside it, which the second, busier run shows. The polling (3
        // tasks per write every 5 ms) stays a small load next to what a task serves.
        concurrency,
        poll: Duration::from_millis(5),
        background_rps_per_task: 100,
        patience: Duration::from_secs(30),
    }
}

fn ttl_staleness_options(settings: &Settings) -> StalenessOptions {
    StalenessOptions {
        writes: settings.writes,
        // Each write waits about half the TTL; more in flight keep the run short, and a coarser
        // poll (1 % of a 2 s TTL) keeps the polling load near the event run's.
        concurrency: 24,
        poll: Duration::from_millis(20),
        background_rps_per_task: 100,
        patience: Duration::from_secs(settings.ttl_secs * 3 + 10),
    }
}

/// One task in `mode` under load; returns the report and the reads it answered past a bypassed
/// cache meanwhile.
async fn throughput_only(
    mode: &str,
    settings: &Settings,
    http: &reqwest::Client,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<(LoadReport, u64)> {
    let system = LocalSystem::start(shipped(SystemOptions {
        tasks: 1,
        cache_mode: mode.into(),
        ..SystemOptions::default()
    }))
    .await?;
    let outcome = async {
        let users: Users = bench::bench_users(&system, settings.users).await?;
        // As in the event run: let the relay finish with the inserts before measuring.
        system.until_quiescent().await?;
        let report = bench::load(
            http,
            &system.task_urls[0],
            &users,
            settings.concurrency,
            warmup,
            measure,
        )
        .await?;
        Ok((report, system.bypassed_reads().await?))
    }
    .await;
    system.stop().await;
    outcome
}

/// What one staleness run measured, how fast it wrote, and how long moto took to acknowledge a
/// write.
fn run_summary(report: &StalenessReport) -> String {
    format!(
        "{} measured, {} never seen; {:.0} s, {:.1} writes/s, `UpdateItem` p50 {}",
        report.sorted.len(),
        report.never_seen,
        report.elapsed.as_secs_f64(),
        report.writes as f64 / report.elapsed.as_secs_f64().max(f64::EPSILON),
        ms(report.write_p50)
    )
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1_000.0)
}

fn render(settings: &Settings, results: &Results, elapsed: Duration, machine: &str) -> String {
    let mut page = String::from("# Benchmarks\n\n");
    let _ = writeln!(
        page,
        "Produced by **`scripts/bench`** (= `cargo build --release --workspace --bins`, \
         `cargo bench -p staleless-api --bench auth_hot_path`, `cargo bench -p stream-relay --bench transform`, \
         then `target/release/bench`), in one run on one machine, against the local stack (moto server, the relay \
         process, the API task processes, all on loopback). The run took {:.0} s.\n",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(page, "Machine: {machine}.\n");
    let _ = writeln!(
        page,
        "Settings: {} s measured after {} s warm-up per throughput run, {} requests in flight, {} users \
         Zipf-distributed (s = 1), {} SDK writes per staleness run ({} in flight for `event`), `ttl` staleness with `CACHE_TTL_SECS={}`, \
         {} profiles for memory.\n",
        settings.secs,
        settings.warmup_secs,
        settings.concurrency,
        settings.users,
        settings.writes,
        settings.write_concurrency,
        settings.ttl_secs,
        settings.profiles
    );
    page.push_str("| measure | event | ttl | off |\n|---|---|---|---|\n");
    let load = |mode: &str| {
        results
            .load
            .iter()
            .find(|(name, _)| *name == mode)
            .map(|(_, report)| report)
    };
    let cell =
        |mode: &str, show: &dyn Fn(&LoadReport) -> String| load(mode).map_or_else(|| "not measured".to_owned(), show);
    let row = |page: &mut String, title: &str, show: &dyn Fn(&LoadReport) -> String| {
        let _ = writeln!(
            page,
            "| {title} | {} | {} | {} |",
            cell("event", show),
            cell("ttl", show),
            cell("off", show)
        );
    };
    row(
        &mut page,
        "`GET /users/me` throughput, one task (the median round)",
        &|r| format!("{:.0} req/s", r.rps()),
    );
    row(&mut page, "latency p50", &|r| ms(r.p50));
    row(&mut page, "latency p99", &|r| ms(r.p99));
    row(&mut page, "errors", &|r| r.errors.to_string());
    if let (Some(event), Some(ttl), Some(off)) = (load("event"), load("ttl"), load("off")) {
        let _ = writeln!(
            page,
            "| throughput vs `off` / vs `ttl` | {:.1}× / {:+.1} % | {:.1}× / — | 1× |",
            event.rps() / off.rps(),
            (event.rps() / ttl.rps() - 1.0) * 100.0,
            ttl.rps() / off.rps()
        );
    }
    for (fraction, title) in [(0.50, "p50"), (0.95, "p95"), (0.99, "p99"), (1.0, "max")] {
        let cell = |prefix: &str| {
            results
                .staleness
                .iter()
                .find(|(name, _)| name.starts_with(prefix))
                .map_or_else(|| "not measured".to_owned(), |(_, report)| ms(report.at(fraction)))
        };
        let _ = writeln!(
            page,
            "| staleness {title}, write ack → all 3 tasks serve it | {} | {} | no cache: 0 |",
            cell("event"),
            cell("ttl")
        );
    }
    let writes_cell = |prefix: &str| {
        results
            .staleness
            .iter()
            .find(|(name, _)| name.starts_with(prefix))
            .map_or_else(
                || "not measured".to_owned(),
                |(name, r)| format!("{name} ({})", run_summary(r)),
            )
    };
    let _ = writeln!(
        page,
        "| staleness writes | {} | {} | — |",
        writes_cell("event"),
        writes_cell("ttl")
    );
    if let Some(busier) = &results.busier_staleness {
        let _ = writeln!(
            page,
            "| staleness with {} writes in flight (busier emulator): p50 / p99 / max | {} / {} / {} ({}) | — | — |",
            settings.busier_write_concurrency(),
            ms(busier.at(0.5)),
            ms(busier.at(0.99)),
            ms(busier.at(1.0)),
            run_summary(busier)
        );
    }

    let target = bench::target_dir();
    let ns = |group: &str, name: &str| bench::criterion_median_ns(&target, group, name);
    let show_ns = |value: Option<f64>| value.map_or_else(|| "not run".to_owned(), |ns| format!("{ns:.0} ns"));
    let _ = writeln!(
        page,
        "| auth hot path on a hit, in-process (criterion median) | {} whole (token hash + claims + profile + permissions); {} without the token hash | — | {} (`GetItem` + role catalogue on moto) |",
        show_ns(ns("hot_path", "event_cache_hit")),
        show_ns(ns("hot_path", "event_cache_hit_without_token_hash")),
        ns("hot_path", "off_moto").map_or_else(|| "not run".to_owned(), |ns| ms(Duration::from_nanos(ns as u64)))
    );
    let _ = writeln!(
        page,
        "| RS256 verification the claims cache saves (criterion median) | {} | — | — |",
        ns("hot_path", "token_verify_uncached")
            .map_or_else(|| "not run".to_owned(), |ns| format!("{:.1} µs", ns / 1_000.0))
    );
    let transform = ns("transform", "map_and_coalesce_100").map(|ns| 100.0 / (ns * 1e-9));
    let packed = ns("transform", "map_coalesce_and_pack_100").map(|ns| 100.0 / (ns * 1e-9));
    let per_second = |value: Option<f64>| {
        value.map_or_else(|| "not run".to_owned(), |rate| format!("{:.2} M records/s", rate / 1e6))
    };
    let _ = writeln!(
        page,
        "| relay transform, one core (criterion) | {} mapped + coalesced; {} incl. packing + JSON | — | — |",
        per_second(transform),
        per_second(packed)
    );
    let modelled =
        |batch| bench::modelled_publish_calls(1_000, batch).map_or_else(|err| err.to_string(), |n| n.to_string());
    let live = results.live_publish_calls.map_or_else(
        || "not measured".to_owned(),
        |(calls, writes)| {
            format!(
                "{:.0} live (latency-first, batches as small as they come)",
                calls as f64 * 1_000.0 / writes.max(1) as f64
            )
        },
    );
    let _ = writeln!(
        page,
        "| SNS `PublishBatch` calls per 1,000 changed keys | {} in batches of 100 (template `BatchSize`); {} in one batch; {live} | — | — |",
        modelled(100),
        modelled(1_000)
    );
    let idle = results.idle_receives_per_task_hour.map_or_else(
        || "not measured".to_owned(),
        |(per_hour, receives, window)| {
            format!("{per_hour:.0} `ReceiveMessage`/task/h measured ({receives} over {:.0} s, 3 tasks, ticks included); derived from the defaults: ticks of 2 sources every `H` = 5 s each end a long poll, ≤ 1,440 `ReceiveMessage` (+ as many `DeleteMessageBatch`) + 60 `TagQueue` + 12 sweeps × (1 `ListQueues` + 2 `ListQueueTags` for the other tasks' queues)", window.as_secs_f64())
        },
    );
    let _ = writeln!(page, "| SQS requests per task per hour, idle | {idle} | 0 | 0 |");
    let rounds: Vec<String> = results
        .rounds
        .iter()
        .map(|(event, ttl)| format!("{event:.0} / {ttl:.0} ({:+.1} %)", (event / ttl - 1.0) * 100.0))
        .collect();
    let _ = writeln!(
        page,
        "| throughput rounds, `event` / `ttl` req/s, in run order | {} | — | — |",
        rounds.join("; ")
    );
    let _ = writeln!(
        page,
        "| reads past a bypassed cache, every `event` task of the run (healthy steady state) | {} | — | — |",
        results.bypassed_reads
    );
    let memory = results.memory.as_ref().map_or_else(
        || "not measured".to_owned(),
        |m| {
            format!(
                "{:.1} MiB RSS holding {} cached profiles ({:.1} MiB before filling; {:.0} B/profile); fill {:.0} s",
                m.rss_after_kib as f64 / 1_024.0,
                m.cached,
                m.rss_before_kib as f64 / 1_024.0,
                (m.rss_after_kib.saturating_sub(m.rss_before_kib) as f64 * 1_024.0) / m.cached.max(1) as f64,
                m.fill_time.as_secs_f64()
            )
        },
    );
    let _ = writeln!(
        page,
        "| memory of one task, {} profiles | {memory} | — | — |",
        settings.profiles
    );
    if let Some(m) = &results.memory {
        let _ = writeln!(
            page,
            "| local relay end to end on moto ({} inserts → every task evicted) | {} | — | — |",
            m.profiles,
            m.drain_time.map_or_else(
                || "did not drain within bounds".to_owned(),
                |drain| format!(
                    "{:.0} keys/s ({:.0} s; `BatchWriteItem` took {:.0} s)",
                    m.profiles as f64 / drain.as_secs_f64(),
                    drain.as_secs_f64(),
                    m.seed_time.as_secs_f64()
                )
            )
        );
    }
    page.push_str(&goals(results));
    page
}

/// The goals against this run's figures.
fn goals(results: &Results) -> String {
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    };
    let load = |mode: &str| {
        results
            .load
            .iter()
            .find(|(name, _)| *name == mode)
            .map(|(_, report)| report.rps())
    };
    let event_staleness = results
        .staleness
        .iter()
        .find(|(name, _)| name == "event")
        .map(|(_, report)| report);
    let hit_ns = bench::criterion_median_ns(&bench::target_dir(), "hot_path", "event_cache_hit_without_token_hash");
    let mut text = String::from(
        "\n## Goals (issues 6 and 10), judged on this run\n\n| goal | figure | verdict |\n|---|---|---|\n",
    );
    let ratio = load("event").zip(load("off")).map(|(event, off)| event / off);
    let _ = writeln!(
        text,
        "| `event` throughput ≥ 20× `off` | {} | {} |",
        ratio.map_or_else(|| "—".to_owned(), |ratio| format!("{ratio:.0}×")),
        verdict(ratio.map(|ratio| ratio >= 20.0))
    );
    let mut ratios = ratios(&results.rounds);
    ratios.sort_by(f64::total_cmp);
    let median = median_round(&results.rounds).map(|index| results.rounds[index].0 / results.rounds[index].1 - 1.0);
    let _ = writeln!(
        text,
        "| `event` throughput within 10 % of `ttl` (median of {} interleaved rounds) | {} | {} |",
        results.rounds.len(),
        median.map_or_else(
            || "—".to_owned(),
            |delta| format!(
                "{:+.1} % (rounds from {:+.1} % to {:+.1} %)",
                delta * 100.0,
                (ratios.first().copied().unwrap_or(1.0) - 1.0) * 100.0,
                (ratios.last().copied().unwrap_or(1.0) - 1.0) * 100.0
            )
        ),
        verdict(median.map(|delta| delta >= -0.10))
    );
    let _ = writeln!(
        text,
        "| 0 reads past a bypassed cache in the healthy steady state | {} over the run | {} |",
        results.bypassed_reads,
        verdict(Some(results.bypassed_reads == 0))
    );
    let _ = writeln!(
        text,
        "| staleness p99 ≤ 100 ms, max ≤ 250 ms, three tasks (`event`) | {} | {} |",
        event_staleness.map_or_else(
            || "—".to_owned(),
            |r| format!("p99 {}, max {}", ms(r.at(0.99)), ms(r.at(1.0)))
        ),
        verdict(event_staleness.map(|r| {
            r.never_seen == 0 && r.at(0.99) <= Duration::from_millis(100) && r.at(1.0) <= Duration::from_millis(250)
        }))
    );
    let _ = writeln!(
        text,
        "| auth hot path on a hit < 1 µs for the cache part | {} | {} |",
        hit_ns.map_or_else(|| "—".to_owned(), |ns| format!("{ns:.0} ns")),
        verdict(hit_ns.map(|ns| ns < 1_000.0))
    );
    let memory = results.memory.as_ref();
    let _ = writeln!(
        text,
        "| ≤ 100 MiB RSS for 100,000 cached profiles | {} | {} |",
        memory.map_or_else(
            || "—".to_owned(),
            |m| format!("{:.1} MiB for {}", m.rss_after_kib as f64 / 1_024.0, m.cached)
        ),
        verdict(memory.map(|m| m.cached >= 100_000 && m.rss_after_kib <= 100 * 1_024))
    );
    text
}
