//! Throughput of the pure transform on one core: Lambda-shaped records → coalesced keys
//! (mapping, no-op filter, coalescing) and → packed messages (plus JSON encoding).
//!
//! `cargo bench -p stream-relay --bench transform`; the goal is ≥ 1,000,000 records/s.

use std::hint::black_box;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use staleless_protocol::{pack_invalidation_messages, sns_body_budget};
use stream_relay::Mapper;
use stream_relay::mapping::map_batch;

/// A batch shaped like production traffic: mostly `lastLoginAt` rewrites (no-ops), profile
/// edits, and role edits whose mapping items coalesce onto one key.
fn batch(size: usize) -> Vec<EventRecord> {
    let users: Event =
        serde_json::from_str(include_str!("../tests/fixtures/users_modify_last_login_only.json")).expect("fixture");
    let status: Value =
        serde_json::from_str(include_str!("../tests/fixtures/users_modify_status.json")).expect("fixture");
    let roles: Event = serde_json::from_str(include_str!("../tests/fixtures/roles_edit.json")).expect("fixture");
    (0..size)
        .map(|n| match n % 4 {
            0 | 1 => users.records[0].clone(),
            2 => {
                let mut record = status["Records"][0].clone();
                record["dynamodb"]["Keys"]["PK"] = json!({"S": format!("USER#u-{}", n % 1_000)});
                record["dynamodb"]["SequenceNumber"] = json!(format!("{}", 4_100_000_000u64 + n as u64));
                serde_json::from_value(record).expect("record")
            }
            _ => roles.records[n % roles.records.len()].clone(),
        })
        .collect()
}

fn transform(c: &mut Criterion) {
    let mapper = Mapper::new("staleless-users", "staleless-app-roles", vec!["lastLoginAt".into()]);
    let records = batch(100);
    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("map_and_coalesce/100", |b| {
        b.iter(|| black_box(map_batch(&mapper, black_box(&records), 0, |_, _, _| {})));
    });
    group.bench_function("map_coalesce_and_pack/100", |b| {
        b.iter(|| {
            let keys = map_batch(&mapper, black_box(&records), 0, |_, _, _| {}).keys;
            for source in mapper.sources() {
                let of_source = keys
                    .iter()
                    .filter(|key| key.source == source)
                    .map(|key| key.key_version());
                black_box(pack_invalidation_messages(source, of_source, sns_body_budget()).expect("pack"));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, transform);
criterion_main!(benches);
