"""The metrics: the Rust consumer's names (read from its source), labels and buckets, the text as
the Rust exporter prints it, the freshness gauges read from the channel at each scrape, and what
real caches, inboxes and subscribers report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from staleless.cache import CacheMode, TrustedCache
from staleless.caches import Caches
from staleless.health import ChannelHealth, ManualClock, SourceSpec
from staleless.inbox import Inbox
from staleless.metrics import CONTENT_TYPE, SECONDS_BUCKETS, MetricNames, Metrics, sample_sum
from staleless.trust import TrustRules

METRICS_RS = Path(__file__).resolve().parents[2] / "consumer" / "src" / "metrics.rs"
START_MS = 1_800_000_000_000
SOURCES = [SourceSpec("users", "profiles"), SourceSpec("roles", "roles")]


def channel(clock: ManualClock | None = None) -> ChannelHealth:
    return ChannelHealth(TrustRules(15_000), SOURCES, clock=clock or ManualClock(START_MS))


def text(metrics: Metrics) -> str:
    return metrics.render().decode()


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return sample_sum(text(metrics), name, **labels)


def tick(written_ms: int, source: str = "users", writer: str = "staleless") -> str:
    return f'{{"v":1,"kind":"tick","source":"{source}","written_at_ms":{written_ms},"writer":"{writer}"}}'


@pytest.mark.skipif(not METRICS_RS.exists(), reason="the Rust consumer's source is not beside this package")
def test_the_names_and_buckets_are_the_rust_consumers() -> None:
    source = METRICS_RS.read_text()
    body = source[source.index("pub fn with_prefix") :]
    body = body[: body.index("\n    }\n")]
    rust = dict(re.findall(r"(\w+): name\(\"(\w+)\"\)", body))
    python = {field: name.removeprefix("staleless_") for field, name in vars(MetricNames.with_prefix()).items()}
    assert python == rust
    buckets = re.search(r"SECONDS_BUCKETS: &\[f64\] = &\[(.*?)\];", source, flags=re.DOTALL)
    assert buckets is not None
    assert tuple(float(bound) for bound in buckets.group(1).replace("\n", "").split(",") if bound.strip()) == (
        SECONDS_BUCKETS
    )


def test_a_prefix_replaces_only_the_namespace() -> None:
    names = MetricNames.with_prefix()
    assert names.cache_hits == "staleless_cache_hits_total"
    assert names.since_tick == "staleless_seconds_since_tick"
    custom = Metrics("orders")
    assert custom.names.cache_hits == "orders_cache_hits_total"
    assert custom.names.verified_hits == "orders_verified_hits_total"
    custom.hit("profiles")
    assert sample_sum(text(custom), "orders_cache_hits_total", cache="profiles") == 1


def test_the_text_is_printed_as_the_rust_exporter_prints_it() -> None:
    metrics = Metrics()
    metrics.hit("profiles")
    metrics.hit("profiles")
    metrics.fill("profiles", 0.003)
    metrics.invalidation_lag(0.02)
    rendered = text(metrics)
    assert "# TYPE staleless_cache_hits_total counter\n" in rendered
    assert 'staleless_cache_hits_total{cache="profiles"} 2\n' in rendered, "whole numbers without .0"
    assert "_created" not in rendered
    assert 'staleless_cache_fill_seconds_bucket{cache="profiles",le="0.0025"} 0\n' in rendered
    assert 'staleless_cache_fill_seconds_bucket{cache="profiles",le="1"} 1\n' in rendered
    assert 'staleless_cache_fill_seconds_bucket{cache="profiles",le="+Inf"} 1\n' in rendered
    assert "staleless_invalidation_lag_seconds_sum 0.02\n" in rendered
    bounds = re.findall(r'staleless_invalidation_lag_seconds_bucket\{le="([^"]+)"\}', rendered)
    rust_bounds = [
        "0.001",
        "0.0025",
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1",
        "2.5",
        "5",
        "10",
        "30",
    ]
    assert bounds == [*rust_bounds, "+Inf"], "as Rust prints an f64"
    # And it is valid Prometheus text.
    families = {family.name: family for family in text_string_to_metric_families(rendered)}
    assert families["staleless_cache_hits"].type == "counter"
    assert families["staleless_cache_fill_seconds"].type == "histogram"
    assert CONTENT_TYPE == "text/plain; version=0.0.4"


def test_describe_registers_at_zero_what_the_rust_consumer_registers() -> None:
    metrics = Metrics().describe(SOURCES, verify=True)
    rendered = text(metrics)
    for cache in ("profiles", "roles"):
        for name in (
            "cache_hits_total",
            "cache_misses_total",
            "cache_fills_total",
            "cache_fills_discarded_total",
            "cache_invalidations_total",
            "cache_bypassed_reads_total",
            "cache_fill_seconds_count",
        ):
            assert sample_sum(rendered, f"staleless_{name}", cache=cache) == 0, (name, cache)
        for result in ("fresh", "stale"):
            assert sample_sum(rendered, "staleless_verified_hits_total", cache=cache, result=result) == 0
    for source in ("users", "roles", "all"):
        assert sample_sum(rendered, "staleless_invalidations_applied_total", source=source) == 0
    for reason in ("unknown_writer", "future"):
        assert sample_sum(rendered, "staleless_ticks_rejected_total", source="users", reason=reason) == 0
    assert sample_sum(rendered, "staleless_give_up_flushes_total", source="roles") == 0
    assert sample_sum(Metrics().describe(SOURCES).render().decode(), "staleless_verified_hits_total") is None


def test_the_freshness_gauges_are_read_from_the_channel_at_each_scrape() -> None:
    clock = ManualClock(START_MS)
    health = channel(clock)
    metrics = Metrics().watch(health)
    assert value(metrics, "staleless_cache_trusted", cache="profiles") == 0
    assert value(metrics, "staleless_staleness_bound_seconds") == 15
    assert value(metrics, "staleless_channel_healthy") == 0
    assert value(metrics, "staleless_seconds_since_tick", source="users") is None, "no tick yet: no series"
    health.mark_subscribed("q")
    inbox = Inbox(health, Caches(), observer=metrics)
    inbox.receive(tick(START_MS - 1_500))
    assert value(metrics, "staleless_cache_trusted", cache="profiles") == 1
    assert value(metrics, "staleless_cache_trusted", cache="roles") == 0
    assert value(metrics, "staleless_tick_lag_seconds", source="users") == 1.5
    assert value(metrics, "staleless_tick_written_timestamp_seconds", source="users") == (START_MS - 1_500) / 1000
    clock.advance(4_000)
    assert value(metrics, "staleless_seconds_since_tick", source="users") == 4, "current at the scrape"
    assert value(metrics, "staleless_tick_lag_seconds", source="users") == 5.5
    inbox.receive(tick(START_MS + 4_000, source="roles"))
    assert value(metrics, "staleless_channel_healthy") == 1
    clock.advance(20_000)
    assert value(metrics, "staleless_cache_trusted", cache="profiles") == 0
    assert value(metrics, "staleless_channel_healthy") == 0


async def test_a_cache_reports_hits_misses_fills_bypasses_and_invalidations() -> None:
    health = channel()
    metrics = Metrics().watch(health)
    names: TrustedCache[str, str] = TrustedCache(health, "users", CacheMode.EVENT, observer=metrics)

    async def read(key: str) -> str:
        async def load() -> str:
            return key.title()

        return await names.get(key, load)

    assert await read("alice") == "Alice"  # not trusted: bypassed
    health.mark_subscribed("q")
    health.record_ticks_now()
    assert await read("alice") == "Alice"  # miss, fill
    assert await read("alice") == "Alice"  # hit
    names.invalidate("alice")
    assert value(metrics, "staleless_cache_bypassed_reads_total", cache="profiles") == 1
    assert value(metrics, "staleless_cache_misses_total", cache="profiles") == 1
    assert value(metrics, "staleless_cache_hits_total", cache="profiles") == 1
    assert value(metrics, "staleless_cache_fills_total", cache="profiles") == 2, "a bypassed read loads too"
    assert value(metrics, "staleless_cache_fill_seconds_count", cache="profiles") == 2
    assert value(metrics, "staleless_cache_invalidations_total", cache="profiles") == 1


def test_an_inbox_reports_messages_ticks_and_invalidations() -> None:
    clock = ManualClock(START_MS)
    health = channel(clock)
    metrics = Metrics().watch(health)
    names: TrustedCache[str, str] = TrustedCache(health, "users", observer=metrics)
    inbox = Inbox(health, Caches().register("users", names), {"staleless-users": "users"}, observer=metrics)
    health.mark_subscribed("q")
    inbox.receive(tick(START_MS))
    inbox.receive(tick(START_MS, writer="evil"))
    inbox.receive(tick(START_MS + 60_000))
    inbox.receive('{"v":1,"kind":"invalidate","source":"users","keys":[{"id":"a","seq":"1","at_ms":0}]}')
    inbox.receive(
        f'{{"v":1,"kind":"invalidate","source":"users","keys":[{{"id":"b","seq":"2","at_ms":{START_MS - 40}}}]}}'
    )
    inbox.receive('{"v":1,"kind":"flush_all","reason":"operator"}')
    inbox.receive("not json")
    inbox.receive('{"DDBStreamBatchInfo":{"streamArn":"arn:aws:dynamodb:us-east-1:1:table/staleless-users/stream/x"}}')
    clock.advance(16_000)
    inbox.receive(tick(START_MS + 16_000))  # back within the bound after a lapse
    assert value(metrics, "staleless_ticks_total", source="users") == 2
    assert value(metrics, "staleless_ticks_rejected_total", source="users", reason="unknown_writer") == 1
    assert value(metrics, "staleless_ticks_rejected_total", source="users", reason="future") == 1
    assert value(metrics, "staleless_invalidations_applied_total", source="users") == 2
    assert value(metrics, "staleless_invalidations_applied_total", source="all") == 1
    assert value(metrics, "staleless_invalidation_lag_seconds_count") == 1, "keys without a time have no lag"
    assert value(metrics, "staleless_invalidation_lag_seconds_sum") == 0.04
    assert value(metrics, "staleless_queue_messages_total", outcome="applied") == 7
    assert value(metrics, "staleless_queue_messages_total", outcome="malformed") == 1
    assert value(metrics, "staleless_queue_messages_total", outcome="give_up") == 1
    assert value(metrics, "staleless_give_up_flushes_total", source="users") == 1
    assert value(metrics, "staleless_channel_bypass_seconds_total", cache="profiles") == 1, "whole seconds"


def test_the_subscriber_hooks() -> None:
    metrics = Metrics()
    metrics.receive("empty")
    metrics.receive("messages")
    metrics.receive("messages")
    metrics.receive_error()
    metrics.queue_recreated()
    metrics.subscription_healed()
    metrics.tick_gap("users")
    assert value(metrics, "staleless_queue_receives_total", outcome="messages") == 2
    assert value(metrics, "staleless_queue_receives_total", outcome="empty") == 1
    assert value(metrics, "staleless_queue_receive_errors_total") == 1
    assert value(metrics, "staleless_queue_recreated_total") == 1
    assert value(metrics, "staleless_subscription_healed_total") == 1
    assert value(metrics, "staleless_tick_gaps_total", source="users") == 1


def test_registries_are_separate_unless_shared() -> None:
    Metrics().hit("profiles")
    assert value(Metrics(), "staleless_cache_hits_total") is None, "each has its own registry by default"
    registry = CollectorRegistry()
    requests = Counter("app_requests_total", "The service's own", registry=registry)
    requests.inc()
    metrics = Metrics(registry=registry)
    metrics.hit("profiles")
    rendered = text(metrics)
    assert sample_sum(rendered, "app_requests_total") == 1.0, "other families render as prometheus_client does"
    assert sample_sum(rendered, "staleless_cache_hits_total", cache="profiles") == 1
    with pytest.raises(ValueError, match="Duplicated"):
        Metrics(registry=registry)
