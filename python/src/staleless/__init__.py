"""staleless: in-memory caches kept fresh by DynamoDB stream invalidations delivered over
SNS and SQS, trusted only while heartbeat ticks prove the whole path.

The Python port of the Rust consumer (``consumer/``): the wire messages (:mod:`staleless.protocol`),
the trust rules (:mod:`staleless.trust`), the trust per source (:mod:`staleless.health`), the
race-guarded, single-flight caches (:mod:`staleless.cache`), the registry of caches by source
(:mod:`staleless.caches`) and what each queue body does to them (:mod:`staleless.inbox`); then
the IO: the task's queue and subscription (:mod:`staleless.subscriber`, its configuration in
:mod:`staleless.config`, its rules in :mod:`staleless.queue`) and the Prometheus metrics under
the Rust tasks' names (:mod:`staleless.metrics`).
"""

from staleless.cache import (
    CacheMode,
    CacheObserver,
    CacheStats,
    KeyedCache,
    NoopCacheObserver,
    ReadPath,
    TrustedCache,
    VerificationStats,
    may_keep_fill,
)
from staleless.caches import Caches, Evict
from staleless.config import ConfigError, QueueTags, SubscriberConfig
from staleless.health import ChannelHealth, Clock, ManualClock, SourceSpec, SystemClock, TickAdmission, unix_now_ms
from staleless.inbox import Inbox, InboxObserver, NoopInboxObserver, Received
from staleless.metrics import Metrics
from staleless.protocol import (
    PROTOCOL_VERSION,
    DecodeError,
    FlushAll,
    GiveUp,
    Invalidate,
    Invalidation,
    KeyVersion,
    Tick,
    decode,
    decode_give_up,
    encode,
    is_valid_source,
)
from staleless.subscriber import ChannelClients, Subscriber
from staleless.trust import (
    DEFAULT_FUTURE_TOLERANCE_MS,
    SlotProof,
    TickRejection,
    TrustRules,
    WriterLedger,
    heartbeats_missed,
)

__version__ = "0.1.0"

# Sorted; modules added later append their names here and keep the list sorted.
__all__ = [
    "DEFAULT_FUTURE_TOLERANCE_MS",
    "PROTOCOL_VERSION",
    "CacheMode",
    "CacheObserver",
    "CacheStats",
    "Caches",
    "ChannelClients",
    "ChannelHealth",
    "Clock",
    "ConfigError",
    "DecodeError",
    "Evict",
    "FlushAll",
    "GiveUp",
    "Inbox",
    "InboxObserver",
    "Invalidate",
    "Invalidation",
    "KeyVersion",
    "KeyedCache",
    "ManualClock",
    "Metrics",
    "NoopCacheObserver",
    "NoopInboxObserver",
    "QueueTags",
    "ReadPath",
    "Received",
    "SlotProof",
    "SourceSpec",
    "Subscriber",
    "SubscriberConfig",
    "SystemClock",
    "Tick",
    "TickAdmission",
    "TickRejection",
    "TrustRules",
    "TrustedCache",
    "VerificationStats",
    "WriterLedger",
    "__version__",
    "decode",
    "decode_give_up",
    "encode",
    "heartbeats_missed",
    "is_valid_source",
    "may_keep_fill",
    "unix_now_ms",
]
