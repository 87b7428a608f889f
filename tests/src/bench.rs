//! The measurements behind `scripts/bench` (the `bench` binary): load, staleness, memory and
//! the figures read back from the criterion benches, each a plain async function over a running
//! [`LocalSystem`], so the binary only decides the order and renders the table.
//!
//! Nothing here asserts a speed: the figures are reported, and `BENCHMARKS.md` says which goals
//! they meet. None of it runs under `cargo test` (only the unit tests at the bottom do).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures::StreamExt as _;
use infra::operator::{self, UserChange};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::LocalSystem;

/// Most items one `BatchWriteItem` call takes.
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html>
const BATCH_WRITE_ITEMS: usize = 25;

/// Zipf sampler over ranks `0..n`: rank `k` is drawn with probability ∝ 1 / (k + 1)^s.
///
/// A precomputed CDF and a binary search: exact, and cheap next to an HTTP request.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// Cumulative probabilities, the last one 1.0.
    cdf: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n` ranks with exponent `s` (1.0 is the classic web-traffic shape).
    #[must_use]
    pub fn new(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (1..=n.max(1)).map(|rank| 1.0 / (rank as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut running = 0.0;
        let cdf = weights
            .iter()
            .map(|weight| {
                running += weight / total;
                running
            })
            .collect();
        Self { cdf }
    }

    /// Draws a rank.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> usize {
        let u: f64 = rng.r#gen();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1)
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `fraction` of
/// the samples at or below it. `None` when there are no samples.
#[must_use]
pub fn percentile<T: Copy>(sorted: &[T], fraction: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Bench users: their ids and a bearer token each.
#[derive(Debug, Clone)]
pub struct Users {
    /// User ids, most popular first (the Zipf rank is the index).
    pub ids: Vec<String>,
    /// `ids[k]`'s token.
    pub tokens: Vec<String>,
}

/// Writes `ids` as active `Staff` profiles with `BatchWriteItem`, `concurrency` calls in flight.
///
/// # Errors
/// The SDK's error, or items still unprocessed after retries.
pub async fn seed_profiles(system: &LocalSystem, ids: &[String], concurrency: usize) -> anyhow::Result<()> {
    let dynamodb = system.aws.dynamodb();
    let table = system.stack.users_table.clone();
    // `createdAt` of every bench profile; its value plays no part in any measurement.
    let now = "2025-01-01T00:00:00.000Z".to_owned();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(ids.chunks(BATCH_WRITE_ITEMS))
        .map(|chunk| {
            let dynamodb = dynamodb.clone();
            let table = table.clone();
            let now = now.clone();
            async move {
                let mut requests = chunk
                    .iter()
                    .map(|id| profile_put(id, &now))
                    .collect::<Result<Vec<_>, _>>()?;
                // Unprocessed items come back under throttling; retry them a few times.
                for attempt in 0..10_u32 {
                    let output = dynamodb
                        .batch_write_item()
                        .request_items(&table, requests)
                        .send()
                        .await
                        .context("BatchWriteItem")?;
                    requests = output
                        .unprocessed_items
                        .and_then(|mut items| items.remove(&table))
                        .unwrap_or_default();
                    if requests.is_empty() {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt + 1))).await;
                }
                bail!("{} items still unprocessed", requests.len())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

fn profile_put(id: &str, now: &str) -> anyhow::Result<WriteRequest> {
    let string = |value: &str| AttributeValue::S(value.to_owned());
    let item = [
        ("PK", string(&operator::user_pk(id))),
        ("SK", string("PROFILE")),
        ("userId", string(id)),
        ("email", string(&format!("{id}@example.com"))),
        ("name", string(&format!("User {id}"))),
        ("roles", AttributeValue::L(vec![string("Staff")])),
        ("status", string("active")),
        ("createdAt", string(now)),
        // As on every synced profile: the API neither reads nor caches it.
        ("lastLoginAt", string(now)),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    Ok(WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build()?)
        .build())
}

/// Creates `count` bench users (`bench-0000`…) and mints their tokens.
///
/// # Errors
/// When the profiles cannot be written.
pub async fn bench_users(system: &LocalSystem, count: usize) -> anyhow::Result<Users> {
    let ids: Vec<String> = (0..count).map(|n| format!("bench-{n:04}")).collect();
    seed_profiles(system, &ids, 4).await?;
    let tokens = ids.iter().map(|id| system.token(id, &["Staff"])).collect();
    Ok(Users { ids, tokens })
}

/// An HTTP client for load: keep-alive, enough idle connections for `concurrency`, no Nagle.
///
/// # Errors
/// When the client cannot be built.
pub fn load_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Throughput and latency of one load run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests answered 200 in the measured window.
    pub ok: u64,
    /// Requests answered otherwise, or failed.
    pub errors: u64,
    /// The measured window.
    pub window: Duration,
    /// Median latency of the 200s.
    pub p50: Duration,
    /// 99th percentile latency of the 200s.
    pub p99: Duration,
}

impl LoadReport {
    /// 200s per second.
    #[must_use]
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
}

/// Closed-loop load: `concurrency` workers each send `GET /users/me` as a Zipf-drawn user, one
/// request at a time, for `warmup` (not recorded) then `measure`. Stops by itself.
///
/// # Errors
/// When nothing succeeded (the task is down or every token is refused).
pub async fn load(
    http: &reqwest::Client,
    base_url: &str,
    users: &Users,
    concurrency: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadReport> {
    let zipf = Arc::new(Zipf::new(users.tokens.len(), 1.0));
    let tokens = Arc::new(users.tokens.clone());
    let url = Arc::new(format!("{base_url}/users/me"));
    let started = Instant::now();
    let record_from = started + warmup;
    let stop_at = record_from + measure;
    let workers = (0..concurrency).map(|worker| {
        let (http, zipf, tokens, url) = (http.clone(), Arc::clone(&zipf), Arc::clone(&tokens), Arc::clone(&url));
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            let mut micros: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0_u64;
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let token = &tokens[zipf.sample(&mut rng)];
                let answered = match http.get(url.as_str()).bearer_auth(token).send().await {
                    // Read the body: a real client does, and it frees the connection for reuse.
                    Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if sent < record_from {
                    continue;
                }
                if answered {
                    micros.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    errors += 1;
                }
            }
            (micros, errors)
        })
    });
    let mut micros = Vec::new();
    let mut errors = 0;
    for worker in futures::future::join_all(workers).await {
        let (worker_micros, worker_errors) = worker.context("load worker panicked")?;
        micros.extend(worker_micros);
        errors += worker_errors;
    }
    micros.sort_unstable();
    let micro = |value: Option<u32>| Duration::from_micros(u64::from(value.unwrap_or(0)));
    if micros.is_empty() {
        bail!("no request to {base_url}/users/me succeeded ({errors} errors)");
    }
    Ok(LoadReport {
        ok: micros.len() as u64,
        errors,
        window: measure,
        p50: micro(percentile(&micros, 0.50)),
        p99: micro(percentile(&micros, 0.99)),
    })
}

/// How stale the tasks were after SDK writes.
#[derive(Debug, Clone)]
pub struct StalenessReport {
    /// Writes made.
    pub writes: usize,
    /// Per write: from the write's acknowledgement to the moment the slowest task served it.
    pub sorted: Vec<Duration>,
    /// Per write: to the moment the first task served it. The gap to [`Self::sorted`] is the
    /// fan-out's spread across tasks.
    pub first_sorted: Vec<Duration>,
    /// Writes that some task still did not serve after the patience bound.
    pub never_seen: usize,
    /// Median latency of the `UpdateItem` calls themselves.
    pub write_p50: Duration,
    /// Wall time of the whole phase.
    pub elapsed: Duration,
}

impl StalenessReport {
    /// The `fraction` percentile of staleness (zero when nothing was measured).
    #[must_use]
    pub fn at(&self, fraction: f64) -> Duration {
        percentile(&self.sorted, fraction).unwrap_or_default()
    }
}

/// How the staleness phase runs.
#[derive(Debug, Clone, Copy)]
pub struct StalenessOptions {
    /// Writes to make (user `k % users` for write `k`).
    pub writes: usize,
    /// Writes in flight at once; far fewer than the users, so no two touch the same user.
    pub concurrency: usize,
    /// Pause between two reads of one task while waiting for the new value: the resolution of
    /// the measure, and what keeps the polling itself from loading the tasks.
    pub poll: Duration,
    /// Background reads per second per task (Zipf users), so writes land under read traffic.
    pub background_rps_per_task: u32,
    /// Give up on one write after this long.
    pub patience: Duration,
    /// `Some(interval)`: start one write every `interval` (an open-loop load, the same at any
    /// fleet size, as long as `concurrency` covers the writes in flight); `None`: each write starts
    /// as soon as one of the `concurrency` before it is done (a closed loop, as fast as the stack
    /// allows).
    pub pace: Option<Duration>,
}

/// One write of the staleness run: when the slowest task served it (`None`: one never did within
/// the patience), when the first did, and how long the write took to be acknowledged.
type WriteOutcome = (Option<Duration>, Option<Duration>, Duration);

/// Makes `options.writes` profile changes with the SDK (`UpdateItem`, as an operator script
/// does) while reads run, and measures for each the time from its acknowledgement until
/// **every** task serves the new name on `GET /users/me`.
///
/// Each write first reads the user on every task, so the old value is cached everywhere and
/// the measure is the invalidation (or the TTL), never a cold miss. The tasks are polled
/// concurrently, each every `options.poll`.
///
/// # Errors
/// When a write fails or a task cannot be reached.
pub async fn staleness(
    system: &LocalSystem,
    http: &reqwest::Client,
    users: &Users,
    options: StalenessOptions,
) -> anyhow::Result<StalenessReport> {
    let stop_background = CancellationToken::new();
    let background: Vec<_> = system
        .task_urls
        .iter()
        .enumerate()
        .map(|(index, base)| {
            let (http, users, stop) = (http.clone(), users.clone(), stop_background.clone());
            let url = format!("{base}/users/me");
            let pause = Duration::from_secs(1) / options.background_rps_per_task.max(1);
            tokio::spawn(async move {
                let zipf = Zipf::new(users.tokens.len(), 1.0);
                let mut rng = StdRng::seed_from_u64(1_000 + index as u64);
                let mut ticks = tokio::time::interval(pause);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = ticks.tick() => {}
                    }
                    let token = &users.tokens[zipf.sample(&mut rng)];
                    if let Ok(response) = http.get(&url).bearer_auth(token).send().await {
                        let _ = response.bytes().await;
                    }
                }
            })
        })
        .collect();

    let dynamodb = system.aws.dynamodb();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let paced_from = tokio::time::Instant::now();
    let outcomes: Vec<anyhow::Result<WriteOutcome>> = futures::stream::iter(0..options.writes)
        .map(|write| {
            let user = write % users.ids.len();
            let (dynamodb, run) = (dynamodb.clone(), &run);
            async move {
                if let Some(pace) = options.pace {
                    tokio::time::sleep_until(paced_from + pace * u32::try_from(write).unwrap_or(u32::MAX)).await;
                }
                let (id, token) = (&users.ids[user], &users.tokens[user]);
                // Cache the old value on every task first.
                let warmed =
                    futures::future::join_all(system.task_urls.iter().map(|base| read_name(http, base, token))).await;
                for name in warmed {
                    name?;
                }
                let wanted = format!("w{write}-{run}");
                let change = UserChange {
                    name: Some(wanted.clone()),
                    ..UserChange::default()
                };
                let write_started = Instant::now();
                operator::put_user(&dynamodb, &system.stack.users_table, id, &change).await?;
                let acknowledged = Instant::now();
                let seen = futures::future::join_all(system.task_urls.iter().map(|base| {
                    wait_for_name(
                        http,
                        base,
                        token,
                        &wanted,
                        options.poll,
                        acknowledged + options.patience,
                    )
                }))
                .await;
                let mut slowest = Some(Duration::ZERO);
                let mut first: Option<Duration> = None;
                for at in seen {
                    let at = at?;
                    if let Some(at) = at {
                        let after = at.duration_since(acknowledged);
                        first = Some(first.map_or(after, |first| first.min(after)));
                    }
                    slowest = match (slowest, at) {
                        (Some(slowest), Some(at)) => Some(slowest.max(at.duration_since(acknowledged))),
                        _ => None,
                    };
                }
                Ok((slowest, first, acknowledged.duration_since(write_started)))
            }
        })
        .buffer_unordered(options.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    stop_background.cancel();
    for reader in background {
        let _ = reader.await;
    }

    let mut sorted = Vec::with_capacity(options.writes);
    let mut first_sorted = Vec::with_capacity(options.writes);
    let mut write_latencies = Vec::with_capacity(options.writes);
    let mut never_seen = 0;
    for outcome in outcomes {
        let (slowest, first, write_latency) = outcome?;
        write_latencies.push(write_latency);
        first_sorted.extend(first);
        match slowest {
            Some(slowest) => sorted.push(slowest),
            None => never_seen += 1,
        }
    }
    sorted.sort_unstable();
    first_sorted.sort_unstable();
    write_latencies.sort_unstable();
    Ok(StalenessReport {
        writes: options.writes,
        sorted,
        first_sorted,
        never_seen,
        write_p50: percentile(&write_latencies, 0.5).unwrap_or_default(),
        elapsed,
    })
}

/// The `name` a task serves on `GET /users/me` for this token (`None` on a non-200).
async fn read_name(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<Option<String>> {
    let response = http
        .get(format!("{base}/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("GET {base}/users/me"))?;
    if !response.status().is_success() {
        return Ok(None);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Ok(body.get("name").and_then(Value::as_str).map(str::to_owned))
}

/// Polls one task until it serves `wanted`; the instant it first did, or `None` at `deadline`.
async fn wait_for_name(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    wanted: &str,
    poll: Duration,
    deadline: Instant,
) -> anyhow::Result<Option<Instant>> {
    loop {
        if read_name(http, base, token).await?.as_deref() == Some(wanted) {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Memory of one task holding many cached profiles.
#[derive(Debug, Clone)]
pub struct MemoryReport {
    /// Profiles created and read through the task.
    pub profiles: usize,
    /// Entries in the task's profile cache at the end (`/admin/cache/stats`).
    pub cached: u64,
    /// The task's RSS before the profiles were read, KiB.
    pub rss_before_kib: u64,
    /// The task's RSS holding them, KiB.
    pub rss_after_kib: u64,
    /// Time to create them with `BatchWriteItem`.
    pub seed_time: Duration,
    /// From the first write until the task had applied every insert's invalidation: the
    /// local relay's end-to-end throughput on moto.
    pub drain_time: Option<Duration>,
    /// Time to read them all through the API (fills from moto).
    pub fill_time: Duration,
}

/// Creates `count` profiles, waits until the relay's invalidations for those inserts reached
/// task `index` (otherwise they would evict what is being cached), reads every one through
/// `GET /admin/users/{id}` on that task, and reads the task's RSS.
///
/// # Errors
/// When the task is not running, a write fails, or the stats cannot be read.
pub async fn memory(
    system: &LocalSystem,
    http: &reqwest::Client,
    index: usize,
    count: usize,
) -> anyhow::Result<MemoryReport> {
    let pid = system.tasks[index]
        .as_ref()
        .and_then(|task| task.process.pid())
        .context("the task is not running")?;
    let applied_before = applied_users(system, index).await?;
    let ids: Vec<String> = (0..count).map(|n| format!("mem-{n:06}")).collect();
    let started = Instant::now();
    seed_profiles(system, &ids, 8).await?;
    let seed_time = started.elapsed();

    // Wait for the invalidations of the inserts (each id is a distinct key), up to a bound.
    let mut drain_time = None;
    let mut last = applied_users(system, index).await?;
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(30) {
        if last - applied_before >= count as f64 {
            drain_time = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = applied_users(system, index).await?;
        if now > last {
            last = now;
            last_change = Instant::now();
        }
    }

    let rss_before_kib = rss_kib(pid).context("cannot read the task's VmRSS")?;
    let admin = Arc::new(system.admin_token());
    let base = system.task_urls[index].clone();
    let fill_started = Instant::now();
    let mut cached = 0;
    // A fill that raced an invalidation is (rightly) not kept; a second pass picks those up.
    for _pass in 0..3 {
        futures::stream::iter(ids.iter())
            .for_each_concurrent(32, |id| {
                let (http, admin, url) = (http.clone(), Arc::clone(&admin), format!("{base}/admin/users/{id}"));
                async move {
                    if let Ok(response) = http.get(url).bearer_auth(admin.as_str()).send().await {
                        let _ = response.bytes().await;
                    }
                }
            })
            .await;
        cached = cache_entries(http, &base, &admin, "profiles").await?;
        if cached >= count as u64 {
            break;
        }
    }
    let fill_time = fill_started.elapsed();
    // Let the allocator and moka's housekeeping settle before sampling.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = rss_kib(pid).context("cannot read the task's VmRSS")?;
    Ok(MemoryReport {
        profiles: count,
        cached,
        rss_before_kib,
        rss_after_kib,
        seed_time,
        drain_time,
        fill_time,
    })
}

/// User-key invalidations task `index` has applied.
async fn applied_users(system: &LocalSystem, index: usize) -> anyhow::Result<f64> {
    system
        .metric(index, "staleless_invalidations_applied_total", &[("source", "users")])
        .await
}

/// Entries of one cache from `/admin/cache/stats`.
async fn cache_entries(http: &reqwest::Client, base: &str, admin: &str, cache: &str) -> anyhow::Result<u64> {
    let stats: Value = http
        .get(format!("{base}/admin/cache/stats"))
        .bearer_auth(admin)
        .send()
        .await?
        .json()
        .await?;
    stats["caches"][cache]["entries"]
        .as_u64()
        .with_context(|| format!("no caches.{cache}.entries in {stats}"))
}

/// `VmRSS` of a process, KiB, from `/proc/<pid>/status`.
#[must_use]
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS:")
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// A criterion result: the median estimate of `<group>/<bench>` in nanoseconds, from
/// `target/criterion/<group>/<bench>/new/estimates.json`; `None` when that bench has not run.
#[must_use]
pub fn criterion_median_ns(target_dir: &Path, group: &str, bench: &str) -> Option<f64> {
    let path = target_dir
        .join("criterion")
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: Value = serde_json::from_str(&text).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

/// The workspace's `target/` directory, found from the running binary (`target/release/bench`).
#[must_use]
pub fn target_dir() -> PathBuf {
    let bin_dir = infra::system::binaries_dir();
    bin_dir.parent().map_or(bin_dir.clone(), Path::to_path_buf)
}

/// `PublishBatch` calls the relay makes for `keys` changed keys delivered in batches of
/// `batch` records (the template's `BatchSize`), each batch's keys packed as the relay packs
/// them (one source, ≤ 256 KiB per message, ≤ 10 messages per call).
///
/// # Errors
/// When a key cannot be encoded.
pub fn modelled_publish_calls(keys: usize, batch: usize) -> anyhow::Result<usize> {
    /// <https://docs.aws.amazon.com/sns/latest/api/API_PublishBatch.html>: at most 10 entries.
    const ENTRIES_PER_CALL: usize = 10;
    let mut calls = 0;
    let ids: Vec<usize> = (0..keys).collect();
    for chunk in ids.chunks(batch.max(1)) {
        let key_versions = chunk.iter().map(|n| staleless_protocol::KeyVersion {
            id: format!("user-{n:06}"),
            seq: staleless_protocol::SequenceNumber(format!("{}", 4_100_000_000_000_000_000_u64 + *n as u64)),
            at_ms: 1_732_500_000_123,
        });
        let messages = staleless_protocol::pack_invalidation_messages(
            &staleless_protocol::Source::USERS,
            key_versions,
            staleless_protocol::sns_body_budget(),
        )?;
        calls += messages.len().div_ceil(ENTRIES_PER_CALL);
    }
    Ok(calls)
}

/// The machine, for the report: cores, CPU model, memory.
#[must_use]
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| parse_status_kib(&info, "MemTotal:"))
        .map_or_else(
            || "unknown memory".to_owned(),
            |kib| format!("{:.1} GiB RAM", kib as f64 / 1_048_576.0),
        );
    // Other work on the machine skews every figure; the load average when the run started says
    // whether it had the machine to itself.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "{cores} cores ({cpu}), {memory}, {}; 1-min load average {load} at the start",
        std::env::consts::OS
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let zipf = Zipf::new(1_000, 1.0);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0_u32; 1_000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // With s = 1 and n = 1,000, rank 0 has probability 1 / H(1000) ≈ 13.4 %.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
        assert!(counts.iter().sum::<u32>() == 100_000);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), Some(50));
        assert_eq!(percentile(&samples, 0.99), Some(99));
        assert_eq!(percentile(&samples, 1.0), Some(100));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tstaleless-api\nVmHWM:\t  90000 kB\nVmRSS:\t   81234 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(81_234));
    }
}
