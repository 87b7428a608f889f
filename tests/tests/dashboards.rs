//! The Grafana dashboard (`dashboards/grafana/staleless-tasks.json`) against what a running API
//! task exports: every metric a panel's query names, and every label it matches on or groups
//! by, must be in the task's `/metrics`. A metric renamed in the code (or a label dropped)
//! fails here instead of leaving a panel empty in production.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use staleless_tests::{LocalSystem, PATIENCE, SystemOptions, eventually, sum_metric};

/// Labels Prometheus adds to every scraped series, and a histogram's bucket bound.
const ADDED_BY_PROMETHEUS: [&str; 3] = ["instance", "job", "le"];

#[tokio::test]
async fn every_metric_and_label_of_the_grafana_dashboard_is_exported_by_a_task() -> anyhow::Result<()> {
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana/staleless-tasks.json");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&dashboard).with_context(|| format!("{}", dashboard.display()))?,
    )?;
    let queries = queries(&dashboard);
    anyhow::ensure!(queries.len() >= 8, "only {} queries in the dashboard", queries.len());

    let system = LocalSystem::start(SystemOptions {
        task_env: vec![("CACHE_VERIFY_ONE_IN".to_owned(), "1".to_owned())],
        ..SystemOptions::default()
    })
    .await?;
    let outcome = async {
        // Reads through both caches (request durations, hits, fills, verified hits), and a
        // change applied by every task (invalidation lag).
        system.rename_outside_the_api("alice", "Alice", "Alice Liddell").await?;
        let metrics_url = format!("{}/metrics", system.task_urls[0]);
        eventually(PATIENCE, "task 0 to apply an invalidation of users", || async {
            let text = reqwest::get(&metrics_url).await?.text().await?;
            Ok(sum_metric(&text, "staleless_invalidations_applied_total", &[("source", "users")]) >= 1.0)
        })
        .await?;
        let text = reqwest::get(&metrics_url).await?.text().await?;
        anyhow::Ok(missing(&queries, &exported(&text)))
    }
    .await;
    system.stop().await;
    let missing = outcome?;
    anyhow::ensure!(
        missing.is_empty(),
        "the dashboard names what the task does not export:\n{}",
        missing.join("\n")
    );
    Ok(())
}

/// Every `expr` of every panel target, nested rows included.
fn queries(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .flat_map(|(key, value)| match (key.as_str(), value) {
                ("expr", serde_json::Value::String(expr)) => vec![expr.clone()],
                _ => queries(value),
            })
            .collect(),
        serde_json::Value::Array(items) => items.iter().flat_map(queries).collect(),
        _ => Vec::new(),
    }
}

/// Metric name → the label names its series carry, from a Prometheus text exposition.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut families: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = families.entry(line[..name_end].to_owned()).or_default();
        if let Some(inside) = line[name_end..].strip_prefix('{') {
            labels.extend(label_names(inside));
        }
    }
    families
}

/// The label names of a series' `key="value",…}`, values skipped as quoted strings (a route
/// such as `/admin/users/{user_id}` holds braces).
fn label_names(mut rest: &str) -> Vec<String> {
    let mut names = Vec::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        names.push(key.trim_start_matches([',', ' ']).to_owned());
        let mut escaped = false;
        let Some(end) = after.char_indices().find_map(|(at, c)| {
            let closes = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closes.then_some(at)
        }) else {
            break;
        };
        rest = &after[end + 1..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// What the queries name that the exposition lacks, one line each.
fn missing(queries: &[String], exported: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut missing = Vec::new();
    for query in queries {
        let names = metric_names(query);
        if names.is_empty() {
            missing.push(format!("{query}: names no staleless metric"));
        }
        let mut carried = BTreeSet::new();
        for (name, matchers) in &names {
            let Some(labels) = exported.get(name) else {
                missing.push(format!("{query}: metric {name}"));
                continue;
            };
            carried.extend(labels.iter().cloned());
            for label in matchers
                .iter()
                .filter(|label| !ADDED_BY_PROMETHEUS.contains(&label.as_str()))
            {
                if !labels.contains(label) {
                    missing.push(format!("{query}: label {label} of {name}"));
                }
            }
        }
        for label in grouping_labels(query) {
            if !ADDED_BY_PROMETHEUS.contains(&label.as_str()) && !carried.contains(&label) {
                missing.push(format!("{query}: label {label} (grouped by) on none of its metrics"));
            }
        }
    }
    missing
}

/// The `staleless_*` metrics of a query, each with the label names it matches on.
fn metric_names(query: &str) -> Vec<(String, Vec<String>)> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(start) = rest.find("staleless_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut matchers = Vec::new();
        if let Some(inside) = tail[end..].strip_prefix('{').and_then(|after| after.split_once('}')) {
            for matcher in inside.0.split(',') {
                let key: String = matcher
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !key.is_empty() {
                    matchers.push(key);
                }
            }
        }
        names.push((name, matchers));
        rest = &tail[end..];
    }
    names
}

/// The labels of every `by (…)` and `on (…)`/`ignoring (…)`/`without (…)` clause.
fn grouping_labels(query: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for keyword in ["by", "on", "ignoring", "without", "group_left", "group_right"] {
        let mut rest = query;
        while let Some(at) = rest.find(keyword) {
            let before_ok = at == 0 || !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            let after = rest[at + keyword.len()..].trim_start();
            if before_ok && let Some(inside) = after.strip_prefix('(').and_then(|after| after.split_once(')')) {
                labels.extend(
                    inside
                        .0
                        .split(',')
                        .map(|label| label.trim().to_owned())
                        .filter(|label| !label.is_empty()),
                );
            }
            rest = &rest[at + keyword.len()..];
        }
    }
    labels
}

#[test]
fn label_names_skip_quoted_values_with_braces_and_commas() {
    assert_eq!(
        label_names(r#"method="GET",route="/admin/users/{user_id}",reason="a,\"b\"}",le="+Inf"} 3"#),
        ["method", "route", "reason", "le"]
    );
    assert_eq!(
        metric_names(r#"sum by (le, route) (rate(staleless_x_bucket{instance=~"$task", cache="a"}[5m]))"#),
        [(
            "staleless_x_bucket".to_owned(),
            vec!["instance".to_owned(), "cache".to_owned()]
        )]
    );
    assert_eq!(
        grouping_labels("sum by (le, route) (x) / on(instance) y"),
        ["le", "route", "instance"]
    );
}
