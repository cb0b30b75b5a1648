"""The per-stage latency budget of one measurement window (pure helpers).

The path of a notification has these stages, each measured where its clock is:

============  ========================================  =====================================
stage         from -> to                                measured by
============  ========================================  =====================================
capture       commit -> Kafka record timestamp          per event: the writer's commit time
                                                        and the record's timestamp (Connect
                                                        sets it to Debezium's capture time)
ship          record timestamp -> router read           the router's histogram
                                                        ``outbox_router_kafka_read_seconds``
route         router read -> frame written              ``outbox_router_kafka_to_frame_seconds``
deliver       frame written -> client received          the rest: total minus the three above,
                                                        at the same percentile (an estimate)
total         commit -> client received                 per frame, at the clients
============  ========================================  =====================================

The router's histograms are read as the difference of two scrapes (before and
after the window) and their percentiles interpolated inside a bucket.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

# The router's histograms of the stages it sees.
ROUTER_STAGES = {
    "ship": "outbox_router_kafka_read_seconds",
    "route": "outbox_router_kafka_to_frame_seconds",
}

# Stage -> the bucket (ms) holding a quantile of it; None: nothing observed.
StageBuckets = dict[str, tuple[float, float] | None]

_BUCKET = re.compile(r'^(?P<name>[a-z_]+)_bucket\{(?:[^}]*,)?le="(?P<le>[^"]+)"[^}]*\} (?P<v>\S+)$')


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """The cumulative buckets ``(upper bound, count)`` of ``name`` in a scrape,
    summed over label sets (one router process has one set)."""
    acc: dict[float, float] = {}
    for line in text.splitlines():
        m = _BUCKET.match(line)
        if m and m.group("name") == name:
            le = math.inf if m.group("le") == "+Inf" else float(m.group("le"))
            acc[le] = acc.get(le, 0.0) + float(m.group("v"))
    return sorted(acc.items())


def diff(after: Sequence[tuple[float, float]],
         before: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:  # fmt: skip
    """What was observed between two scrapes."""
    prev = dict(before)
    return [(le, n - prev.get(le, 0.0)) for le, n in after]


def _locate(buckets: Sequence[tuple[float, float]],
            q: float) -> tuple[float, float, float, float] | None:  # fmt: skip
    """The bucket the ``q`` quantile falls in, as (lower bound, count below it,
    upper bound, count up to it); None if nothing was observed."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            return lower_bound, lower_count, le, count
        lower_bound, lower_count = le, count
    return lower_bound, lower_count, math.inf, lower_count


def quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The ``q`` quantile (0-1) in seconds, linear inside its bucket; NaN if
    nothing was observed; the last finite bound if it falls in +Inf."""
    found = _locate(buckets, q)
    if found is None:
        return math.nan
    lower_bound, lower_count, le, count = found
    if math.isinf(le):
        return lower_bound
    if count == lower_count:
        return le
    target = q * buckets[-1][1]
    return lower_bound + (le - lower_bound) * (target - lower_count) / (count - lower_count)


def bucket(buckets: Sequence[tuple[float, float]], q: float) -> tuple[float, float] | None:
    """The bounds in seconds of the bucket the ``q`` quantile falls in, which
    is all a histogram knows of it; None if nothing was observed; the last
    finite bound and infinity if it falls in +Inf."""
    found = _locate(buckets, q)
    return None if found is None else (found[0], found[2])


def router_buckets(before: str, after: str, q: float,
                   names: Mapping[str, str] = ROUTER_STAGES) -> StageBuckets:  # fmt: skip
    """The bucket (ms) holding the ``q`` quantile of each router histogram in
    ``names`` (stage -> metric) between two scrapes of its ``/metrics``."""
    out: StageBuckets = {}
    for stage, name in names.items():
        b = bucket(diff(histogram(after, name), histogram(before, name)), q)
        out[stage] = None if b is None else (1000 * b[0], 1000 * b[1])
    return out
