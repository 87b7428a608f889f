//! The FastAPI example — a Python service on the package in `python/` — beside the two API tasks
//! and the Rust example: a rename made straight to the users table with the SDK reaches all four;
//! an unknown user is the same 404 JSON as the Rust example's; it trusts its cache by the same
//! ticks and exports the same metric series. (The fault matrix holds it to the bound during the
//! silent faults, the relay hung among them: `fault_matrix.rs`.)

use anyhow::Context as _;
use staleless_tests::{LocalSystem, PATIENCE, SystemOptions, eventually, sum_metric};

#[tokio::test]
async fn a_rename_with_the_sdk_reaches_the_fastapi_example_and_every_other_consumer() -> anyhow::Result<()> {
    let system = LocalSystem::start(SystemOptions {
        example: true,
        py_example: true,
        ..SystemOptions::default()
    })
    .await?;
    let outcome = exercise(&system).await;
    system.stop().await;
    outcome
}

async fn exercise(system: &LocalSystem) -> anyhow::Result<()> {
    // Warm every cache with the seeded name, then change it outside every API.
    assert_eq!(system.py_example_name("alice").await?, (200, Some("Alice".to_owned())));
    assert_eq!(system.example_name("alice").await?, (200, Some("Alice".to_owned())));
    system.rename_outside_the_api("alice", "Alice", "Alice Liddell").await?;
    let renamed = (200, Some("Alice Liddell".to_owned()));
    eventually(PATIENCE, "the FastAPI example to serve the new name", || async {
        Ok(system.py_example_name("alice").await? == renamed)
    })
    .await?;
    eventually(PATIENCE, "the Rust example to serve the new name", || async {
        Ok(system.example_name("alice").await? == renamed)
    })
    .await?;

    let http = reqwest::Client::new();
    let py_example = system.py_example.as_ref().context("FastAPI example")?.base_url.clone();
    let example = system.example.as_ref().context("Rust example")?.base_url.clone();
    for base_url in [&py_example, &example] {
        let unknown = http.get(format!("{base_url}/profiles/nobody")).send().await?;
        assert_eq!(unknown.status().as_u16(), 404, "{base_url}");
        let body: serde_json::Value = unknown.json().await?;
        assert_eq!(body["error"], "not_found", "{base_url}: {body}");
    }

    // Trusted by its own ticks, it answers from its cache: hits grow, and it exports what the
    // Rust consumers export, under the same names and labels.
    eventually(PATIENCE, "both examples to trust their caches", || async {
        Ok(system.examples_trusting().await? == [true, true])
    })
    .await?;
    let metrics = |base_url: String| {
        let http = http.clone();
        async move { anyhow::Ok(http.get(format!("{base_url}/metrics")).send().await?.text().await?) }
    };
    let hits = |text: &str| sum_metric(text, "staleless_cache_hits_total", &[("cache", "profiles")]);
    assert_eq!(system.py_example_name("admin").await?.0, 200, "filled");
    let before = hits(&metrics(py_example.clone()).await?);
    eventually(PATIENCE, "three hits on the FastAPI example's cache", || async {
        assert_eq!(system.py_example_name("admin").await?.0, 200);
        Ok(hits(&metrics(py_example.clone()).await?) >= before + 3.0)
    })
    .await?;
    let (python, rust) = (metrics(py_example.clone()).await?, metrics(example.clone()).await?);
    for (name, labels) in [
        ("staleless_cache_hits_total", &[("cache", "profiles")][..]),
        ("staleless_cache_misses_total", &[("cache", "profiles")]),
        ("staleless_cache_fills_total", &[("cache", "profiles")]),
        ("staleless_ticks_total", &[("source", "users")]),
        ("staleless_cache_trusted", &[("cache", "profiles")]),
        ("staleless_seconds_since_tick", &[("source", "users")]),
        ("staleless_tick_written_timestamp_seconds", &[("source", "users")]),
        ("staleless_staleness_bound_seconds", &[]),
        ("staleless_queue_receives_total", &[]),
        ("staleless_queue_messages_total", &[("outcome", "applied")]),
        ("staleless_cache_fill_seconds_bucket", &[("cache", "profiles")]),
    ] {
        for (consumer, text) in [("FastAPI", &python), ("Rust", &rust)] {
            let series = text
                .lines()
                .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
                .find(|line| {
                    labels
                        .iter()
                        .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
                });
            assert!(
                series.is_some(),
                "the {consumer} example does not export {name} with {labels:?}:\n{text}"
            );
        }
    }
    let bound = sum_metric(&python, "staleless_staleness_bound_seconds", &[]);
    assert!(
        (bound - SystemOptions::TEST_BOUND.as_secs_f64()).abs() < f64::EPSILON,
        "{bound}"
    );
    Ok(())
}
