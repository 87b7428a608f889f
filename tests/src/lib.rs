//! Harness for the end-to-end tests: the real binaries (the relay's Lambda binary under the local
//! Lambda, invoked by the event source mapping `infra relay`; the heartbeat writer; two
//! `staleless-api` tasks) against a moto server of their own, with a uniquely named stack.
//!
//! - [`LocalSystem`]: starts and stops the whole system and talks to its tasks over HTTP.
//! - [`faults`]: the fault matrix rows, shared by the tests and the `fault-matrix` command.
//! - [`bench`](mod@bench), [`bench_proxy`], [`fleet`], [`invoke_bench`]: the measurements of the `bench`
//!   command (`scripts/bench`).

pub mod bench;
pub mod bench_proxy;
pub mod faults;
pub mod fleet;
pub mod hostile;
pub mod invoke_bench;
pub mod page;
pub mod plots;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use infra::jwt::LocalJwt;
use infra::system::{self, ApiTask, Component};
use infra::{LocalAws, LocalStack, Provisioned};
use serde_json::Value;

/// Generous bound for liveness waits: a change must show up well before this on a loaded CI
/// machine. It bounds how long a failing test hangs; it is not a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How long a starting system may take to be quiescent (every task trusting ticks written after
/// the seed): a hang guard for cold starts on a busy machine, not a speed assertion.
pub const START_PATIENCE: Duration = Duration::from_secs(60);

/// The relay function's timeout in the end-to-end tests.
pub const RELAY_FUNCTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the event source mapping of a test system polls a shard with nothing new, in ms
/// (see where the environment is assembled).
pub const TEST_POLL_INTERVAL_MS: u64 = 100;

/// The whole local system.
pub struct LocalSystem {
    /// The emulator and SDK clients.
    pub aws: LocalAws,
    /// The provisioned stack.
    pub stack: Provisioned,
    /// Signs tokens the tasks accept.
    pub jwt: LocalJwt,
    /// The proxy in front of SNS for the relay, when asked for.
    pub sns_proxy: Option<infra::proxy::SwitchableProxy>,
    /// Counts the relay function's SNS calls by action, when [`SystemOptions::count_relay_sns`].
    pub relay_sns_counter: Option<bench_proxy::CountingProxy>,
    /// The relay function's process (its Lambda binary); `None` while killed.
    pub relay: Option<Component>,
    /// The local Lambda service the function polls and the event source mapping invokes.
    pub lambda: Option<Component>,
    /// The event source mapping (`infra relay --invoke-endpoint`).
    pub event_source: Option<Component>,
    /// Starts new execution environments of the relay function.
    relay_spawner: Option<system::FunctionSpawner>,
    /// The runtime API the relay function polls (AWS's `next` in front of the local Lambda's).
    runtime_api: Option<infra::runtime_api::RuntimeApi>,
    /// The heartbeat writer process; `None` while stopped.
    pub heartbeat: Option<Component>,
    /// The API task processes; `None` while stopped.
    pub tasks: Vec<Option<ApiTask>>,
    /// The example service (a service on the consumer crate alone), when asked for.
    pub example: Option<ApiTask>,
    /// The FastAPI example (a service on the Python package), when asked for.
    pub py_example: Option<ApiTask>,
    /// Base URLs of the tasks (kept across restarts: a restarted task binds the same port).
    pub task_urls: Vec<String>,
    /// Environment shared by every component.
    env: Vec<(String, String)>,
    /// Environment of the relay only (e.g. SNS through a proxy).
    relay_env: Vec<(String, String)>,
    /// Logs, key pair, checkpoints.
    state_dir: PathBuf,
    /// The template the stack was provisioned from.
    template: PathBuf,
    /// `target/debug`.
    bin_dir: PathBuf,
    /// HTTP client for the tasks.
    http: reqwest::Client,
    /// Whether the tasks run the invalidation channel (`CACHE_MODE=event`) and so hear ticks.
    hears_ticks: bool,
    /// The heartbeat writer's interval `H`.
    pub heartbeat_interval: Duration,
    /// The tasks' freshness bound `B`.
    pub staleness_bound: Duration,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// How many API tasks.
    pub tasks: usize,
    /// `CACHE_MODE` of every task.
    pub cache_mode: String,
    /// Extra environment for every task.
    pub task_env: Vec<(String, String)>,
    /// Route the relay's SNS calls through a [`infra::proxy::SwitchableProxy`] (see
    /// [`LocalSystem::sns_proxy`]).
    pub sns_through_proxy: bool,
    /// Route the relay's SNS calls through a [`bench_proxy::CountingProxy`] from its start (see
    /// [`LocalSystem::relay_sns_counter`]): the function is never restarted behind the running
    /// local Lambda to change its endpoint.
    pub count_relay_sns: bool,
    /// Extra environment of the relay's processes (the event source mapping and the function):
    /// `RELAY_FUNCTION_TIMEOUT_SECS`, `RELAY_FUNCTION_BINARY`… (the template is [`Self::template`]).
    pub relay_env: Vec<(String, String)>,
    /// The tasks' freshness bound `B` (`STALENESS_BOUND_SECS`).
    pub staleness_bound: Duration,
    /// The heartbeat writer's interval `H` (`HEARTBEAT_INTERVAL_SECS`).
    pub heartbeat_interval: Duration,
    /// Also run the example service (`staleless-example`) beside the tasks.
    pub example: bool,
    /// Also run the FastAPI example (`python -m examples.fastapi_profiles`) beside the tasks.
    pub py_example: bool,
    /// The template to provision and configure the relay from, when not the repository's.
    pub template: Option<PathBuf>,
    /// Extra environment of the heartbeat writer (`HEARTBEAT_TABLES`, a third source's table).
    pub heartbeat_env: Vec<(String, String)>,
}

impl SystemOptions {
    /// The short bound of the end-to-end tests: faults trip it in seconds, and a heartbeat every
    /// half second keeps it four times over on a loaded machine.
    pub const TEST_BOUND: Duration = Duration::from_secs(3);
}

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            tasks: 2,
            cache_mode: "event".to_owned(),
            task_env: Vec::new(),
            sns_through_proxy: false,
            count_relay_sns: false,
            relay_env: Vec::new(),
            staleness_bound: Self::TEST_BOUND,
            heartbeat_interval: Duration::from_millis(500),
            example: false,
            py_example: false,
            template: None,
            heartbeat_env: Vec::new(),
        }
    }
}

impl LocalSystem {
    /// Starts an emulator, provisions and seeds a unique stack, then the relay and the tasks.
    ///
    /// # Errors
    /// When any component fails to start; its log path is in the message.
    pub async fn start(options: SystemOptions) -> anyhow::Result<Self> {
        let local = LocalStack::seeded(LocalAws::start()?, options.template.as_deref(), None, None).await?;
        let template = options
            .template
            .clone()
            .unwrap_or_else(infra::template::default_template_path);
        let jwt = LocalJwt::load_or_generate(&local.key_dir())?;
        let mut env = local.component_env("info");
        let LocalStack {
            aws,
            stack,
            seeded_at_ms,
            state_dir,
        } = local;
        let bin_dir = system::binaries_dir();
        for binary in ["infra", "staleless-api", "stream-relay"] {
            if !bin_dir.join(binary).exists() {
                bail!(
                    "{} is not built: run `scripts/test --quick` (or `cargo build --workspace --bins`) first",
                    bin_dir.join(binary).display()
                );
            }
        }

        env.extend(
            [
                (
                    "HEARTBEAT_INTERVAL_SECS",
                    options.heartbeat_interval.as_secs_f64().to_string(),
                ),
                ("STALENESS_BOUND_SECS", options.staleness_bound.as_secs().to_string()),
                // The local event source mapping polls each shard every 100 ms here (AWS's
                // Lambda: about every 250 ms; `infra up`: 20 ms, for the propagation bench). A
                // test system's moto then serves a fifth of the idle `GetRecords` calls, which
                // otherwise take most of its CPU; every bound here is seconds.
                ("RELAY_POLL_INTERVAL_MS", TEST_POLL_INTERVAL_MS.to_string()),
                // A killed relay's invocation in flight fails after this (the template's 30 s
                // would outlast the tests' patience); the relay itself answers in milliseconds.
                (
                    "RELAY_FUNCTION_TIMEOUT_SECS",
                    RELAY_FUNCTION_TIMEOUT.as_secs().to_string(),
                ),
            ]
            .map(|(key, value)| (key.to_owned(), value)),
        );
        let sns_proxy = if options.sns_through_proxy {
            Some(infra::proxy::SwitchableProxy::start(aws.endpoint()).await?)
        } else {
            None
        };
        let relay_sns_counter = if options.count_relay_sns {
            Some(bench_proxy::CountingProxy::start(aws.endpoint()).await?)
        } else {
            None
        };
        let mut relay_env = env.clone();
        let relay_sns_endpoint = sns_proxy
            .as_ref()
            .map(infra::proxy::SwitchableProxy::url)
            .or_else(|| relay_sns_counter.as_ref().map(bench_proxy::CountingProxy::url));
        if let Some(url) = relay_sns_endpoint {
            relay_env.push(("AWS_ENDPOINT_URL_SNS".to_owned(), url.to_owned()));
        }
        relay_env.extend(options.relay_env.iter().cloned());
        let mut task_env = env;
        task_env.push(("CACHE_MODE".to_owned(), options.cache_mode.clone()));
        task_env.extend(options.task_env.iter().cloned());

        let mut system = Self {
            aws,
            stack,
            jwt,
            sns_proxy,
            relay_sns_counter,
            relay: None,
            lambda: None,
            event_source: None,
            relay_spawner: None,
            runtime_api: None,
            heartbeat: None,
            tasks: Vec::new(),
            example: None,
            py_example: None,
            task_urls: Vec::new(),
            env: task_env,
            relay_env,
            state_dir,
            template,
            bin_dir,
            http: reqwest::Client::new(),
            hears_ticks: options.cache_mode == "event",
            heartbeat_interval: options.heartbeat_interval,
            staleness_bound: options.staleness_bound,
        };
        system.start_relay_processes().await?;
        system.start_heartbeat()?;
        for index in 0..options.tasks {
            let port = infra::emulator::free_port()?;
            system.task_urls.push(format!("http://127.0.0.1:{port}"));
            system.tasks.push(None);
            system.start_task(index).await?;
        }
        if options.example {
            let bind = format!("127.0.0.1:{}", infra::emulator::free_port()?);
            let log = system.logs_dir().join(format!("{}.log", system::EXAMPLE_NAME));
            let example =
                ApiTask::start_example(&system.bin_dir, &bind, &system.env, &log, Duration::from_secs(60)).await?;
            system.example = Some(example);
        }
        if options.py_example {
            let bind = format!("127.0.0.1:{}", infra::emulator::free_port()?);
            let log = system.logs_dir().join(format!("{}.log", system::PY_EXAMPLE_NAME));
            system.py_example =
                Some(ApiTask::start_py_example(&bind, &system.env, &log, Duration::from_secs(60)).await?);
        }
        // A cold start (the local Lambda's first invocation, every task's first subscription) on a
        // machine busy with other builds can take a while: a longer wait, still only a hang guard.
        system.until_ticks_within(seeded_at_ms, START_PATIENCE).await?;
        Ok(system)
    }

    /// Waits until every running task has received ticks of both sources written after
    /// `written_after_ms` (Unix ms); at once for tasks without a channel (`ttl`, `off`). The stream is ordered, so the relay has then published
    /// every change made before that instant and every task has applied it: the system is
    /// quiescent, and what a test measures next is its own doing.
    ///
    /// # Errors
    /// When a task has not heard such ticks within [`PATIENCE`].
    pub async fn until_ticks_after(&self, written_after_ms: i64) -> anyhow::Result<()> {
        self.until_ticks_within(written_after_ms, PATIENCE).await
    }

    /// [`Self::until_ticks_after`], waiting at most `patience` per task.
    async fn until_ticks_within(&self, written_after_ms: i64, patience: Duration) -> anyhow::Result<()> {
        if !self.hears_ticks {
            // `ttl` and `off` tasks run no channel: nothing of the pipeline reaches them.
            return Ok(());
        }
        #[allow(clippy::cast_precision_loss)] // Unix ms fit an f64 exactly
        let after_secs = written_after_ms as f64 / 1_000.0;
        for index in (0..self.tasks.len()).filter(|index| self.tasks[*index].is_some()) {
            eventually(
                patience,
                &format!("task {index} to hear ticks written after the seed"),
                || async move {
                    let text = self
                        .http
                        .get(format!("{}/metrics", self.task_urls[index]))
                        .send()
                        .await?
                        .text()
                        .await?;
                    Ok(["users", "roles"].into_iter().all(|source| {
                        sum_metric(&text, "staleless_tick_written_timestamp_seconds", &[("source", source)])
                            > after_secs
                    }))
                },
            )
            .await?;
        }
        for example in [&self.example, &self.py_example].into_iter().flatten() {
            let url = format!("{}/metrics", example.base_url);
            let what = format!("{} to hear ticks written after the seed", example.process.name());
            eventually(patience, &what, || {
                let url = url.clone();
                async move {
                    let text = self.http.get(url).send().await?.text().await?;
                    Ok(sum_metric(
                        &text,
                        "staleless_tick_written_timestamp_seconds",
                        &[("source", "users")],
                    ) > after_secs)
                }
            })
            .await?;
        }
        Ok(())
    }

    /// The example service's answer for `user`: its status and the name it serves.
    ///
    /// # Errors
    /// When no example runs or the request fails.
    pub async fn example_name(&self, user: &str) -> anyhow::Result<(u16, Option<String>)> {
        let example = self.example.as_ref().context("no example service in this system")?;
        self.profile_name(&example.base_url, user).await
    }

    /// The FastAPI example's answer for `user`, as [`Self::example_name`].
    ///
    /// # Errors
    /// When no FastAPI example runs or the request fails.
    pub async fn py_example_name(&self, user: &str) -> anyhow::Result<(u16, Option<String>)> {
        let example = self.py_example.as_ref().context("no FastAPI example in this system")?;
        self.profile_name(&example.base_url, user).await
    }

    /// `GET <base_url>/profiles/{user}` of an example service: its status and the name served.
    async fn profile_name(&self, base_url: &str, user: &str) -> anyhow::Result<(u16, Option<String>)> {
        let response = self.http.get(format!("{base_url}/profiles/{user}")).send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, body["name"].as_str().map(str::to_owned)))
    }

    /// Whether the example serves its cache now (`staleless_cache_trusted{cache="profiles"}`).
    ///
    /// # Errors
    /// When no example runs or `/metrics` cannot be read.
    pub async fn example_trusts_its_cache(&self) -> anyhow::Result<bool> {
        let example = self.example.as_ref().context("no example service in this system")?;
        self.trusts_its_cache(example).await
    }

    /// For each example service that runs (the Rust one, then the FastAPI one): whether it
    /// serves its cache now.
    ///
    /// # Errors
    /// When a `/metrics` cannot be read.
    pub async fn examples_trusting(&self) -> anyhow::Result<Vec<bool>> {
        let mut trusting = Vec::new();
        for example in [&self.example, &self.py_example].into_iter().flatten() {
            trusting.push(self.trusts_its_cache(example).await?);
        }
        Ok(trusting)
    }

    async fn trusts_its_cache(&self, example: &ApiTask) -> anyhow::Result<bool> {
        let text = self
            .http
            .get(format!("{}/metrics", example.base_url))
            .send()
            .await?
            .text()
            .await?;
        Ok(sum_metric(&text, "staleless_cache_trusted", &[("cache", "profiles")]) >= 1.0)
    }

    /// [`Self::until_ticks_after`] now: everything written so far has reached every task.
    ///
    /// # Errors
    /// See [`Self::until_ticks_after`].
    pub async fn until_quiescent(&self) -> anyhow::Result<()> {
        self.until_ticks_after(chrono::Utc::now().timestamp_millis()).await
    }

    /// (Re)starts the heartbeat writer.
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn start_heartbeat(&mut self) -> anyhow::Result<()> {
        let heartbeat = system::start_heartbeat(
            &self.bin_dir,
            &self.template,
            &self.stack,
            &self.relay_env,
            &self.logs_dir().join("heartbeat.log"),
        )?;
        self.heartbeat = Some(heartbeat);
        Ok(())
    }

    /// Starts the relay as Lambda runs it: the local Lambda, the function, the event source.
    async fn start_relay_processes(&mut self) -> anyhow::Result<()> {
        let relay = system::start_relay(system::RelaySetup {
            bin_dir: &self.bin_dir,
            template: &self.template,
            stack: &self.stack,
            env: &self.relay_env,
            checkpoint_dir: &self.state_dir.join("checkpoints"),
            logs: &self.logs_dir(),
            function: system::FunctionProgram::from_env(&self.bin_dir),
        })
        .await?;
        self.lambda = Some(relay.lambda);
        self.relay = Some(relay.function);
        self.event_source = Some(relay.event_source);
        self.relay_spawner = Some(relay.spawner);
        self.runtime_api = Some(relay.runtime_api);
        Ok(())
    }

    /// Starts a new execution environment of the relay function (after [`Self::kill_relay`]);
    /// the event source mapping's next invocation reaches it.
    ///
    /// # Errors
    /// When the process cannot start.
    pub fn start_relay(&mut self) -> anyhow::Result<()> {
        let spawner = self.relay_spawner.as_ref().context("the relay was never started")?;
        self.relay = Some(spawner.start()?);
        Ok(())
    }

    /// Kills the relay function at once, as a crash would (an invocation in flight times out).
    pub fn kill_relay(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.kill();
        }
    }

    /// (Re)starts task `index` on its port and waits until it is ready.
    ///
    /// # Errors
    /// When it does not become ready.
    pub async fn start_task(&mut self, index: usize) -> anyhow::Result<()> {
        let name = format!("api-{index}");
        let bind = self.task_urls[index].trim_start_matches("http://").to_owned();
        let log = self.logs_dir().join(format!("{name}.log"));
        let task = ApiTask::start(&name, &self.bin_dir, &bind, &self.env, &log, Duration::from_secs(60)).await?;
        self.tasks[index] = Some(task);
        Ok(())
    }

    /// Starts one more task, with `extra_env` on top of the shared environment (e.g. an
    /// `AWS_ENDPOINT_URL_SQS` through a counting proxy), and waits until it is ready; returns its
    /// index. A later [`Self::start_task`] of that index starts it without `extra_env`.
    ///
    /// # Errors
    /// When no port is free or the task does not become ready.
    pub async fn add_task(&mut self, extra_env: &[(String, String)]) -> anyhow::Result<usize> {
        let index = self.tasks.len();
        let port = infra::emulator::free_port()?;
        self.task_urls.push(format!("http://127.0.0.1:{port}"));
        self.tasks.push(None);
        let bind = format!("127.0.0.1:{port}");
        let log = self.logs_dir().join(format!("api-{index}.log"));
        let mut env = self.env.clone();
        env.extend(extra_env.iter().cloned());
        let task = ApiTask::start(
            &format!("api-{index}"),
            &self.bin_dir,
            &bind,
            &env,
            &log,
            Duration::from_secs(60),
        )
        .await?;
        self.tasks[index] = Some(task);
        Ok(index)
    }

    /// Stops task `index` gracefully (SIGTERM); returns whether it exited on its own.
    pub async fn stop_task(&mut self, index: usize) -> bool {
        match self.tasks[index].take() {
            Some(mut task) => task.process.stop().await,
            None => true,
        }
    }

    /// A token for `sub` whose roles claim names these IdP roles.
    #[must_use]
    pub fn token(&self, sub: &str, roles: &[&str]) -> String {
        self.jwt.mint(
            sub,
            Some(roles),
            &format!("{sub}@example.com"),
            sub,
            Duration::from_secs(3600),
        )
    }

    /// A token for `sub` without a roles claim: the API uses the profile's stored roles (the
    /// operator's path: roles granted in the table).
    #[must_use]
    pub fn token_without_roles(&self, sub: &str) -> String {
        self.jwt
            .mint(sub, None, &format!("{sub}@example.com"), sub, Duration::from_secs(3600))
    }

    /// Reads `user`'s profile on every API task (warming their caches) and checks each serves
    /// `name`, then renames `user` to `new_name` straight in the users table with the SDK, outside
    /// every API, and waits until every task serves the new name.
    ///
    /// # Errors
    /// When a task serves another name before the change, a call fails, or a task does not
    /// serve the new name within [`PATIENCE`].
    pub async fn rename_outside_the_api(&self, user: &str, name: &str, new_name: &str) -> anyhow::Result<()> {
        let token = self.token_without_roles(user);
        for index in 0..self.task_urls.len() {
            let (status, body) = self.get(index, "/users/me", &token).await?;
            anyhow::ensure!(
                (status, body["name"].as_str()) == (200, Some(name)),
                "task {index} before the rename: {status} {body}"
            );
        }
        let change = infra::operator::UserChange {
            name: Some(new_name.to_owned()),
            ..infra::operator::UserChange::default()
        };
        infra::operator::put_user(&self.aws.dynamodb(), &self.stack.users_table, user, &change).await?;
        for index in 0..self.task_urls.len() {
            eventually(PATIENCE, &format!("task {index} to serve the new name"), || async {
                let (status, body) = self.get(index, "/users/me", &token).await?;
                Ok(status == 200 && body["name"] == new_name)
            })
            .await?;
        }
        Ok(())
    }

    /// A token with the `system_admin` AppRole (IdP role `Admin`, user `admin` of the demo data).
    #[must_use]
    pub fn admin_token(&self) -> String {
        self.token("admin", &["Admin"])
    }

    /// `GET` on task `index`: the status and the JSON body (`Null` when not JSON).
    ///
    /// # Errors
    /// When the task cannot be reached.
    pub async fn get(&self, index: usize, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
        self.send(index, reqwest::Method::GET, path, token, None).await
    }

    /// A request with a JSON body on task `index`.
    ///
    /// # Errors
    /// When the task cannot be reached.
    pub async fn send(
        &self,
        index: usize,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.task_urls[index]);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Waits until `path` on **every** task satisfies `accept`, returning the time the slowest
    /// task took.
    ///
    /// # Errors
    /// When a task still disagrees after [`PATIENCE`]; the message has its last answer.
    pub async fn until_all_tasks(
        &self,
        path: &str,
        token: &str,
        accept: impl Fn(u16, &Value) -> bool,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for index in 0..self.task_urls.len() {
            loop {
                let (status, body) = self.get(index, path, token).await?;
                if accept(status, &body) {
                    break;
                }
                if started.elapsed() > PATIENCE {
                    bail!(
                        "task {index} ({}) still answers {status} {body} on {path} after {PATIENCE:?}",
                        self.task_urls[index]
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(started.elapsed())
    }

    /// Renames `user` straight in the users table (as an operator's script would) and waits until
    /// every task serves the new name to `token`; returns the time the slowest task took.
    ///
    /// # Errors
    /// When the write fails or a task does not catch up within [`PATIENCE`].
    pub async fn rename_everywhere(&self, user: &str, token: &str, name: &str) -> anyhow::Result<Duration> {
        let change = infra::operator::UserChange {
            name: Some(name.to_owned()),
            ..infra::operator::UserChange::default()
        };
        infra::operator::put_user(&self.aws.dynamodb(), &self.stack.users_table, user, &change).await?;
        self.until_all_tasks("/users/me", token, |status, body| status == 200 && body["name"] == name)
            .await
    }

    /// The relay function's log line saying it is ready (its configuration as it read it), once
    /// the log also shows an invocation relayed.
    ///
    /// # Errors
    /// When the function never started or no invocation reached it.
    pub fn relay_ready_line(&self) -> anyhow::Result<Value> {
        let log = std::fs::read_to_string(self.logs_dir().join("relay.log"))?;
        let ready = log
            .lines()
            .find(|line| line.contains("stream relay ready"))
            .context("the relay function never started")?;
        anyhow::ensure!(
            log.contains("relayed stream batch"),
            "no invocation reached the relay function"
        );
        Ok(serde_json::from_str(ready)?)
    }

    /// The sum of the Prometheus samples of `name` on task `index` whose labels contain every
    /// `label="value"` pair of `labels`.
    ///
    /// # Errors
    /// When `/metrics` cannot be read.
    pub async fn metric(&self, index: usize, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let url = format!("{}/metrics", self.task_urls[index]);
        let text = self.http.get(&url).send().await?.text().await?;
        Ok(sum_metric(&text, name, labels))
    }

    /// Reads the running tasks answered past a bypassed cache, summed
    /// (`staleless_cache_bypassed_reads_total`).
    ///
    /// # Errors
    /// When a task's `/metrics` cannot be read.
    pub async fn bypassed_reads(&self) -> anyhow::Result<u64> {
        let mut total = 0.0;
        for index in (0..self.tasks.len()).filter(|index| self.tasks[*index].is_some()) {
            total += self.metric(index, "staleless_cache_bypassed_reads_total", &[]).await?;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a count
        Ok(total as u64)
    }

    /// The queue URLs of this stack's API tasks.
    ///
    /// # Errors
    /// When SQS cannot be listed.
    pub async fn task_queues(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .aws
            .sqs()
            .list_queues()
            .queue_name_prefix(&self.stack.task_queue_prefix)
            .send()
            .await?
            .queue_urls
            .unwrap_or_default())
    }

    /// Where the component logs are, for failure messages.
    #[must_use]
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// Stops tasks (gracefully), relay and emulator, and removes the state directory.
    pub async fn stop(mut self) {
        for mut example in [self.example.take(), self.py_example.take()].into_iter().flatten() {
            example.process.stop().await;
        }
        for index in 0..self.tasks.len() {
            self.stop_task(index).await;
        }
        if let Some(mut heartbeat) = self.heartbeat.take() {
            heartbeat.stop().await;
        }
        // Each after the one it feeds: the mapping stops invoking before the function and Lambda go.
        for mut component in [self.event_source.take(), self.relay.take(), self.lambda.take()]
            .into_iter()
            .flatten()
        {
            component.stop().await;
        }
        self.aws.stop();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// Sums the samples of `name` whose label set contains every pair in `labels`.
#[must_use]
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = series
                .split_once('{')
                .map_or((series, ""), |(metric, rest)| (metric, rest));
            if metric != name {
                return None;
            }
            let matches = labels
                .iter()
                .all(|(key, wanted)| label_text.contains(&format!("{key}=\"{wanted}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Polls `condition` until it holds or `timeout` passes; returns the time it took.
///
/// # Errors
/// When the timeout passes first.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        if condition().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{what}: not true after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_only_matching_series() {
        let text = "# HELP x\nstaleless_invalidations_applied_total{source=\"users\"} 3\nstaleless_invalidations_applied_total{source=\"roles\"} 2\nstaleless_cache_hits_total{cache=\"profiles\"} 7\n";
        assert!((sum_metric(text, "staleless_invalidations_applied_total", &[]) - 5.0).abs() < f64::EPSILON);
        assert!(
            (sum_metric(text, "staleless_invalidations_applied_total", &[("source", "users")]) - 3.0).abs()
                < f64::EPSILON
        );
        assert!(sum_metric(text, "staleless_cache_misses_total", &[]).abs() < f64::EPSILON);
    }
}
