//! End to end against moto with real SDK clients: API instances run in-process with `run()` on
//! `127.0.0.1:0`, each with its own queue; changes made straight to the tables reach them through
//! the real path (stream → local event source mapping → stream relay → SNS → each queue).

mod common;

use std::future::Future;
use std::path::PathBuf;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use common::{token, token_without_roles};
use infra::operator::{self, RolePatch, UserChange};
use infra::proxy::SwitchableProxy;
use infra::{LocalAws, LocalStack, Provisioned};
use serde_json::Value;
use staleless_api::{AppState, CacheMode};
use staleless_consumer::ChannelClients;
use staleless_protocol::{Invalidation, KeyVersion, SOURCE_ATTRIBUTE, Source};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Long enough for moto on a loaded 2-core machine; the checks poll and return as soon as true.
const PATIENCE: Duration = Duration::from_secs(30);
/// The instances' freshness bound `B`, short so that faults trip it quickly.
const BOUND: Duration = Duration::from_secs(3);
/// The heartbeat interval: well under a third of [`BOUND`].
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Polls `check` until it yields a value or [`PATIENCE`] runs out.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shared local stack (emulator, provisioned and seeded stack) with this file's components:
/// the change feed and the heartbeat writer run in this process, as do the API instances, so
/// tests can reach into an instance's state and route its SQS and SNS calls through a proxy.
struct Stack {
    aws: LocalAws,
    stack: Provisioned,
    jwks_file: PathBuf,
    feed: CancellationToken,
    heartbeat: CancellationToken,
}

impl Stack {
    async fn start() -> Self {
        let LocalStack {
            aws, stack, state_dir, ..
        } = LocalStack::seeded(LocalAws::start().expect("emulator"), None, None, None)
            .await
            .expect("seeded stack");
        let jwks_file = state_dir.join("jwks.json");
        common::jwt().write_jwks(&jwks_file).expect("jwks");
        // The change feed: what runs on AWS as the event source mapping and the relay Lambda.
        let feed = CancellationToken::new();
        let options = infra::event_source::EventSourceOptions::new(state_dir.join("checkpoints"));
        drop(infra::event_source::spawn(
            aws.sdk_config(),
            &stack,
            options,
            feed.clone(),
        ));
        // The heartbeat writer, whose ticks the instances' trust in their caches rests on.
        let heartbeat = CancellationToken::new();
        drop(infra::heartbeat::spawn(
            aws.sdk_config(),
            &stack,
            HEARTBEAT,
            heartbeat.child_token(),
        ));
        Self {
            aws,
            stack,
            jwks_file,
            feed,
            heartbeat,
        }
    }

    fn config(&self) -> staleless_api::Config {
        let mut config = common::config(CacheMode::Event);
        config.tables.users_table.clone_from(&self.stack.users_table);
        config.tables.roles_table.clone_from(&self.stack.roles_table);
        config.channel.topic_arn = Some(self.stack.topic_arn.clone());
        config
            .channel
            .queue_name_prefix
            .clone_from(&self.stack.task_queue_prefix);
        config.channel.poll_wait_secs = 1;
        config.channel.staleness_bound_secs = BOUND.as_secs();
        config.jwt.jwks_url = None;
        config.jwt.jwks_file.clone_from(&self.jwks_file);
        config
    }

    /// Starts an instance; `sqs_endpoint` routes its SQS and SNS calls elsewhere (a proxy).
    async fn instance(&self, sqs_endpoint: Option<&str>) -> Instance {
        self.instance_with(self.config(), sqs_endpoint).await
    }

    /// Starts an instance with `config` (from [`Stack::config`], changed).
    async fn instance_with(&self, config: staleless_api::Config, sqs_endpoint: Option<&str>) -> Instance {
        let mut state = AppState::from_aws(config, self.aws.sdk_config()).await.expect("state");
        if let Some(endpoint) = sqs_endpoint {
            let sdk = infra::sdk_config_for(endpoint);
            state.channel_clients = Some(ChannelClients {
                sqs: aws_sdk_sqs::Client::new(&sdk),
                sns: aws_sdk_sns::Client::new(&sdk),
                sts: aws_sdk_sts::Client::new(&sdk),
            });
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(staleless_api::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        let instance = Instance {
            base,
            state,
            stop: Some(stop),
            server,
            http: reqwest::Client::new(),
        };
        instance.wait_ready().await;
        instance.wait_trusted().await;
        instance
    }

    async fn task_queues(&self) -> Vec<String> {
        self.aws
            .sqs()
            .list_queues()
            .queue_name_prefix(format!("{}-", self.stack.task_queue_prefix))
            .send()
            .await
            .expect("list queues")
            .queue_urls
            .unwrap_or_default()
    }

    /// `(subscription ARN, endpoint)` of the topic's subscriptions of task queues (not the
    /// dead-letter queue's, which copies give-ups for operators).
    async fn subscriptions(&self) -> Vec<(String, String)> {
        self.aws
            .sns()
            .list_subscriptions_by_topic()
            .topic_arn(&self.stack.topic_arn)
            .send()
            .await
            .expect("list subscriptions")
            .subscriptions
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.subscription_arn.unwrap_or_default(), s.endpoint.unwrap_or_default()))
            .filter(|(_, endpoint)| self.stack.is_task_queue(endpoint))
            .collect()
    }

    /// Publishes a raw body to the topic, as the relay (or an operator's flush) does.
    async fn publish(&self, body: &str, source: &str) {
        self.aws
            .sns()
            .publish()
            .topic_arn(&self.stack.topic_arn)
            .message(body)
            .message_attributes(
                SOURCE_ATTRIBUTE,
                aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(source)
                    .build()
                    .expect("attribute"),
            )
            .send()
            .await
            .expect("publish");
    }

    async fn rename_user(&self, user_id: &str, name: &str) {
        let change = UserChange {
            name: Some(name.to_owned()),
            ..UserChange::default()
        };
        operator::put_user(&self.aws.dynamodb(), &self.stack.users_table, user_id, &change)
            .await
            .expect("put user");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.feed.cancel();
        self.heartbeat.cancel();
    }
}

/// One API instance running in this process.
struct Instance {
    base: String,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
}

impl Instance {
    async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ready(&self) -> bool {
        self.http
            .get(format!("{}/ready", self.base))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    }

    async fn wait_ready(&self) {
        eventually("/ready to be 200", || async { self.ready().await.then_some(()) }).await;
    }

    /// Waits until both caches are trusted: ticks of both sources arrived through this queue.
    async fn wait_trusted(&self) {
        eventually("ticks of both sources", || async {
            self.state.channel.all_trusted().then_some(())
        })
        .await;
    }

    /// `(profiles, roles)` from `/admin/cache/stats`: `cache` or `bypass`.
    async fn reads(&self) -> (String, String) {
        let (status, body) = self.get("/admin/cache/stats", &token("admin", &["Admin"])).await;
        assert_eq!(status, 200, "{body}");
        let mode = |cache: &str| body["reads"][cache].as_str().unwrap_or_default().to_owned();
        (mode("profiles"), mode("roles"))
    }

    async fn user_name(&self, user_id: &str) -> String {
        let (status, body) = self.get("/users/me", &token_without_roles(user_id)).await;
        assert_eq!(status, 200, "{body}");
        body["name"].as_str().unwrap_or_default().to_owned()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.await.expect("join").expect("server");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_see_direct_writes_to_both_tables_and_clean_up_on_shutdown() {
    let stack = Stack::start().await;
    let a = stack.instance(None).await;
    // The second names its queue's tags otherwise (`QUEUE_OWNER_TAG`, `QUEUE_HEARTBEAT_TAG`).
    let mut renamed = stack.config();
    renamed.channel.tags.owner = "acme:owner".to_owned();
    renamed.channel.tags.heartbeat = "acme:heartbeat".to_owned();
    let b = stack.instance_with(renamed, None).await;

    let queues = stack.task_queues().await;
    assert_eq!(queues.len(), 2, "one queue per instance: {queues:?}");
    let subscriptions = stack.subscriptions().await;
    assert_eq!(subscriptions.len(), 2, "{subscriptions:?}");

    // The queue as configured: policy admitting only the topic, SSE, short retention, raw delivery.
    let attributes = stack
        .aws
        .sqs()
        .get_queue_attributes()
        .queue_url(&queues[0])
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("attributes")
        .attributes
        .unwrap_or_default();
    let policy: Value =
        serde_json::from_str(attributes.get(&QueueAttributeName::Policy).expect("policy")).expect("policy json");
    assert_eq!(
        policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
        stack.stack.topic_arn.as_str()
    );
    assert_eq!(
        attributes
            .get(&QueueAttributeName::SqsManagedSseEnabled)
            .map(String::as_str),
        Some("true")
    );
    // Tagged with its owner's identity (the task policy lets a task touch only such queues) and
    // its heartbeat, under the names each task was configured with.
    let caller = aws_sdk_sts::Client::new(stack.aws.sdk_config())
        .get_caller_identity()
        .send()
        .await
        .expect("identity");
    let mut tag_names = Vec::new();
    for queue in &queues {
        let tags = stack
            .aws
            .sqs()
            .list_queue_tags()
            .queue_url(queue)
            .send()
            .await
            .expect("tags")
            .tags
            .unwrap_or_default();
        let mut names: Vec<&String> = tags.keys().collect();
        names.sort();
        let owner = names
            .iter()
            .find(|name| name.ends_with(":owner"))
            .expect("an owner tag");
        assert_eq!(tags.get(*owner), caller.user_id.as_ref(), "{tags:?}");
        tag_names.push(names.iter().map(|name| (*name).clone()).collect::<Vec<_>>());
    }
    tag_names.sort();
    assert_eq!(
        tag_names,
        [
            ["acme:heartbeat", "acme:owner"],
            [
                staleless_consumer::queue::HEARTBEAT_TAG,
                staleless_consumer::queue::OWNER_TAG
            ]
        ]
    );
    assert_eq!(
        attributes
            .get(&QueueAttributeName::MessageRetentionPeriod)
            .map(String::as_str),
        Some("300")
    );
    let subscription = stack
        .aws
        .sns()
        .get_subscription_attributes()
        .subscription_arn(&subscriptions[0].0)
        .send()
        .await
        .expect("subscription attributes")
        .attributes
        .unwrap_or_default();
    assert_eq!(subscription.get("RawMessageDelivery").map(String::as_str), Some("true"));

    // Both cache alice; a write straight to the users table reaches both.
    assert_eq!(a.user_name("alice").await, "Alice");
    assert_eq!(b.user_name("alice").await, "Alice");
    // A hit needs trust: on a loaded machine a tick may come late and the read go through, so
    // read until one is served from the cache (within the patience of `eventually`).
    eventually("a read of alice served from a's cache", || async {
        let hits = a.state.directory.stats().profiles.hits;
        (a.user_name("alice").await == "Alice" && a.state.directory.stats().profiles.hits > hits).then_some(())
    })
    .await;
    stack.rename_user("alice", "Alice Renamed").await;
    for instance in [&a, &b] {
        eventually("the users-table change on every instance", || async {
            (instance.user_name("alice").await == "Alice Renamed").then_some(())
        })
        .await;
    }

    // A write straight to the roles table reaches both too.
    let alice = token_without_roles("alice");
    for instance in [&a, &b] {
        let (_, body) = instance.get("/users/me", &alice).await;
        assert_eq!(body["permissions"]["tools"], serde_json::json!(["calendar", "search"]));
    }
    let change = RolePatch {
        granted_tools: Some(vec!["search".into(), "calendar".into(), "wiki".into()]),
        ..RolePatch::default()
    };
    operator::update_role(&stack.aws.dynamodb(), &stack.stack.roles_table, "staff", &change)
        .await
        .expect("update role");
    for instance in [&a, &b] {
        eventually("the roles-table change on every instance", || async {
            let (_, body) = instance.get("/users/me", &alice).await;
            (body["permissions"]["tools"] == serde_json::json!(["calendar", "search", "wiki"])).then_some(())
        })
        .await;
    }
    assert!(a.state.directory.stats().roles.invalidations >= 1);
    let metrics = a
        .http
        .get(format!("{}/metrics", a.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in [
        "staleless_cache_hits_total{cache=\"profiles\"}",
        "staleless_cache_misses_total{cache=\"roles\"}",
        "staleless_invalidations_applied_total{source=\"users\"}",
        "staleless_invalidation_lag_seconds_bucket",
        "staleless_queue_receives_total{outcome=\"messages\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }

    // Shutdown removes each instance's queue and subscription.
    a.stop().await;
    assert_eq!(stack.task_queues().await.len(), 1);
    assert_eq!(stack.subscriptions().await.len(), 1);
    b.stop().await;
    assert!(stack.task_queues().await.is_empty());
    assert!(stack.subscriptions().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_deleted_out_of_band_is_recreated_resubscribed_and_the_cache_flushed() {
    let stack = Stack::start().await;
    let api = stack.instance(None).await;
    assert_eq!(api.user_name("alice").await, "Alice");
    let flushes = api.state.directory.stats().profiles.flushes;

    let queues = stack.task_queues().await;
    stack
        .aws
        .sqs()
        .delete_queue()
        .queue_url(&queues[0])
        .send()
        .await
        .expect("delete queue");

    eventually("the queue to be recreated and the cache flushed", || async {
        let stats = api.state.directory.stats();
        (stats.profiles.flushes > flushes && api.state.channel.all_trusted() && stack.task_queues().await.len() == 1)
            .then_some(())
    })
    .await;
    api.wait_ready().await;
    let subscriptions = stack.subscriptions().await;
    assert_eq!(
        subscriptions.len(),
        1,
        "the old subscription is removed: {subscriptions:?}"
    );

    // And invalidations flow again.
    stack.rename_user("alice", "Alice Again").await;
    eventually("a change after the recreation", || async {
        (api.user_name("alice").await == "Alice Again").then_some(())
    })
    .await;
    api.stop().await;
    assert!(stack.task_queues().await.is_empty());
    assert!(stack.subscriptions().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_channel_reads_through_stays_ready_then_recovers() {
    let stack = Stack::start().await;
    let proxy = SwitchableProxy::start(stack.aws.endpoint()).await.expect("proxy");
    let api = stack.instance(Some(proxy.url())).await;
    // The seed write's own invalidation may still be on its way and evict alice once; read
    // until she is served from cache.
    eventually("alice served from cache", || async {
        let hits = api.state.directory.stats().profiles.hits;
        (api.user_name("alice").await == "Alice" && api.state.directory.stats().profiles.hits > hits).then_some(())
    })
    .await;
    proxy.switch_off();
    eventually("both caches to be bypassed", || async {
        (api.reads().await == ("bypass".to_owned(), "bypass".to_owned())).then_some(())
    })
    .await;
    let before = api.state.directory.stats().profiles;
    assert!(
        api.ready().await,
        "a task that can read through stays in the load balancer"
    );
    assert!(!api.state.channel.is_trusted(Source::USERS.as_str()));

    // The change's invalidation is stuck in the queue behind the outage; only a read-through
    // can show it now.
    stack.rename_user("alice", "Alice During Outage").await;
    assert_eq!(
        api.user_name("alice").await,
        "Alice During Outage",
        "read through at once"
    );
    let during = api.state.directory.stats().profiles;
    assert_eq!(
        during.hits, before.hits,
        "nothing served from cache while the channel is stale"
    );

    proxy.switch_on();
    api.wait_trusted().await;
    let after = api.state.directory.stats().profiles;
    assert!(
        after.flushes > before.flushes,
        "the cache is flushed when the ticks are back"
    );
    // The invalidation stuck behind the outage may still evict alice once as the backlog drains.
    eventually("alice served from cache again", || async {
        let hits = api.state.directory.stats().profiles.hits;
        (api.user_name("alice").await == "Alice During Outage" && api.state.directory.stats().profiles.hits > hits)
            .then_some(())
    })
    .await;
    assert!(
        api.state.directory.stats().profiles.hits > after.hits,
        "cache used again"
    );
    api.stop().await;
}

/// The relay stops (a hung Lambda, a stuck shard): the queue still answers, but no tick arrives.
/// Within the bound the instance reads through, so a suspension made meanwhile takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_relay_turns_the_caches_off_within_the_bound_and_nothing_stale_is_served() {
    let stack = Stack::start().await;
    let api = stack.instance(None).await;
    assert_eq!(api.user_name("alice").await, "Alice");
    assert_eq!(api.user_name("alice").await, "Alice");

    stack.feed.cancel();
    // Every tick this instance will ever see was written before this instant.
    let before_change = tokio::time::Instant::now();
    stack.rename_user("alice", "Alice Renamed While Hung").await;
    // Poll during the fault. The rule, not a speed: a request that *started* more than the bound
    // after `before_change` may not get the old name, however slowly it is answered.
    loop {
        let asked_at = tokio::time::Instant::now();
        if api.user_name("alice").await == "Alice Renamed While Hung" {
            break;
        }
        let age = asked_at.duration_since(before_change);
        assert!(
            age <= BOUND + Duration::from_millis(10),
            "the old name was served to a request made {age:?} after the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No tick comes any more: the caches are bypassed once the last one ages past the bound (the
    // new name may have come sooner, from an invalidation the feed was delivering as it stopped).
    eventually("the profile cache bypassed", || async {
        (api.reads().await.0 == "bypass").then_some(())
    })
    .await;
    assert!(api.ready().await);
    api.stop().await;
}

/// The role catalogue is read through the sparse definitions index (ids) and a consistent
/// `BatchGetItem`: per-user items in the roles table cost nothing, and a role created a moment
/// ago is seen at once, even while the caches are bypassed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalogue_reads_only_role_definitions_and_sees_a_new_role_at_once() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = Stack::start().await;
    let dynamodb = stack.aws.dynamodb();
    for n in 0..150 {
        dynamodb
            .put_item()
            .table_name(&stack.stack.roles_table)
            .item("PK", AttributeValue::S(format!("USER#u-{n}")))
            .item("SK", AttributeValue::S("TOOL_PREFERENCES".to_owned()))
            .item("tools", AttributeValue::S("search".to_owned()))
            .send()
            .await
            .expect("per-user item");
    }
    let index = dynamodb
        .scan()
        .table_name(&stack.stack.roles_table)
        .index_name(staleless_protocol::keys::ROLE_DEFINITION_INDEX)
        .send()
        .await
        .expect("scan the index");
    assert_eq!(
        index.count, 3,
        "the index holds the three demo role definitions and nothing else"
    );

    let api = stack.instance(None).await;
    let admin = token("admin", &["Admin"]);
    let (status, body) = api.get("/admin/roles", &admin).await;
    assert_eq!(status, 200, "{body}");
    let mut role = operator::demo_roles()
        .into_iter()
        .find(|role| role.role_id == "staff")
        .expect("staff");
    role.role_id = "auditor".to_owned();
    role.display_name = "Auditor".to_owned();
    role.jwt_role_mappings = vec!["Auditor".to_owned()];
    role.granted_tools = vec!["audit-log".to_owned()];
    operator::put_role(&dynamodb, &stack.stack.roles_table, &role)
        .await
        .expect("put role");
    operator::put_user(
        &dynamodb,
        &stack.stack.users_table,
        "carol",
        &UserChange {
            name: Some("Carol".to_owned()),
            roles: Some(vec!["Auditor".to_owned()]),
            ..UserChange::default()
        },
    )
    .await
    .expect("put user");
    eventually("the new role on the instance", || async {
        let (_, body) = api.get("/users/me", &token_without_roles("carol")).await;
        (body["permissions"]["tools"] == serde_json::json!(["audit-log"])).then_some(())
    })
    .await;
    api.stop().await;
}

/// A role definition written by hand with a string for a boolean and for its version is listed
/// apart with both faults and grants nothing; a patch setting the boolean repairs it through
/// DynamoDB's condition (a version that is not a number counts as none), and the repaired role
/// grants again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_role_with_a_corrupt_version_is_listed_apart_and_repaired_in_dynamodb() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = Stack::start().await;
    let dynamodb = stack.aws.dynamodb();
    let text = |value: &str| AttributeValue::S(value.to_owned());
    dynamodb
        .put_item()
        .table_name(&stack.stack.roles_table)
        .item("PK", text("ROLE#auditor"))
        .item("SK", text("DEFINITION"))
        .item("roleId", text("auditor"))
        .item("displayName", text("Auditor"))
        .item("jwtRoleMappings", AttributeValue::L(vec![text("Staff")]))
        .item("grantedTools", AttributeValue::L(vec![text("audit-log")]))
        .item("enabled", text("yes"))
        .item("version", text("3"))
        .send()
        .await
        .expect("a hand-written role");
    let api = stack.instance(None).await;
    let admin = token("admin", &["Admin"]);
    let (status, body) = api.get("/admin/roles", &admin).await;
    assert_eq!(status, 200, "{body}");
    let faults: Vec<&str> = body["corrupt"][0]["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .filter_map(|fault| fault["attribute"].as_str())
        .collect();
    assert_eq!(faults, ["enabled", "version"], "{body}");
    let staff = token_without_roles("alice");
    let (_, me) = api.get("/users/me", &staff).await;
    assert!(!me["permissions"]["tools"].to_string().contains("audit-log"), "{me}");

    let (status, body) = api
        .send(
            reqwest::Method::PATCH,
            "/admin/roles/auditor",
            &admin,
            Some(r#"{"enabled": true}"#),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the repaired role granting", || async {
        let (_, me) = api.get("/users/me", &staff).await;
        me["permissions"]["tools"]
            .to_string()
            .contains("audit-log")
            .then_some(())
    })
    .await;
    let (_, body) = api.get("/admin/roles", &admin).await;
    assert_eq!(body["corrupt"], serde_json::json!([]), "{body}");
    api.stop().await;
}

/// A short outage — shorter than the bound, so trust never lapses — still drops messages: here
/// the subscription is removed and restored by hand within a second, and the rename made
/// meanwhile never arrives. The ticks after it show heartbeats missing, and the instance flushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_missing_after_a_short_outage_flush_the_cache() {
    let stack = Stack::start().await;
    let api = stack.instance(None).await;
    eventually("alice served from cache", || async {
        let hits = api.state.directory.stats().profiles.hits;
        (api.user_name("alice").await == "Alice" && api.state.directory.stats().profiles.hits > hits).then_some(())
    })
    .await;
    let sns = stack.aws.sns();
    let (arn, queue_arn) = stack.subscriptions().await.into_iter().next().expect("subscription");
    sns.unsubscribe()
        .subscription_arn(&arn)
        .send()
        .await
        .expect("unsubscribe");
    stack.rename_user("alice", "Alice Lost In The Gap").await;
    // Long enough for heartbeats (every 250 ms) to be lost with the rename, far shorter than the
    // bound (3 s), and than the instance's own silence check (half the bound).
    tokio::time::sleep(Duration::from_millis(800)).await;
    sns.subscribe()
        .topic_arn(&stack.stack.topic_arn)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .expect("subscribe again");
    eventually("the rename despite its lost invalidation", || async {
        (api.user_name("alice").await == "Alice Lost In The Gap").then_some(())
    })
    .await;
    api.stop().await;
}

/// Someone removes the instance's subscription, or adds a filter policy matching nothing: the
/// queue keeps answering, ticks stop, and the instance re-creates its subscription by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_or_filtered_subscription_is_healed_by_the_instance() {
    let stack = Stack::start().await;
    let api = stack.instance(None).await;
    let healed = |count: f64| {
        let api = &api;
        async move {
            let text = api
                .http
                .get(format!("{}/metrics", api.base))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            text.lines()
                .find(|line| line.starts_with("staleless_subscription_healed_total"))
                .and_then(|line| line.rsplit(' ').next())
                .and_then(|value| value.parse::<f64>().ok())
                .is_some_and(|value| value >= count)
        }
    };
    let sns = stack.aws.sns();

    let (arn, _) = stack.subscriptions().await.into_iter().next().expect("subscription");
    sns.unsubscribe()
        .subscription_arn(&arn)
        .send()
        .await
        .expect("unsubscribe");
    stack.rename_user("alice", "Alice After Unsubscribe").await;
    eventually("the new name while unsubscribed", || async {
        (api.user_name("alice").await == "Alice After Unsubscribe").then_some(())
    })
    .await;
    eventually("the subscription re-created", || async {
        healed(1.0).await.then_some(())
    })
    .await;
    api.wait_trusted().await;
    assert_eq!(stack.subscriptions().await.len(), 1);

    let (arn, _) = stack.subscriptions().await.into_iter().next().expect("subscription");
    sns.set_subscription_attributes()
        .subscription_arn(&arn)
        .attribute_name("FilterPolicy")
        .attribute_value(r#"{"source":["nothing"]}"#)
        .send()
        .await
        .expect("filter policy");
    eventually("the filtered subscription re-created", || async {
        healed(2.0).await.then_some(())
    })
    .await;
    api.wait_trusted().await;
    stack.rename_user("alice", "Alice After Filter").await;
    eventually("changes flowing again", || async {
        (api.user_name("alice").await == "Alice After Filter").then_some(())
    })
    .await;
    api.stop().await;
    assert!(stack.subscriptions().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_messages_are_deleted_and_protocol_messages_applied() {
    let stack = Stack::start().await;
    let api = stack.instance(None).await;
    assert_eq!(api.user_name("alice").await, "Alice");

    stack.publish("not json at all", "users").await;
    stack.publish(r#"{"v":99,"kind":"something_new"}"#, "users").await;
    // What the relay sends for a users-table change, published by hand: the key is evicted even
    // though the item did not change, so the next read is a fill.
    let fills = api.state.directory.stats().profiles.fills;
    let message = Invalidation::Invalidate {
        source: Source::USERS,
        keys: vec![KeyVersion {
            id: "alice".into(),
            seq: "1".into(),
            at_ms: 1,
        }],
    };
    stack.publish(&message.encode().expect("encode"), "users").await;
    eventually("the hand-published invalidation", || async {
        (api.state.directory.stats().profiles.entries == 0).then_some(())
    })
    .await;
    assert_eq!(api.user_name("alice").await, "Alice");
    assert!(api.state.directory.stats().profiles.fills > fills);

    let flushes = api.state.directory.stats().roles.flushes;
    stack
        .publish(
            &Invalidation::FlushAll {
                source: None,
                reason: Some("test".into()),
            }
            .encode()
            .expect("encode"),
            "all",
        )
        .await;
    eventually("flush_all", || async {
        (api.state.directory.stats().roles.flushes > flushes).then_some(())
    })
    .await;

    // The event source mapping gave up records of the roles table (AWS's on-failure message,
    // sent to the topic): the role catalogue is flushed, the profiles are not.
    // Counted by the give-up metric, per source: a flush of the profiles for another reason (a
    // tick restoring trust after a slow moment of a busy machine) is not the give-up's doing.
    let give_ups = |source: &str| {
        let needle = format!("staleless_give_up_flushes_total{{source=\"{source}\"}} ");
        api.state
            .metrics
            .render()
            .lines()
            .find_map(|line| {
                line.strip_prefix(needle.as_str())
                    .and_then(|value| value.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let (users_give_ups, role_flushes) = (give_ups("users"), api.state.directory.stats().roles.flushes);
    let give_up = serde_json::json!({
        "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11},
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "version": "1.0",
        "DDBStreamBatchInfo": {
            "shardId": "shardId-1", "startSequenceNumber": "7", "endSequenceNumber": "7", "batchSize": 1,
            "streamArn": format!("arn:aws:dynamodb:us-east-1:123456789012:table/{}/stream/2026-01-01T00:00:00.000", stack.stack.roles_table),
        },
    });
    stack.publish(&give_up.to_string(), "roles").await;
    // Waits for the give-up's own count: a roles flush alone may be a trust restore's.
    eventually("the give-up of the roles table to be counted", || async {
        (give_ups("roles") >= 1.0).then_some(())
    })
    .await;
    assert!(
        api.state.directory.stats().roles.flushes > role_flushes,
        "the give-up did not flush the role catalogue"
    );
    assert!(
        (give_ups("users") - users_give_ups).abs() < f64::EPSILON,
        "a give-up of the roles table flushed the profiles"
    );

    // Every message, malformed or not, was deleted, and the listener is still healthy.
    let queue = stack.task_queues().await.remove(0);
    eventually("an empty queue", || async {
        let attributes = stack
            .aws
            .sqs()
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .ok()?
            .attributes?;
        let count = |name| {
            attributes
                .get(&name)
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(1)
        };
        (count(QueueAttributeName::ApproximateNumberOfMessages) == 0
            && count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0)
            .then_some(())
    })
    .await;
    assert!(api.ready().await);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_removes_stale_queues_and_orphaned_subscriptions() {
    use staleless_consumer::queue::HEARTBEAT_TAG;
    use staleless_consumer::sweeper::{SweepReport, Sweeper};

    let stack = Stack::start().await;
    // A live task, with the queue and subscription its listener made (subscribed first: moto
    // stops delivering to subscribers after one whose queue is gone).
    let live = stack.instance(None).await;
    let sqs = stack.aws.sqs();
    let prefix = &stack.stack.task_queue_prefix;
    let now = infra::jwt::unix_now();
    let mut subscribed = Vec::new();
    for (name, heartbeat) in [
        ("crashed", Some(now - 10_000)),
        ("alive", Some(now)),
        ("untagged", None),
        ("gone", Some(now)),
    ] {
        let mut create = sqs.create_queue().queue_name(format!("{prefix}-{name}"));
        if let Some(heartbeat) = heartbeat {
            create = create.tags(HEARTBEAT_TAG, heartbeat.to_string());
        }
        let url = create.send().await.expect("create").queue_url.unwrap_or_default();
        let arn = stack.aws.queue_arn(&url).await.expect("arn");
        stack
            .aws
            .subscribe_queue(&stack.stack.topic_arn, &arn)
            .await
            .expect("subscribe");
        subscribed.push((name, url));
    }
    // A task that died after its queue was deleted, its subscription left behind.
    sqs.delete_queue()
        .queue_url(&subscribed[3].1)
        .send()
        .await
        .expect("delete");

    let sweeper = Sweeper::new(
        live.state.channel_clients.clone().expect("clients"),
        stack.stack.topic_arn.clone(),
        prefix.clone(),
        Duration::from_secs(600),
    );
    let report = sweeper.sweep_once().await.expect("sweep");
    assert_eq!(
        report,
        SweepReport {
            stale_queues: 1,
            orphaned_subscriptions: 2
        }
    );

    let mut remaining: Vec<String> = stack.task_queues().await;
    remaining.sort();
    assert_eq!(
        remaining.len(),
        3,
        "alive, untagged and the live task's stay: {remaining:?}"
    );
    let live_queue = live.state.channel.report().queue.expect("the live task's queue");
    assert!(
        remaining
            .iter()
            .all(|url| url.ends_with("-alive") || url.ends_with("-untagged") || url.ends_with(&live_queue))
    );
    let endpoints: Vec<String> = stack
        .subscriptions()
        .await
        .into_iter()
        .map(|(_, endpoint)| endpoint)
        .collect();
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    assert_eq!(
        sweeper.sweep_once().await.expect("sweep"),
        SweepReport::default(),
        "idempotent"
    );
    // The live task still hears invalidations through the queue the sweeps left alone.
    live.wait_trusted().await;
    stack.rename_user("alice", "Alice After The Sweep").await;
    eventually("the rename on the live task", || async {
        (live.user_name("alice").await == "Alice After The Sweep").then_some(())
    })
    .await;
    live.stop().await;
}

/// Role items under `ROLE#<role_id>`, read consistently: the definition (if any) and the IdP
/// roles of its mapping items.
async fn role_items(
    stack: &Stack,
    role_id: &str,
) -> (
    Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    Vec<String>,
) {
    let items = operator::role_items(&stack.aws.dynamodb(), &stack.stack.roles_table, role_id)
        .await
        .expect("role items");
    let mut definition = None;
    let mut mappings = Vec::new();
    for item in items {
        match item.get("SK").and_then(|sk| sk.as_s().ok()) {
            Some(sk) if sk == "DEFINITION" => definition = Some(item),
            Some(sk) => mappings.push(sk.trim_start_matches("JWT_MAPPING#").to_owned()),
            None => {}
        }
    }
    mappings.sort();
    (definition, mappings)
}

fn string_list(
    item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    name: &str,
) -> Vec<String> {
    item.get(name)
        .and_then(|value| value.as_l().ok())
        .map(|list| list.iter().filter_map(|value| value.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}

/// Two tasks PATCH different fields of one role at once while a script writes a third straight
/// to the table (not bumping the version): every acknowledged change is in the stored item, and
/// the mapping items always match the definition — also when a DELETE races a PATCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_role_writes_through_two_instances_lose_no_acknowledged_change() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use reqwest::Method;

    let stack = Stack::start().await;
    // This test is about what concurrent writers may lose, not about timeouts: on a loaded
    // machine a DynamoDB call through moto may take seconds, which the default 3 s call timeout
    // would answer with a 503.
    let mut patient = stack.config();
    patient.aws.call_timeout_ms = 20_000;
    patient.aws.attempt_timeout_ms = 10_000;
    let (a, b) = (
        stack.instance_with(patient.clone(), None).await,
        stack.instance_with(patient, None).await,
    );
    let admin = token("admin", &["Admin"]);
    let create = r#"{"roleId":"analyst","displayName":"Analyst","jwtRoleMappings":["Analyst"]}"#;
    assert_eq!(a.send(Method::POST, "/admin/roles", &admin, Some(create)).await.0, 201);
    let dynamodb = stack.aws.dynamodb();
    let (mut acknowledged, mut conflicts) = (0, 0);
    for round in 0..12 {
        let description = format!(r#"{{"description":"round {round}"}}"#);
        let mappings = format!(r#"{{"jwtRoleMappings":["Analyst","Team{round}"]}}"#);
        let script = dynamodb
            .update_item()
            .table_name(&stack.stack.roles_table)
            .key("PK", AttributeValue::S("ROLE#analyst".into()))
            .key("SK", AttributeValue::S("DEFINITION".into()))
            .update_expression("SET grantedModels = :models")
            .expression_attribute_values(
                ":models",
                AttributeValue::L(vec![AttributeValue::S(format!("model-{round}"))]),
            )
            .send();
        let (by_a, by_b, by_script) = tokio::join!(
            a.send(Method::PATCH, "/admin/roles/analyst", &admin, Some(&description)),
            b.send(Method::PATCH, "/admin/roles/analyst", &admin, Some(&mappings)),
            script,
        );
        by_script.expect("the script's write");
        for (status, body) in [&by_a, &by_b] {
            match status {
                200 => acknowledged += 1,
                409 => {
                    conflicts += 1;
                    assert_eq!(body["error"], "conflict", "{body}");
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        let (definition, stored_mappings) = role_items(&stack, "analyst").await;
        let definition = definition.expect("the definition");
        assert_eq!(
            string_list(&definition, "grantedModels"),
            [format!("model-{round}")],
            "the script's write survived"
        );
        if by_a.0 == 200 {
            assert_eq!(
                definition
                    .get("description")
                    .and_then(|d| d.as_s().ok())
                    .map(String::as_str),
                Some(format!("round {round}").as_str())
            );
        }
        let mut defined = string_list(&definition, "jwtRoleMappings");
        defined.sort();
        if by_b.0 == 200 {
            assert_eq!(defined, ["Analyst".to_owned(), format!("Team{round}")]);
        }
        assert_eq!(stored_mappings, defined, "mapping items match the definition");
    }
    assert!(
        acknowledged >= 12,
        "most writes succeed after a re-read: {acknowledged} acknowledged, {conflicts} conflicts"
    );

    // A DELETE racing a PATCH of the mappings leaves no orphan mapping item.
    let (deleted, patched) = tokio::join!(
        a.send(Method::DELETE, "/admin/roles/analyst", &admin, None),
        b.send(
            Method::PATCH,
            "/admin/roles/analyst",
            &admin,
            Some(r#"{"jwtRoleMappings":["Late"]}"#)
        ),
    );
    let (definition, stored_mappings) = role_items(&stack, "analyst").await;
    match definition {
        None => {
            assert_eq!(deleted.0, 204, "{}", deleted.1);
            assert!(
                stored_mappings.is_empty(),
                "orphaned mapping items: {stored_mappings:?}"
            );
        }
        Some(definition) => {
            assert_ne!(deleted.0, 204, "acknowledged, yet the role is still there");
            assert_eq!(patched.0, 200, "{}", patched.1);
            assert_eq!(string_list(&definition, "jwtRoleMappings"), stored_mappings);
        }
    }
    a.stop().await;
    b.stop().await;
}

/// The stored roles follow the newest token's word in DynamoDB itself: a conditional write, so no
/// task (nor two racing) can store the roles of a token issued before the ones stored.
#[tokio::test]
async fn stored_roles_follow_the_newest_token_in_dynamodb() {
    use staleless_api::store::{DynamoProfiles, ProfileStore, ProfileSync};

    let mut aws = LocalAws::start().expect("emulator");
    let stack = aws.provision_unique().await.expect("provision");
    let profiles = DynamoProfiles::new(aws.dynamodb(), stack.users_table.clone());
    let roles = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
    let sync = |name: &str, claim: &[&str], issued_at: i64| ProfileSync {
        user_id: "ivy".into(),
        email: Some("ivy@example.com".into()),
        name: Some(name.into()),
        roles: Some(roles(claim)),
        roles_issued_at: Some(issued_at),
        picture: None,
        now: "2026-12-01T00:00:00.000Z".into(),
    };
    let created = profiles
        .sync_profile(&sync("Ivy", &["Staff", "Admin"], 1_000))
        .await
        .expect("sync");
    assert_eq!(
        (created.roles.clone(), created.roles_issued_at),
        (roles(&["Staff", "Admin"]), Some(1_000))
    );

    assert!(
        profiles
            .align_roles("ivy", &roles(&["Staff"]), Some(2_000))
            .await
            .expect("align"),
        "a newer token writes"
    );
    assert!(
        !profiles
            .align_roles("ivy", &roles(&["Staff", "Admin"]), Some(1_500))
            .await
            .expect("align"),
        "an older token does not"
    );
    assert!(
        !profiles
            .align_roles("ivy", &roles(&["Staff", "Admin"]), None)
            .await
            .expect("align"),
        "nor one without iat"
    );
    // A sync with the older token updates what it owns but not the roles.
    let synced = profiles
        .sync_profile(&sync("Ivy Old Token", &["Staff", "Admin"], 1_500))
        .await
        .expect("sync");
    assert_eq!(synced.name, "Ivy Old Token");
    assert_eq!(
        (synced.roles.clone(), synced.roles_issued_at),
        (roles(&["Staff"]), Some(2_000))
    );
    let stored = profiles.get_profile("ivy").await.expect("read").expect("profile");
    assert_eq!((stored.roles, stored.roles_issued_at), (roles(&["Staff"]), Some(2_000)));
    assert!(
        !profiles
            .align_roles("nobody", &roles(&["Admin"]), Some(3_000))
            .await
            .expect("align"),
        "never creates"
    );
    aws.stop();
}
