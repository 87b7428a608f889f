//! The CloudWatch dashboard of `template.yaml` names only metrics that exist: each relay metric
//! is one the relay's embedded-metric lines emit (with the same dimensions), each AWS metric one
//! an alarm of the template watches (same namespace, name and dimension), and its alarm widget
//! lists every alarm. A metric renamed in `stream-relay/src/metrics.rs`, or an alarm added
//! without its place on the dashboard, fails here.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::Value;
use stream_relay::metrics::{NAMESPACE, emf_lines};
use stream_relay::relay::InvocationSummary;

const TEMPLATE: &str = include_str!("../../template.yaml");

/// (namespace, metric, dimensions as `name=value`, sorted).
type MetricKey = (String, String, Vec<String>);

fn resources() -> serde_yaml_ng::Mapping {
    let template: Value = serde_yaml_ng::from_str(TEMPLATE).expect("template.yaml is YAML");
    template["Resources"].as_mapping().expect("Resources").clone()
}

/// A CloudFormation value as the dashboard's `!Sub` spells it: `!Ref X` is `${X}`, `!GetAtt X.Y`
/// is `${X.Y}`, a string is itself.
fn as_sub(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Tagged(tagged) => {
            let inner = match &tagged.value {
                Value::String(text) => text.clone(),
                Value::Sequence(parts) => parts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("."),
                other => panic!("unexpected value under {}: {other:?}", tagged.tag),
            };
            format!("${{{inner}}}")
        }
        other => panic!("unexpected value {other:?}"),
    }
}

/// Every alarm: logical id → the metric it watches.
fn alarms() -> BTreeMap<String, MetricKey> {
    resources()
        .iter()
        .filter(|(_, resource)| resource["Type"] == "AWS::CloudWatch::Alarm")
        .map(|(id, resource)| {
            let properties = &resource["Properties"];
            let mut dimensions: Vec<String> = properties["Dimensions"]
                .as_sequence()
                .map(|dimensions| {
                    dimensions
                        .iter()
                        .map(|dimension| format!("{}={}", as_sub(&dimension["Name"]), as_sub(&dimension["Value"])))
                        .collect()
                })
                .unwrap_or_default();
            dimensions.sort();
            let key = (
                as_sub(&properties["Namespace"]),
                as_sub(&properties["MetricName"]),
                dimensions,
            );
            (id.as_str().expect("logical id").to_owned(), key)
        })
        .collect()
}

/// The dashboard's body, parsed (its `${…}` references left as text inside the strings).
fn dashboard() -> serde_json::Value {
    let resources = resources();
    let dashboards: Vec<&Value> = resources
        .values()
        .filter(|resource| resource["Type"] == "AWS::CloudWatch::Dashboard")
        .collect();
    assert_eq!(dashboards.len(), 1, "one dashboard");
    let Value::Tagged(body) = &dashboards[0]["Properties"]["DashboardBody"] else {
        panic!("DashboardBody is a !Sub");
    };
    let text = body.value.as_str().expect("!Sub of a string");
    serde_json::from_str(text).expect("the dashboard body is JSON")
}

/// Every metric row of every metric widget.
fn dashboard_metrics(dashboard: &serde_json::Value) -> Vec<MetricKey> {
    let mut metrics = Vec::new();
    for widget in dashboard["widgets"].as_array().expect("widgets") {
        let Some(rows) = widget["properties"]["metrics"].as_array() else {
            continue;
        };
        for row in rows {
            let parts: Vec<&str> = row
                .as_array()
                .expect("a metric row")
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect();
            assert!(
                parts.len() >= 2 && parts.len().is_multiple_of(2) && !parts.contains(&"."),
                "a full metric row: namespace, name, then dimension pairs: {row}"
            );
            let mut dimensions: Vec<String> = parts[2..]
                .chunks(2)
                .map(|pair| format!("{}={}", pair[0], pair[1]))
                .collect();
            dimensions.sort();
            metrics.push((parts[0].to_owned(), parts[1].to_owned(), dimensions));
        }
    }
    metrics
}

/// What the relay's EMF lines declare: (metric, dimension names), for an invocation that did
/// everything (so every line is emitted), ticks of both built-in sources included.
fn relay_metrics() -> BTreeSet<(String, Vec<String>)> {
    let summary = InvocationSummary {
        ticks_published: [
            (staleless_protocol::Source::USERS, 1),
            (staleless_protocol::Source::ROLES, 1),
        ]
        .into(),
        ..InvocationSummary::default()
    };
    let mut declared = BTreeSet::new();
    for line in emf_lines(&summary, 0) {
        for directive in line["_aws"]["CloudWatchMetrics"].as_array().expect("directives") {
            assert_eq!(directive["Namespace"], NAMESPACE);
            let dimensions: Vec<String> = directive["Dimensions"][0]
                .as_array()
                .expect("one dimension set")
                .iter()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .collect();
            for metric in directive["Metrics"].as_array().expect("metrics") {
                declared.insert((metric["Name"].as_str().expect("name").to_owned(), dimensions.clone()));
            }
        }
    }
    declared
}

#[test]
fn every_dashboard_metric_is_emitted_by_the_relay_or_watched_by_an_alarm() {
    let alarmed: BTreeSet<MetricKey> = alarms().into_values().collect();
    let emitted = relay_metrics();
    let metrics = dashboard_metrics(&dashboard());
    assert!(metrics.len() >= 10, "{metrics:?}");
    let mut unknown = Vec::new();
    for (namespace, name, dimensions) in &metrics {
        let known = if namespace == NAMESPACE {
            let names: Vec<String> = dimensions
                .iter()
                .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
                .collect();
            emitted.contains(&(name.clone(), names))
        } else {
            alarmed.contains(&(namespace.clone(), name.clone(), dimensions.clone()))
        };
        if !known {
            unknown.push(format!("{namespace} {name} {dimensions:?}"));
        }
    }
    assert!(unknown.is_empty(), "metrics nothing emits or watches: {unknown:?}");
    // Each relay metric is on the dashboard.
    for (name, _) in &emitted {
        assert!(
            metrics
                .iter()
                .any(|(namespace, shown, _)| namespace == NAMESPACE && shown == name),
            "the relay emits {name}, which the dashboard does not show"
        );
    }
}

#[test]
fn the_alarm_widget_lists_every_alarm() {
    let listed: BTreeSet<String> = dashboard()["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .filter(|widget| widget["type"] == "alarm")
        .flat_map(|widget| widget["properties"]["alarms"].as_array().cloned().unwrap_or_default())
        .filter_map(|arn| arn.as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = alarms().into_keys().map(|id| format!("${{{id}.Arn}}")).collect();
    assert_eq!(listed, expected);
}

#[test]
fn every_alarm_on_a_relay_metric_watches_one_the_relay_emits() {
    let emitted = relay_metrics();
    for (id, (namespace, name, dimensions)) in alarms() {
        if namespace != NAMESPACE {
            continue;
        }
        let names: Vec<String> = dimensions
            .iter()
            .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
            .collect();
        assert!(
            emitted.contains(&(name.clone(), names)),
            "{id} watches {name} {dimensions:?}, which the relay does not emit"
        );
    }
}
