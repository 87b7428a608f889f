//! The example service — a service that is not the API, built on the consumer crate's public API
//! alone — beside the two API tasks: a rename made straight to the users table with the SDK
//! reaches all three; an unknown user is a 404 in JSON; its cache is hit once trusted, and its
//! `/metrics` uses the API tasks' names; its sampled verification catches a hit the table
//! contradicts. (The fault matrix holds it to the bound during the silent faults:
//! `fault_matrix.rs`.)

use std::time::Duration;

use anyhow::Context as _;
use infra::operator::{self, UserChange};
use staleless_tests::{LocalSystem, PATIENCE, SystemOptions, eventually, sum_metric};

/// The freshness bound of this test's system.
const BOUND: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_rename_with_the_sdk_reaches_both_tasks_and_the_example() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions {
        example: true,
        // Every hit re-read: the verification is observed within the test.
        task_env: vec![("CACHE_VERIFY_ONE_IN".to_owned(), "1".to_owned())],
        // Room for the stale-hit step below: with the relay paused, the cache stays trusted for
        // most of this after the last tick, however slow the machine.
        staleness_bound: BOUND,
        ..SystemOptions::default()
    })
    .await?;
    let outcome = exercise(&system).await;
    system.stop().await;
    outcome
}

async fn exercise(system: &LocalSystem) -> anyhow::Result<()> {
    // Warm every cache with the seeded name, then change it outside every API.
    assert_eq!(system.example_name("alice").await?, (200, Some("Alice".to_owned())));
    system.rename_outside_the_api("alice", "Alice", "Alice Liddell").await?;
    eventually(PATIENCE, "the example to serve the new name", || async {
        Ok(system.example_name("alice").await? == (200, Some("Alice Liddell".to_owned())))
    })
    .await?;

    let example = system
        .example
        .as_ref()
        .map(|example| example.base_url.clone())
        .unwrap_or_default();
    let http = reqwest::Client::new();
    let unknown = http.get(format!("{example}/profiles/nobody")).send().await?;
    assert_eq!(unknown.status().as_u16(), 404);
    let body: serde_json::Value = unknown.json().await?;
    assert_eq!(body["error"], "not_found", "{body}");

    // Trusted by its own ticks, the example answers from its cache: hits grow.
    eventually(PATIENCE, "the example to trust its cache", || async {
        system.example_trusts_its_cache().await
    })
    .await?;
    let metrics = || async { anyhow::Ok(http.get(format!("{example}/metrics")).send().await?.text().await?) };
    let hits = |text: &str| sum_metric(text, "staleless_cache_hits_total", &[("cache", "profiles")]);
    let verified = |text: &str, result: &str| {
        sum_metric(
            text,
            "staleless_verified_hits_total",
            &[("cache", "profiles"), ("result", result)],
        )
    };
    // A user no read has touched yet: no re-read of an earlier hit of it can still be running
    // (verdicts come after the answers, each in a task of its own), so every hit below is
    // verified, and against a table that has not changed.
    assert_eq!(system.example_name("admin").await?.0, 200, "filled");
    let text = metrics().await?;
    let (hits_before, fresh_before) = (hits(&text), verified(&text, "fresh"));
    // Reads until five hits were verified fresh: on a loaded machine a late heartbeat flushes the
    // cache now and then (a tick gap), and the read after it is a miss, not a hit.
    eventually(PATIENCE, "five hits, each verified fresh", || async {
        assert_eq!(system.example_name("admin").await?.0, 200);
        let text = metrics().await?;
        Ok(hits(&text) >= hits_before + 5.0 && verified(&text, "fresh") >= fresh_before + 5.0)
    })
    .await?;
    let text = metrics().await?;
    for name in [
        "staleless_cache_misses_total",
        "staleless_ticks_total",
        "staleless_staleness_bound_seconds",
        "staleless_seconds_since_tick",
        "staleless_queue_receives_total",
        // The API tasks' histogram buckets: the same series, not a summary of its own.
        "staleless_cache_fill_seconds_bucket",
    ] {
        assert!(text.contains(name), "the example does not export {name}: {text}");
    }
    let bound = sum_metric(&text, "staleless_staleness_bound_seconds", &[]);
    assert!((bound - BOUND.as_secs_f64()).abs() < f64::EPSILON, "{bound}");

    // The relay hangs: the rename's invalidation never comes, and until the ticks lapse (most of
    // `BOUND` away) the cache is trusted. The next read is a hit on the old name; its
    // verification finds the table holding another and evicts it, so the new name is served
    // while the cache is still trusted: before the bound, with the relay still hung. A loaded
    // machine may flush the cache in between (a late heartbeat is a tick gap): that read is then
    // a miss, counted as one, and the step is taken again with another name.
    let misses = |text: &str| sum_metric(text, "staleless_cache_misses_total", &[("cache", "profiles")]);
    for attempt in 1..=3 {
        let old_name = system.example_name("admin").await?.1;
        // One more hit verified fresh, and none pending: no verdict of an earlier hit can come
        // after the rename below.
        eventually(PATIENCE, "a hit verified fresh with none pending", || async {
            let before = metrics().await?;
            assert_eq!(system.example_name("admin").await?.0, 200);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let after = metrics().await?;
            Ok(hits(&after) == hits(&before) + 1.0 && verified(&after, "fresh") == verified(&before, "fresh") + 1.0)
        })
        .await?;
        let before = metrics().await?;
        system.relay.as_ref().context("no relay to pause")?.pause();
        let new_name = format!("Admin Renamed {attempt}");
        let change = UserChange {
            name: Some(new_name.clone()),
            ..UserChange::default()
        };
        operator::put_user(&system.aws.dynamodb(), &system.stack.users_table, "admin", &change).await?;
        let first = system.example_name("admin").await?;
        if first.1 != old_name {
            let after = metrics().await?;
            if let Some(relay) = &system.relay {
                relay.resume();
            }
            assert!(
                misses(&after) > misses(&before),
                "the new name without a miss: {first:?}, {after}"
            );
            eventually(PATIENCE, "the relay to catch up", || async {
                Ok(system.example_name("admin").await? == (200, Some(new_name.clone())))
            })
            .await?;
            continue;
        }
        eventually(PATIENCE, "the new name, after the stale hit's eviction", || async {
            Ok(system.example_name("admin").await? == (200, Some(new_name.clone())))
        })
        .await?;
        let trusted = system.example_trusts_its_cache().await?;
        let stale = verified(&metrics().await?, "stale");
        if let Some(relay) = &system.relay {
            relay.resume();
        }
        assert!(
            trusted,
            "the new name came from an eviction, not from a bypass past the bound"
        );
        assert!(
            stale > verified(&before, "stale"),
            "the hit on the old name was not verified stale"
        );
        return Ok(());
    }
    anyhow::bail!("three renames in a row were read through after a flush: no stale hit to verify")
}
