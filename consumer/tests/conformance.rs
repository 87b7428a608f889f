//! Runs every conformance vector of `protocol/conformance/` against this crate: the real
//! [`ChannelHealth`], [`Inbox`] and [`TrustedCache`], on a [`ManualClock`]. The Python package
//! runs the same files; `protocol/conformance/README.md` says what each step and expectation
//! means. A step or an expectation this runner does not know fails the vector, so a typo in a
//! vector cannot pass unnoticed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use staleless_consumer::{
    CacheMode, Caches, ChannelHealth, Clock, Evict, FillAborted, Inbox, ManualClock, MetricNames, ReadPath, Received,
    SourceSpec, TrustRules, TrustedCache,
};
use staleless_protocol::KeyVersion;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    #[allow(dead_code)] // for readers of the file
    description: String,
    config: Config,
    steps: Vec<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    bound_ms: u64,
    future_tolerance_ms: u64,
    writers: Vec<String>,
    sources: Vec<SourceConfig>,
    #[serde(default)]
    tables: BTreeMap<String, String>,
    start_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceConfig {
    source: String,
    cache: String,
}

/// A loader's failure (none in the vectors but a dropped held loader).
#[derive(Debug, Clone)]
struct LoadError(String);

impl From<FillAborted> for LoadError {
    fn from(aborted: FillAborted) -> Self {
        Self(aborted.0)
    }
}

type Cache = TrustedCache<String, String, LoadError>;

/// Registered beside each cache: whether a step flushed it.
#[derive(Default)]
struct FlushRecorder(AtomicBool);

impl Evict for FlushRecorder {
    fn evict(&self, _keys: &[KeyVersion]) -> usize {
        0
    }

    fn flush(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A reader in flight.
struct Fill {
    /// Its answer.
    reader: JoinHandle<Result<String, LoadError>>,
    /// Releases its held loader, when that loader ran.
    release: Option<oneshot::Sender<String>>,
    /// Whether its own loader ran.
    loaded: Arc<AtomicBool>,
}

/// One consumer, as a task runs it, driven step by step.
struct Consumer {
    clock: Arc<ManualClock>,
    health: Arc<ChannelHealth>,
    inbox: Inbox,
    caches: BTreeMap<String, Cache>,
    flushes: BTreeMap<String, Arc<FlushRecorder>>,
    fills: HashMap<String, Fill>,
}

/// What a step observed, for its expectations.
#[derive(Default)]
struct Observed {
    outcome: Option<&'static str>,
    tick: Option<&'static str>,
    path: Option<ReadPath>,
    loaded: Option<bool>,
    served: Option<String>,
}

impl Consumer {
    fn new(config: &Config) -> Self {
        let clock = ManualClock::new(config.start_ms);
        let specs: Vec<SourceSpec> = config
            .sources
            .iter()
            .map(|source| SourceSpec::new(&source.source, &source.cache))
            .collect();
        let rules = TrustRules::new(
            Duration::from_millis(config.bound_ms),
            Duration::from_millis(config.future_tolerance_ms),
            &config.writers,
        );
        let health = Arc::new(
            ChannelHealth::new(rules, &specs, MetricNames::default()).with_clock(Clock::Manual(Arc::clone(&clock))),
        );
        let mut registry = Caches::new();
        let mut caches = BTreeMap::new();
        let mut flushes = BTreeMap::new();
        for spec in &specs {
            let cache: Cache = TrustedCache::new(
                Arc::clone(&health),
                &spec.source,
                CacheMode::Event,
                10_000,
                Duration::from_secs(3_600),
            );
            let recorder = Arc::new(FlushRecorder::default());
            registry = registry
                .register(&spec.source, Arc::new(cache.clone()))
                .register(&spec.source, recorder.clone());
            caches.insert(spec.source.clone(), cache);
            flushes.insert(spec.source.clone(), recorder);
        }
        let inbox = config
            .tables
            .iter()
            .fold(Inbox::new(Arc::clone(&health), registry), |inbox, (table, source)| {
                inbox.with_table(table, source)
            });
        Self {
            clock,
            health,
            inbox,
            caches,
            flushes,
            fills: HashMap::new(),
        }
    }

    fn cache(&self, source: &str) -> Result<&Cache, String> {
        self.caches
            .get(source)
            .ok_or_else(|| format!("no cache for source {source:?}"))
    }

    /// Runs one step (its parameters in `step`) and returns what it observed.
    async fn run(&mut self, step: &Map<String, Value>) -> Result<Observed, String> {
        let action = text(step, "do")?;
        let mut observed = Observed::default();
        match action.as_str() {
            "subscribe" => {
                only(step, &[])?;
                self.inbox.flush_all_sources("conformance: (re)subscribed");
                self.health.mark_subscribed("conformance");
            }
            "unsubscribe" => {
                only(step, &[])?;
                self.health.mark_unsubscribed();
            }
            "advance" => {
                only(step, &["ms"])?;
                let ms = step
                    .get("ms")
                    .and_then(Value::as_u64)
                    .ok_or("advance needs a non-negative integer `ms`")?;
                self.clock.advance(ms);
            }
            "stepWallClock" => {
                only(step, &["ms"])?;
                let ms = step
                    .get("ms")
                    .and_then(Value::as_i64)
                    .ok_or("stepWallClock needs an integer `ms`")?;
                self.clock.step_wall(ms);
            }
            "receive" => {
                only(step, &["body"])?;
                let received = self.inbox.receive(&text(step, "body")?);
                observed.outcome = Some(received.outcome());
                if let Received::Tick(admission) = received {
                    observed.tick = Some(admission.map_or_else(|rejection| rejection.as_str(), |()| "admitted"));
                }
            }
            "read" => {
                only(step, &["source", "key", "loaded"])?;
                let (fill, path) = self.start_read(step, false)?;
                settle().await;
                observed.path = Some(path);
                observed.loaded = Some(fill.loaded.load(Ordering::Acquire));
                observed.served = Some(finish(fill.reader, "read").await?);
            }
            "fillStart" => {
                only(step, &["fill", "source", "key"])?;
                let id = text(step, "fill")?;
                let (fill, path) = self.start_read(step, true)?;
                settle().await;
                observed.path = Some(path);
                observed.loaded = Some(fill.loaded.load(Ordering::Acquire));
                if self.fills.insert(id.clone(), fill).is_some() {
                    return Err(format!("fill {id:?} started twice"));
                }
            }
            "fillEnd" => {
                only(step, &["fill", "loaded"])?;
                let id = text(step, "fill")?;
                let mut fill = self.fills.remove(&id).ok_or_else(|| format!("no fill {id:?}"))?;
                let release = fill
                    .release
                    .take()
                    .filter(|_| fill.loaded.load(Ordering::Acquire))
                    .ok_or_else(|| format!("fill {id:?} joined another load: use `await`"))?;
                release
                    .send(text(step, "loaded")?)
                    .map_err(|_| format!("fill {id:?}: its load was dropped"))?;
                observed.served = Some(finish(fill.reader, "fillEnd").await?);
            }
            "await" => {
                only(step, &["fill"])?;
                let id = text(step, "fill")?;
                let fill = self.fills.remove(&id).ok_or_else(|| format!("no fill {id:?}"))?;
                if fill.loaded.load(Ordering::Acquire) {
                    return Err(format!("fill {id:?} holds its own loader: use `fillEnd`"));
                }
                observed.served = Some(finish(fill.reader, "await").await?);
            }
            other => return Err(format!("unknown step {other:?}")),
        }
        settle().await;
        Ok(observed)
    }

    /// Starts a read of `step`'s key; its loader answers `loaded` at once, or is held open
    /// until `fillEnd` when `hold`.
    fn start_read(&self, step: &Map<String, Value>, hold: bool) -> Result<(Fill, ReadPath), String> {
        let cache = self.cache(&text(step, "source")?)?.clone();
        let key = text(step, "key")?;
        let loaded = Arc::new(AtomicBool::new(false));
        let (release, held) = oneshot::channel::<String>();
        let answer = if hold { None } else { Some(text(step, "loaded")?) };
        let path = cache.read_path();
        let ran = Arc::clone(&loaded);
        let reader = tokio::spawn(async move {
            cache
                .get(key.as_str(), move || {
                    ran.store(true, Ordering::Release);
                    async move {
                        match answer {
                            Some(value) => Ok(value),
                            None => held.await.map_err(|_| LoadError("held loader dropped".to_owned())),
                        }
                    }
                })
                .await
        });
        Ok((
            Fill {
                reader,
                release: hold.then_some(release),
                loaded,
            },
            path,
        ))
    }

    /// Checks `expect` against the consumer now and what the step observed.
    fn check(&self, expect: &Map<String, Value>, observed: &Observed) -> Vec<String> {
        let mut failures = Vec::new();
        for (key, expected) in expect {
            match key.as_str() {
                "outcome" => differs(&mut failures, key, expected, observed.outcome.into()),
                "tick" => differs(&mut failures, key, expected, observed.tick.into()),
                "path" => differs(
                    &mut failures,
                    key,
                    expected,
                    observed
                        .path
                        .map(|path| match path {
                            ReadPath::Cache => "cache",
                            ReadPath::Bypass => "bypass",
                        })
                        .into(),
                ),
                "loaded" => differs(&mut failures, key, expected, observed.loaded.into()),
                "served" => differs(&mut failures, key, expected, observed.served.clone().into()),
                "ready" => differs(&mut failures, key, expected, self.health.is_ready().into()),
                "flushed" => {
                    let flushed: BTreeSet<&String> = self
                        .flushes
                        .iter()
                        .filter(|(_, recorder)| recorder.0.load(Ordering::Acquire))
                        .map(|(source, _)| source)
                        .collect();
                    differs(&mut failures, key, expected, serde_json::json!(flushed));
                }
                "trusted" => match expected.as_object() {
                    Some(sources) => {
                        for (source, expected) in sources {
                            differs(
                                &mut failures,
                                &format!("trusted.{source}"),
                                expected,
                                self.health.is_trusted(source).into(),
                            );
                        }
                    }
                    None => failures.push("trusted: expected an object".to_owned()),
                },
                "cached" => match expected.as_object() {
                    Some(sources) => {
                        for (source, keys) in sources {
                            let (Ok(cache), Some(keys)) = (self.cache(source), keys.as_object()) else {
                                failures.push(format!("cached.{source}: no such cache, or not an object"));
                                continue;
                            };
                            for (id, expected) in keys {
                                differs(
                                    &mut failures,
                                    &format!("cached.{source}.{id}"),
                                    expected,
                                    cache.peek(id.as_str()).into(),
                                );
                            }
                        }
                    }
                    None => failures.push("cached: expected an object".to_owned()),
                },
                other => failures.push(format!("unknown expectation {other:?}")),
            }
        }
        failures
    }

    fn reset_flushes(&self) {
        for recorder in self.flushes.values() {
            recorder.0.store(false, Ordering::Release);
        }
    }
}

/// Records a failure when `actual` is not `expected`.
fn differs(failures: &mut Vec<String>, what: &str, expected: &Value, actual: Value) {
    if *expected != actual {
        failures.push(format!("{what}: expected {expected}, got {actual}"));
    }
}

fn text(step: &Map<String, Value>, field: &str) -> Result<String, String> {
    step.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("missing string `{field}`"))
}

/// Fails on a parameter the step does not take (besides `do` and `expect`).
fn only(step: &Map<String, Value>, parameters: &[&str]) -> Result<(), String> {
    match step
        .keys()
        .find(|key| !matches!(key.as_str(), "do" | "expect") && !parameters.contains(&key.as_str()))
    {
        Some(unknown) => Err(format!("unknown parameter {unknown:?}")),
        None => Ok(()),
    }
}

/// Lets every spawned reader and fill run until it waits on something a later step releases.
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// The answer of a reader that must complete now.
async fn finish(reader: JoinHandle<Result<String, LoadError>>, step: &str) -> Result<String, String> {
    settle().await;
    if !reader.is_finished() {
        reader.abort();
        return Err(format!("{step}: the reader is still waiting (it joined a held load?)"));
    }
    match reader.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(LoadError(err))) => Err(format!("{step}: the load failed: {err}")),
        Err(err) => Err(format!("{step}: the reader panicked: {err}")),
    }
}

fn vector_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

/// Runs one vector; the failures, each naming the step.
async fn run_vector(vector: &Vector) -> Vec<String> {
    let mut consumer = Consumer::new(&vector.config);
    let mut failures = Vec::new();
    for (index, step) in vector.steps.iter().enumerate() {
        let name = step.get("do").and_then(Value::as_str).unwrap_or("?");
        consumer.reset_flushes();
        let observed = match consumer.run(step).await {
            Ok(observed) => observed,
            Err(err) => {
                failures.push(format!("step {index} ({name}): {err}"));
                break;
            }
        };
        let expect = match step.get("expect") {
            None => continue,
            Some(Value::Object(expect)) => expect,
            Some(_) => {
                failures.push(format!("step {index} ({name}): `expect` must be an object"));
                break;
            }
        };
        failures.extend(
            consumer
                .check(expect, &observed)
                .into_iter()
                .map(|failure| format!("step {index} ({name}): {failure}")),
        );
    }
    failures
}

#[tokio::test(flavor = "current_thread")]
async fn the_consumer_passes_every_conformance_vector() {
    let files = vector_files();
    assert!(!files.is_empty(), "no conformance vectors found");
    let mut names = BTreeSet::new();
    let (mut steps, mut report) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        let vector: Vector =
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: not a vector: {err}", file.display()));
        assert!(
            file.file_stem().is_some_and(|stem| stem == vector.name.as_str()),
            "{}: the file is named after its vector ({})",
            file.display(),
            vector.name
        );
        assert!(names.insert(vector.name.clone()), "vector {} twice", vector.name);
        steps += vector.steps.len();
        let failures = run_vector(&vector).await;
        report.extend(
            failures
                .into_iter()
                .map(|failure| format!("{}: {failure}", vector.name)),
        );
    }
    assert!(report.is_empty(), "conformance failures:\n{}", report.join("\n"));
    eprintln!("{} conformance vectors, {steps} steps: all passed", files.len());
}

/// The runner itself can fail: a vector that expects the wrong thing, or names a step or an
/// expectation it does not know, is reported, never passed.
#[tokio::test(flavor = "current_thread")]
async fn a_wrong_expectation_or_an_unknown_step_fails_the_vector() {
    let vector = |steps: Value| -> Vector {
        serde_json::from_value(serde_json::json!({
            "name": "self-check",
            "description": "",
            "config": {"boundMs": 15000, "futureToleranceMs": 500, "writers": ["staleless"],
                       "sources": [{"source": "users", "cache": "profiles"}], "startMs": 1_800_000_000_000_i64},
            "steps": steps,
        }))
        .expect("vector")
    };
    let wrong = vector(serde_json::json!([{"do": "subscribe", "expect": {"trusted": {"users": true}}}]));
    assert_eq!(run_vector(&wrong).await.len(), 1);
    let unknown_step = vector(serde_json::json!([{"do": "teleport"}]));
    assert_eq!(run_vector(&unknown_step).await.len(), 1);
    let unknown_expectation = vector(serde_json::json!([{"do": "subscribe", "expect": {"trustd": {}}}]));
    assert_eq!(run_vector(&unknown_expectation).await.len(), 1);
    let unknown_parameter = vector(serde_json::json!([{"do": "advance", "ms": 1, "by": 2}]));
    assert_eq!(run_vector(&unknown_parameter).await.len(), 1);
    let right = vector(
        serde_json::json!([{"do": "subscribe", "expect": {"trusted": {"users": false}, "flushed": ["users"], "ready": true}}]),
    );
    assert!(run_vector(&right).await.is_empty());
}
