//! The authenticated hot path — token → verified claims → profile → permissions — on a cache
//! hit, beside the same request with `CACHE_MODE=off` against moto, in one run.
//!
//! - `hot_path/event_cache_hit`: `AppState::caller` with everything cached (SHA-256 of the
//!   token, claims cache, profile cache, catalogue, memoized resolution).
//! - `hot_path/event_cache_hit_without_token_hash`: the same minus the token part, i.e. the
//!   data caches alone (profile → permissions).
//! - `hot_path/token_verify_uncached`: what the claims cache saves, an RS256 verification.
//! - `hot_path/off_moto`: `AppState::caller` with no cache: `GetItem` + role `Scan` on moto.
//! - `hot_path/event_cache_hit_verified_1_in_1000`: `event_cache_hit` with the sampled
//!   verification at its default, one profile hit in 1,000 re-read (from the in-memory store,
//!   in a task of its own) and compared: what the sampler costs the hot path.
//!
//! Run: `cargo bench -p staleless-api --bench auth_hot_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

// The role and profile builders the API's tests use, so the bench measures the same data.
#[path = "../tests/common/mod.rs"]
mod common;
use infra::jwt::LocalJwt;
use staleless_api::auth::{Authenticator, JwksSource};
use staleless_api::model::UserStatus;
use staleless_api::store::{MemoryStore, ProfileStore, RoleStore};
use staleless_api::{AppState, CacheMode, Config};

fn config(mode: CacheMode, verify_one_in: u64) -> Config {
    let mut config = Config::from_env().expect("config");
    config.cache.cache_mode = mode;
    config.channel.verify_one_in = verify_one_in;
    // No heartbeat writer runs here: the caches are vouched for once, for the whole bench.
    config.channel.staleness_bound_secs = 86_400;
    config.jwt.issuer = infra::jwt::LOCAL_ISSUER.to_owned();
    config.jwt.audience = infra::jwt::LOCAL_AUDIENCE.to_owned();
    config
}

async fn state(
    jwt: &LocalJwt,
    (mode, verify_one_in): (CacheMode, u64),
    profiles: Arc<dyn ProfileStore>,
    roles: Arc<dyn RoleStore>,
) -> AppState {
    let config = config(mode, verify_one_in);
    let set = serde_json::from_value(jwt.jwks().clone()).expect("jwks");
    let auth = Authenticator::new(JwksSource::Fixed(set), &config.jwt, 10_000)
        .await
        .expect("auth");
    let state = AppState::new(config, profiles, roles, auth, None);
    state.channel.mark_subscribed("bench");
    state.channel.record_ticks_now();
    state
}

fn memory_store() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    for (id, mappings, tools, priority) in [
        ("system_admin", &["Admin"][..], &["*"][..], 900),
        ("staff", &["Staff"][..], &["search", "calendar"][..], 100),
        ("default", &[][..], &["search"][..], 0),
    ] {
        store.put_role_directly(common::role(id, mappings, tools, priority, true));
    }
    store.put_profile_directly(common::profile("alice", &["Staff"], UserStatus::Active));
    store
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let jwt = LocalJwt::generate().expect("key pair");
    let token = jwt.mint(
        "alice",
        Some(&["Staff"]),
        "alice@example.com",
        "Alice",
        Duration::from_secs(3_600),
    );

    let store = memory_store();
    let cached = runtime.block_on(state(&jwt, (CacheMode::Event, 0), store.clone(), store.clone()));
    let sampled_store = memory_store();
    let sampled = runtime.block_on(state(
        &jwt,
        (CacheMode::Event, 1_000),
        sampled_store.clone(),
        sampled_store.clone(),
    ));
    runtime.block_on(sampled.caller(&token)).expect("warm-up");
    runtime.block_on(cached.caller(&token)).expect("warm-up");
    let reads = store.profile_reads();

    // Moto for the uncached comparison, seeded with the demo data (alice is Staff there too).
    let aws = infra::LocalAws::start().expect("emulator");
    let stack = runtime.block_on(aws.provision_unique()).expect("provision");
    runtime
        .block_on(infra::operator::seed_demo(
            &aws.dynamodb(),
            &stack.users_table,
            &stack.roles_table,
        ))
        .expect("seed");
    let dynamodb = aws.dynamodb();
    let uncached = runtime.block_on(state(
        &jwt,
        (CacheMode::Off, 0),
        Arc::new(staleless_api::store::DynamoProfiles::new(
            dynamodb.clone(),
            stack.users_table.clone(),
        )),
        Arc::new(staleless_api::store::DynamoRoles::new(
            dynamodb,
            stack.roles_table.clone(),
        )),
    ));
    runtime.block_on(uncached.caller(&token)).expect("moto warm-up");

    let mut group = c.benchmark_group("hot_path");
    let _guard = runtime.enter();
    group.bench_function("event_cache_hit", |b| {
        // A hit never awaits anything pending, so polling it once on this thread measures the
        // path itself rather than a scheduler round trip.
        b.iter(|| futures::executor::block_on(black_box(&cached).caller(black_box(&token))).expect("caller"));
    });
    let profile = runtime
        .block_on(cached.directory.profile("alice"))
        .expect("profile")
        .expect("alice");
    group.bench_function("event_cache_hit_without_token_hash", |b| {
        b.iter(|| {
            futures::executor::block_on(async {
                let profile = cached
                    .directory
                    .profile(black_box("alice"))
                    .await
                    .expect("profile")
                    .expect("alice");
                cached.directory.access(&profile).await.expect("access")
            })
        });
    });
    drop(profile);
    group.bench_function("event_cache_hit_verified_1_in_1000", |b| {
        b.iter(|| futures::executor::block_on(black_box(&sampled).caller(black_box(&token))).expect("caller"));
    });
    group.bench_function("token_verify_uncached", |b| {
        b.iter(|| {
            cached.auth.flush();
            futures::executor::block_on(cached.auth.authenticate(black_box(&token))).expect("verify")
        });
    });
    group.sample_size(30).measurement_time(Duration::from_secs(10));
    group.bench_function("off_moto", |b| {
        b.to_async(&runtime)
            .iter(|| async { uncached.caller(black_box(&token)).await.expect("caller") });
    });
    group.finish();
    assert_eq!(
        store.profile_reads(),
        reads,
        "the cached benchmarks never read the store"
    );
    let verified = sampled.directory.profile_verification().expect("verification on");
    assert!(
        verified.fresh > 0 && verified.stale == 0,
        "the sampled bench verified its hits fresh: {verified:?}"
    );
    println!(
        "sampled verification: {} hits verified fresh, {} profile reads for {} verifications",
        verified.fresh,
        sampled_store.profile_reads(),
        verified.fresh + verified.stale
    );
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
