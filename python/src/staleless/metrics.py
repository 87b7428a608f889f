"""Prometheus metrics with the Rust consumer's names, labels and buckets.

:class:`Metrics` holds ``prometheus_client`` collectors named as ``consumer/src/metrics.rs``'s
``MetricNames::with_prefix`` names them (``<prefix>_cache_hits_total``, ...), and records what
the caches (:class:`~staleless.cache.CacheObserver`), the inbox
(:class:`~staleless.inbox.InboxObserver`) and the subscriber
(:class:`~staleless.subscriber.SubscriberObserver`) report. The freshness gauges are read from
each :class:`~staleless.health.ChannelHealth` given to :meth:`Metrics.watch` at every scrape, as
the Rust ``ChannelHealth::publish_gauges`` sets them on scrape, so the lag is current even while
no tick arrives.

:meth:`Metrics.render` prints the text format as the Rust exporter
(``metrics-exporter-prometheus``, no unit or counter suffixes added) prints it: the same family
names in ``# TYPE`` lines (counters keep their ``_total``), no ``_created`` series, whole numbers
without ``.0`` and ``le`` bounds as Rust prints an ``f64`` (``le="1"``, ``le="0.0025"``). A
dashboard or alert written against a Rust task reads a Python task unchanged. Collectors of
other families in the same registry are rendered by ``prometheus_client`` as usual.

Every hook runs on the event loop's thread, like the caches and the inbox; a scrape reads the
watched channels there too (an ``async`` route). Collecting from another thread (``prometheus_client``'s
own HTTP server) reads the channel without a lock: the values are then only approximately
simultaneous.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from staleless.trust import TickRejection

if TYPE_CHECKING:
    from staleless.health import ChannelHealth, SourceSpec

__all__ = ["CONTENT_TYPE", "DEFAULT_PREFIX", "SECONDS_BUCKETS", "MetricNames", "Metrics", "sample_sum"]

#: The default prefix: the staleless API's names.
DEFAULT_PREFIX = "staleless"

#: Buckets of the ``_seconds`` histograms (the Rust ``SECONDS_BUCKETS``): invalidation lag is
#: tens of milliseconds when healthy and seconds when something is wrong; fills are milliseconds.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: The content type of :meth:`Metrics.render`, as the Rust example serves it.
CONTENT_TYPE = "text/plain; version=0.0.4"


@dataclass(frozen=True)
class MetricNames:
    """The names of the consumer's metrics, each ``<prefix>_<suffix>`` (the Rust ``MetricNames``)."""

    cache_hits: str
    cache_misses: str
    invalidations_applied: str
    invalidation_lag: str
    cache_fills: str
    cache_fills_discarded: str
    cache_invalidations: str
    cache_fill_seconds: str
    cache_bypassed_reads: str
    verified_hits: str
    channel_bypass_seconds: str
    channel_healthy: str
    staleness_bound: str
    cache_trusted: str
    tick_lag: str
    since_tick: str
    tick_written_timestamp: str
    ticks: str
    ticks_rejected: str
    give_up_flushes: str
    tick_gaps: str
    subscription_healed: str
    queue_receives: str
    queue_receive_errors: str
    queue_messages: str
    queue_recreated: str

    @classmethod
    def with_prefix(cls, prefix: str = DEFAULT_PREFIX) -> MetricNames:
        """Every name under ``prefix`` (``<prefix>_cache_hits_total``, ...)."""

        def name(suffix: str) -> str:
            return f"{prefix}_{suffix}"

        return cls(
            cache_hits=name("cache_hits_total"),
            cache_misses=name("cache_misses_total"),
            invalidations_applied=name("invalidations_applied_total"),
            invalidation_lag=name("invalidation_lag_seconds"),
            cache_fills=name("cache_fills_total"),
            cache_fills_discarded=name("cache_fills_discarded_total"),
            cache_invalidations=name("cache_invalidations_total"),
            cache_fill_seconds=name("cache_fill_seconds"),
            cache_bypassed_reads=name("cache_bypassed_reads_total"),
            verified_hits=name("verified_hits_total"),
            channel_bypass_seconds=name("channel_bypass_seconds_total"),
            channel_healthy=name("channel_healthy"),
            staleness_bound=name("staleness_bound_seconds"),
            cache_trusted=name("cache_trusted"),
            tick_lag=name("tick_lag_seconds"),
            since_tick=name("seconds_since_tick"),
            tick_written_timestamp=name("tick_written_timestamp_seconds"),
            ticks=name("ticks_total"),
            ticks_rejected=name("ticks_rejected_total"),
            give_up_flushes=name("give_up_flushes_total"),
            tick_gaps=name("tick_gaps_total"),
            subscription_healed=name("subscription_healed_total"),
            queue_receives=name("queue_receives_total"),
            queue_receive_errors=name("queue_receive_errors_total"),
            queue_messages=name("queue_messages_total"),
            queue_recreated=name("queue_recreated_total"),
        )

    def all(self) -> tuple[str, ...]:
        """Every name, in declaration order."""
        return tuple(str(value) for value in vars(self).values())


def _family(name: str) -> str:
    """The family name ``prometheus_client`` keeps for a metric called ``name`` (a counter's
    without ``_total``)."""
    return name[: -len("_total")] if name.endswith("_total") else name


class _FreshnessGauges(Collector):
    """The gauges of ``ChannelHealth::publish_gauges``, read from the watched channels at each
    collection."""

    def __init__(self, names: MetricNames) -> None:
        self._names = names
        self._channels: list[ChannelHealth] = []

    def watch(self, health: ChannelHealth) -> None:
        if all(known is not health for known in self._channels):
            self._channels.append(health)

    def _empty(self) -> tuple[GaugeMetricFamily, ...]:
        names = self._names
        return (
            GaugeMetricFamily(
                names.cache_trusted, "1 while a cache is served, 0 while it is bypassed", labels=["cache"]
            ),
            GaugeMetricFamily(names.tick_lag, "Now minus the write time of the newest tick", labels=["source"]),
            GaugeMetricFamily(names.since_tick, "Seconds since a tick last arrived", labels=["source"]),
            GaugeMetricFamily(
                names.tick_written_timestamp, "Write time of the newest tick, Unix seconds", labels=["source"]
            ),
            GaugeMetricFamily(names.staleness_bound, "The staleness bound B in seconds"),
            GaugeMetricFamily(names.channel_healthy, "1 while every cache is trusted, else 0"),
        )

    def describe(self) -> Iterable[Metric]:
        # Without this, registering the collector would collect (read every channel) once.
        return self._empty()

    def collect(self) -> Iterable[Metric]:
        families = self._empty()
        trusted, lag, since, written, bound, healthy = families
        for health in self._channels:
            for spec in health.sources:
                report = health.report_of(spec.source)
                if report is None:
                    continue
                trusted.add_metric([str(report["cache"])], 1.0 if report["trusted"] else 0.0)
                if report["lagMs"] is not None:
                    lag.add_metric([spec.source], int(report["lagMs"]) / 1000)
                if report["msSinceTick"] is not None:
                    since.add_metric([spec.source], int(report["msSinceTick"]) / 1000)
                if report["lastTickWrittenAtMs"] is not None:
                    written.add_metric([spec.source], int(report["lastTickWrittenAtMs"]) / 1000)
        if self._channels:
            # One process, one channel, as the Rust gauges (unlabelled) assume; with several the
            # last watched one's bound is shown and health is the conjunction.
            bound.add_metric([], self._channels[-1].bound_ms / 1000)
            healthy.add_metric([], 1.0 if all(health.all_trusted() for health in self._channels) else 0.0)
        return families


class Metrics:
    """The consumer's metrics in a ``prometheus_client`` registry, named as the Rust consumer
    names them; a :class:`~staleless.cache.CacheObserver`, an
    :class:`~staleless.inbox.InboxObserver` and a
    :class:`~staleless.subscriber.SubscriberObserver`.

    ``registry`` defaults to a registry of its own; pass ``prometheus_client.REGISTRY`` to
    share the process's (then one :class:`Metrics` per prefix and process).
    """

    def __init__(self, prefix: str = DEFAULT_PREFIX, registry: CollectorRegistry | None = None) -> None:
        self.names = MetricNames.with_prefix(prefix)
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        names, registry = self.names, self.registry

        def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, documentation, labelnames=labels, registry=registry)

        def histogram(name: str, documentation: str, labels: Sequence[str] = ()) -> Histogram:
            return Histogram(name, documentation, labelnames=labels, buckets=SECONDS_BUCKETS, registry=registry)

        self._cache_hits = counter(names.cache_hits, "Reads answered from a cache", ["cache"])
        self._cache_misses = counter(names.cache_misses, "Reads not answered from a cache", ["cache"])
        # The per-read counters, by cache: `labels()` resolves a child under a lock on every call,
        # which doubled the cost of a cache hit.
        self._hits_of: dict[str, Counter] = {}
        self._misses_of: dict[str, Counter] = {}
        self._invalidations_applied = counter(
            names.invalidations_applied, "Keys evicted by invalidation messages", ["source"]
        )
        self._invalidation_lag = histogram(names.invalidation_lag, "From the change to its eviction here")
        self._cache_fills = counter(names.cache_fills, "Loads from the table into a cache", ["cache"])
        self._cache_fills_discarded = counter(
            names.cache_fills_discarded, "Loads not stored because an invalidation raced them", ["cache"]
        )
        self._cache_invalidations = counter(
            names.cache_invalidations, "Keys evicted from a cache by any invalidation", ["cache"]
        )
        self._cache_fill_seconds = histogram(names.cache_fill_seconds, "Duration of a cache fill", ["cache"])
        self._cache_bypassed_reads = counter(
            names.cache_bypassed_reads, "Reads that skipped the cache because its source was not trusted", ["cache"]
        )
        self._verified_hits = counter(
            names.verified_hits, "Cache hits re-read from the table: fresh or stale", ["cache", "result"]
        )
        self._channel_bypass_seconds = counter(
            names.channel_bypass_seconds,
            "Seconds a cache was bypassed because its source's ticks were past the bound",
            ["cache"],
        )
        self._ticks = counter(names.ticks, "Ticks received", ["source"])
        self._ticks_rejected = counter(
            names.ticks_rejected,
            "Ticks refused: unknown writer, written in the future, or of an unknown source",
            ["source", "reason"],
        )
        self._give_up_flushes = counter(
            names.give_up_flushes, "Flushes because records of a table were given up", ["source"]
        )
        self._tick_gaps = counter(names.tick_gaps, "Ticks showing that heartbeats went missing on the way", ["source"])
        self._subscription_healed = counter(
            names.subscription_healed, "Times the task found its subscription gone or altered and re-created it"
        )
        self._queue_receives = counter(names.queue_receives, "Successful ReceiveMessage calls", ["outcome"])
        self._queue_receive_errors = counter(names.queue_receive_errors, "Failed ReceiveMessage calls")
        self._queue_messages = counter(names.queue_messages, "Queue messages handled", ["outcome"])
        self._queue_recreated = counter(names.queue_recreated, "Times the task's queue was found deleted and recreated")
        self._gauges = _FreshnessGauges(names)
        registry.register(self._gauges)
        self._families = frozenset(_family(name) for name in names.all())

    # Set-up.

    def describe(self, sources: Iterable[SourceSpec], verify: bool = False) -> Metrics:
        """Registers at zero the series a scrape should show before the first event, as the Rust
        consumer registers them (``MetricNames::describe`` and each cache's counters): per cache
        its hits, misses, fills, discarded fills, invalidations, fill durations and bypassed
        reads (and verified hits with ``verify``); per source its applied invalidations, refused
        ticks and give-up flushes; and ``source="all"``. Returns these metrics."""
        for spec in sources:
            cache, source = spec.cache, spec.source
            for family in (
                self._cache_hits,
                self._cache_misses,
                self._cache_fills,
                self._cache_fills_discarded,
                self._cache_invalidations,
                self._cache_fill_seconds,
                self._cache_bypassed_reads,
            ):
                family.labels(cache=cache)
            if verify:
                for result in ("fresh", "stale"):
                    self._verified_hits.labels(cache=cache, result=result)
            self._invalidations_applied.labels(source=source)
            for reason in (TickRejection.UNKNOWN_WRITER, TickRejection.FROM_THE_FUTURE):
                self._ticks_rejected.labels(source=source, reason=reason.value)
            self._give_up_flushes.labels(source=source)
        self._invalidations_applied.labels(source="all")
        return self

    def watch(self, health: ChannelHealth, verify: bool = False) -> Metrics:
        """Publishes the freshness gauges of ``health`` at every scrape (trust per cache, seconds
        since a tick and tick lag per source, the bound, the channel's health) and
        :meth:`describe` its sources. Returns these metrics."""
        self._gauges.watch(health)
        return self.describe(health.sources, verify=verify)

    # Rendering.

    def render(self) -> bytes:
        """The registry in the Prometheus text format, as the Rust exporter prints it."""
        return render(self.registry, self._families)

    # CacheObserver.

    def hit(self, cache: str) -> None:
        counter = self._hits_of.get(cache)
        if counter is None:
            counter = self._hits_of[cache] = self._cache_hits.labels(cache=cache)
        counter.inc()

    def miss(self, cache: str) -> None:
        counter = self._misses_of.get(cache)
        if counter is None:
            counter = self._misses_of[cache] = self._cache_misses.labels(cache=cache)
        counter.inc()

    def fill(self, cache: str, seconds: float) -> None:
        self._cache_fill_seconds.labels(cache=cache).observe(seconds)
        self._cache_fills.labels(cache=cache).inc()

    def fill_discarded(self, cache: str) -> None:
        self._cache_fills_discarded.labels(cache=cache).inc()

    def bypassed(self, cache: str) -> None:
        self._cache_bypassed_reads.labels(cache=cache).inc()

    def invalidated(self, cache: str, n: int) -> None:
        if n > 0:
            self._cache_invalidations.labels(cache=cache).inc(n)

    def verified(self, cache: str, result: str) -> None:
        self._verified_hits.labels(cache=cache, result=result).inc()

    # InboxObserver.

    def message(self, outcome: str) -> None:
        self._queue_messages.labels(outcome=outcome).inc()

    def tick(self, source: str) -> None:
        self._ticks.labels(source=source).inc()

    def tick_rejected(self, source: str, reason: str) -> None:
        self._ticks_rejected.labels(source=source, reason=reason).inc()

    def tick_gap(self, source: str) -> None:
        self._tick_gaps.labels(source=source).inc()

    def invalidations_applied(self, source: str, n: int) -> None:
        # Rust increments by the count even when it is 0 (which registers the series).
        self._invalidations_applied.labels(source=source).inc(max(n, 0))

    def invalidation_lag(self, seconds: float) -> None:
        self._invalidation_lag.observe(max(seconds, 0.0))

    def give_up_flush(self, source_label: str) -> None:
        self._give_up_flushes.labels(source=source_label).inc()

    def bypass_seconds(self, cache: str, seconds: float) -> None:
        # Whole seconds, as the Rust counter adds them (``Duration::as_secs``).
        self._channel_bypass_seconds.labels(cache=cache).inc(max(math.floor(seconds), 0))

    # SubscriberObserver.

    def receive(self, outcome: str) -> None:
        self._queue_receives.labels(outcome=outcome).inc()

    def receive_error(self) -> None:
        self._queue_receive_errors.inc()

    def queue_recreated(self) -> None:
        self._queue_recreated.inc()

    def subscription_healed(self) -> None:
        self._subscription_healed.inc()


# The text format, as metrics-exporter-prometheus writes it.


def _number(value: float) -> str:
    """A sample value or bucket bound as Rust's ``Display`` prints it (``1``, ``0.0025``), with
    Prometheus's spellings of the infinities and NaN."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    pairs = []
    for key, value in labels.items():
        if key == "le" and value not in ("+Inf", "-Inf"):
            value = _number(float(value))
        pairs.append(f'{key}="{_escape(value)}"')
    return "{" + ",".join(pairs) + "}"


def _lines(family: Metric) -> Iterator[str]:
    name = family.name + "_total" if family.type == "counter" else family.name
    kind = {"unknown": "untyped"}.get(family.type, family.type)
    yield f"# HELP {name} {_help(family.documentation)}\n"
    yield f"# TYPE {name} {kind}\n"
    created, count = family.name + "_created", family.name + "_count"
    held: list[str] = []
    for sample in family.samples:
        if sample.name == created:
            continue
        line = f"{sample.name}{_labels(dict(sample.labels))} {_number(float(sample.value))}\n"
        if sample.name == count:
            # A histogram's count after its sum, as the Rust exporter prints them.
            held.append(line)
            continue
        yield line
        if held and sample.name == family.name + "_sum":
            yield held.pop()
    yield from held
    yield "\n"


class _One(Collector):
    """One metric family as a collector, for ``generate_latest``."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


def render(registry: CollectorRegistry, families: frozenset[str]) -> bytes:
    """The text format of ``registry``: the ``families`` named as the Rust exporter prints them,
    any other family as ``prometheus_client`` does."""
    out: list[str] = []
    for family in registry.collect():
        if family.name in families and family.type in ("counter", "gauge", "histogram"):
            if family.samples:
                out.extend(_lines(family))
        else:
            out.append(generate_latest(_One(family)).decode())
    return "".join(out).encode()


def sample_sum(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` in a Prometheus text exposition (what :meth:`Metrics.render`
    and the Rust tasks' ``/metrics`` write) whose labels include ``labels``; ``None`` when no sample
    of that name has them. Tests and benchmarks read metrics back with it."""
    total: float | None = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample, _, label_text = series.partition("{")
        if sample != name:
            continue
        found = dict(pair.split("=", 1) for pair in label_text.rstrip("}").split(",") if pair)
        if all(found.get(key) == f'"{wanted}"' for key, wanted in labels.items()):
            total = (total or 0.0) + float(value)
    return total
