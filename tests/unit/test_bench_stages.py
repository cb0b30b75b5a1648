"""The per-stage budget's reading of the router's histograms (outbox/stages.py)."""

from __future__ import annotations

import math

import pytest

from outbox import stages

SCRAPE = """# HELP outbox_router_kafka_read_seconds x
# TYPE outbox_router_kafka_read_seconds histogram
outbox_router_kafka_read_seconds_bucket{le="0.001"} 10.0
outbox_router_kafka_read_seconds_bucket{le="0.002"} 30.0
outbox_router_kafka_read_seconds_bucket{le="0.005"} 90.0
outbox_router_kafka_read_seconds_bucket{le="+Inf"} 100.0
outbox_router_kafka_read_seconds_count 100.0
outbox_router_other_seconds_bucket{le="0.001"} 7.0
outbox_router_redis_call_seconds_bucket{call="ingest",le="0.001"} 3.0
outbox_router_redis_call_seconds_bucket{call="ack",le="0.001"} 4.0
"""


def test_reads_one_histogram_and_sums_label_sets() -> None:
    h = stages.histogram(SCRAPE, "outbox_router_kafka_read_seconds")
    assert h == [(0.001, 10.0), (0.002, 30.0), (0.005, 90.0), (math.inf, 100.0)]
    assert stages.histogram(SCRAPE, "outbox_router_redis_call_seconds") == [(0.001, 7.0)]
    assert stages.histogram(SCRAPE, "absent") == []


def test_quantiles_interpolate_inside_the_bucket() -> None:
    h = stages.histogram(SCRAPE, "outbox_router_kafka_read_seconds")
    assert stages.quantile(h, 0.1) == pytest.approx(0.001)
    assert stages.quantile(h, 0.2) == pytest.approx(0.0015)  # halfway through (1, 2] ms
    assert stages.quantile(h, 0.6) == pytest.approx(0.0035)
    assert stages.quantile(h, 0.99) == pytest.approx(0.005)  # in +Inf: the last finite bound
    assert math.isnan(stages.quantile([], 0.5))
    assert math.isnan(stages.quantile([(0.001, 0.0), (math.inf, 0.0)], 0.5))


def test_a_window_is_the_difference_of_two_scrapes() -> None:
    before = [(0.001, 5.0), (0.002, 6.0), (math.inf, 10.0)]
    after = [(0.001, 5.0), (0.002, 9.0), (math.inf, 20.0)]
    assert stages.diff(after, before) == [(0.001, 0.0), (0.002, 3.0), (math.inf, 10.0)]


def test_the_demo_reports_each_minute_of_a_long_load() -> None:
    from outbox.demo import Tally

    t = Tally()
    t.timeline = [(100.0 + i * 0.6, 10.0) for i in range(100)]  # minute 1: 10 ms
    t.timeline += [(160.0 + i * 0.6, 50.0 + (i == 99) * 950) for i in range(100)]  # minute 2
    t.timeline.append((90.0, 5000.0))  # before the load: not counted
    lines = t.by_minute(100.0)
    assert lines == ["  minute 1: 100 frames, p50 10 ms, p99 10 ms",
                     "  minute 2: 100 frames, p50 50 ms, p99 1000 ms"]  # fmt: skip
    t.timeline.append((220.2, 30.0))  # the writer's last commit, just past the two minutes
    assert t.by_minute(100.0)[-1] == "  minute 3: 1 frames, p50 30 ms, p99 30 ms"
    assert t.by_minute(100.0, until=220.0)[-1].startswith("  minute 2: 101 frames, p50 50 ms")
    # The load ended when its last commit did: 0.2 s past two minutes is not a third.
    assert t.by_minute(100.0, until=220.2)[-1].startswith("  minute 2: 101 frames, p50 50 ms")
    assert t.by_minute(100.0, until=260.0)[-1] == "  minute 3: 1 frames, p50 30 ms, p99 30 ms"


def _scrape(read: dict[str, float], route: dict[str, float]) -> str:
    """A router /metrics text with the two stage histograms (cumulative counts)."""
    lines = [f'outbox_router_kafka_read_seconds_bucket{{le="{le}"}} {n}' for le, n in read.items()]
    lines += [
        f'outbox_router_kafka_to_frame_seconds_bucket{{le="{le}"}} {n}' for le, n in route.items()
    ]
    return "\n".join(lines) + "\n"


def test_router_buckets_give_each_stage_in_ms() -> None:
    before = _scrape({"0.01": 0, "0.1": 0, "+Inf": 0}, {"0.01": 0, "+Inf": 0})
    after = _scrape({"0.01": 0, "0.1": 100, "+Inf": 100}, {"0.01": 0, "+Inf": 0})
    w = stages.router_buckets(before, after, 0.5)
    assert w == {"ship": (10.0, 100.0), "route": None}  # nothing routed in the window


def test_a_quantiles_bucket_is_what_the_histogram_knows_of_it() -> None:
    h = stages.histogram(
        SCRAPE, "outbox_router_kafka_read_seconds"
    )  # 10, 20, 60, 10 in four buckets
    assert stages.bucket(h, 0.1) == (0.0, 0.001)
    assert stages.bucket(h, 0.2) == (0.001, 0.002)
    assert stages.bucket(h, 0.9) == (0.002, 0.005)
    assert stages.bucket(h, 0.99) == (0.005, math.inf)  # past the last finite bound
    assert stages.bucket([], 0.5) is None
    assert stages.bucket([(0.001, 0.0), (math.inf, 0.0)], 0.5) is None
    # Empty buckets below: the range starts at the bound below the first that holds it.
    assert stages.bucket([(0.001, 0.0), (0.002, 0.0), (0.005, 4.0), (math.inf, 4.0)], 0.99) == (
        0.002,
        0.005,
    )


def test_the_demo_gives_each_minute_the_router_stages_between_its_scrapes() -> None:
    from outbox.demo import last_minute, minute_stages

    def at(ship_fast: int, ship_slow: int) -> str:  # ship: so many <= 10 ms, so many in (1, 2.5] s
        n = ship_fast + ship_slow
        return _scrape({"0.01": ship_fast, "1": ship_fast, "2.5": n, "+Inf": n},
                       {"0.01": n, "+Inf": n})  # fmt: skip

    scrapes: list[str | None] = [at(0, 0), at(100, 0), at(200, 0)]  # at 0, 60 and 120 s
    final = at(200, 100)  # after the drain: the third minute shipped slowly
    assert last_minute(0.0, 170.0) == 2  # 2 min 50 s: three minutes
    assert last_minute(0.0, 130.0) == 1  # 2 min 10 s: the tail counts in minute 2
    assert last_minute(0.0, None) is None
    three = minute_stages(scrapes, final, 2)
    assert sorted(three) == [0, 1, 2]
    assert three[0]["ship"] == three[1]["ship"] == (0.0, 10.0)
    assert three[2]["ship"] == (1000.0, 2500.0)
    assert three[2]["route"] == (0.0, 10.0)
    assert three[2]["row -> frame"] is None  # not in these scrapes
    # The tail folded into minute 2: it runs to the final scrape, and takes in
    # what the third scrape would have started.
    two = minute_stages(scrapes, final, 1)
    assert sorted(two) == [0, 1] and two[1]["ship"] == (1000.0, 2500.0)
    # A failed scrape leaves the minutes on either side of it without stages.
    gap = minute_stages([at(0, 0), None, at(200, 0)], final, 2)
    assert sorted(gap) == [2]
    # No scrape after the start (the load ended early): the one minute runs to the final.
    assert sorted(minute_stages([at(0, 0)], final, None)) == [0]
    assert minute_stages([], final, 0) == {}


def test_the_demo_prints_the_router_stages_beside_its_minutes() -> None:
    from outbox.demo import Tally

    t = Tally()
    t.timeline = [(0.0 + i * 0.6, 10.0) for i in range(100)] + [
        (60.0 + i * 0.6, 20.0) for i in range(100)
    ]
    lines = t.by_minute(0.0, 120.0, {0: {"ship": (100.0, 150.0), "route": None},
                                     1: {"ship": (30_000.0, math.inf), "route": (5.0, 7.5)}})  # fmt: skip
    assert lines == ["  minute 1: 100 frames, p50 10 ms, p99 10 ms; router p99 in: ship 100-150 ms, route -",
                     "  minute 2: 100 frames, p50 20 ms, p99 20 ms; router p99 in: ship >30000 ms, route 5-7.5 ms"]  # fmt: skip


def test_the_demo_says_when_its_writer_fell_short_of_the_rate() -> None:
    from outbox.demo import load_report

    held = load_report(1000, 119_500, 120.0)
    assert held == "load: committed 119500 notifications in 120 s (996/s of the 1000/s asked)"
    short = load_report(1000, 120_000, 197.0)
    assert short.startswith("load: committed 120000 notifications in 197 s (609/s of the 1000/s")
    assert "could not commit faster" in short


async def test_the_demo_waits_for_a_late_pipeline_and_gives_up_only_when_it_stalls() -> None:
    import asyncio

    from outbox.demo import Tally, _drain

    async def arrive(t: Tally, ids: list[str], every_s: float) -> None:
        for e in ids:
            await asyncio.sleep(every_s)
            t.received[e] = 1

    async def scenario(n_sent: int, n_arriving: int) -> tuple[int, float]:
        t = Tally(sent={f"e{i}": 0.0 for i in range(n_sent)})
        feeder = asyncio.create_task(arrive(t, [f"e{i}" for i in range(n_arriving)], 0.3))
        t0 = asyncio.get_running_loop().time()
        await _drain(t, idle_s=1.0, limit_s=30.0)
        took = asyncio.get_running_loop().time() - t0
        feeder.cancel()
        return len(t.sent) - len(t.received), took

    # Late but steady: 3 s of arrivals, longer than the 1 s idle limit, all waited for.
    left, took = await scenario(10, 10)
    assert left == 0 and took >= 2.5
    # Stalled after 2: it returns about 1 s after the last arrival, 8 still missing.
    left, took = await scenario(10, 2)
    assert left == 8 and 1.0 <= took < 3.5


def test_the_capacity_model_scales_with_load_and_names_the_limit() -> None:
    from bench.capacity import Units, plan

    u = Units(own_s=100e-6, foreign_s=10e-6, interest_own_s=120e-6, redis_s=50e-6,
              redis_commands=8, redis_bytes_out=900, redis_memory=600, conn_bytes=26 * 1024,
              source="test")  # fmt: skip
    small = plan(u, 10_000, 1_000)
    assert (small.replicas, small.redis_primaries, small.connect_tasks) == (1, 1, 1)
    # 50k/s: 50k x 10 us of foreign traffic is 0.5 core of every replica, so
    # broadcast needs 25 replicas for the rest; interest needs 9 and wins.
    big = plan(u, 10_000, 50_000)
    assert big.fanout == "interest" and big.replicas == 9
    # No cluster measured: a cluster sized by one Redis' cost (2.5 cores -> 4).
    assert big.redis_cluster and big.redis_primaries == 4 and big.connect_tasks == 6
    assert big.first_limit.startswith("router CPU")
    many = plan(u, 1_000_000, 1_000)
    assert many.replicas == 50 and many.first_limit.startswith("connections per replica")
    assert not many.redis_cluster and many.redis_primaries == 1


def test_the_capacity_model_sizes_a_cluster_by_the_clusters_costs() -> None:
    from dataclasses import replace

    from bench.capacity import ClusterUnits, Units, plan

    one = Units(own_s=60e-6, foreign_s=1e-6, interest_own_s=65e-6, redis_s=20e-6,
                redis_commands=3, redis_bytes_out=400, redis_memory=500, conn_bytes=34 * 1024,
                source="test")  # fmt: skip
    c = ClusterUnits(own_s=56e-6, foreign_s=2e-6, sharded_own_s=50e-6, primary_s=30e-6,
                     source="test")  # fmt: skip
    u = replace(one, cluster=c)
    # 20k/s x 20 us is 0.4 core: one Redis, the cluster's costs play no part.
    low = plan(u, 10_000, 20_000)
    assert (low.redis_cluster, low.redis_primaries) == (False, 1)
    assert low == plan(one, 10_000, 20_000)
    # 50k/s x 20 us is 1 core, past one Redis' 0.7: a cluster, sized by its own
    # 30 us (1.5 cores -> 3 primaries at 0.7 each), and its router costs:
    # sharded 50k x 50 us / 0.7 -> 4 replicas; broadcast 56 us over 0.7 - 0.1 -> 5.
    big = plan(u, 10_000, 50_000)
    assert (big.redis_cluster, big.redis_primaries) == (True, 3)
    assert (big.fanout, big.replicas) == ("sharded", 4)
    # Never fewer than 3 primaries, even when 2 would carry the rate.
    cheap = plan(replace(u, cluster=replace(c, primary_s=21e-6)), 10_000, 50_000)
    assert cheap.redis_primaries == 3
    # 100k/s: 3 cores of primaries -> 5.
    assert plan(u, 10_000, 100_000).redis_primaries == 5


def test_the_demo_batches_a_long_fast_load_more() -> None:
    from outbox.demo import demo_linger_ms

    assert demo_linger_ms(100, 30) == 0  # short, slow loads: no batching
    assert demo_linger_ms(200, 120) == 40  # 24,000 notifications: batched all the same
    assert demo_linger_ms(100, 600) == 200
    assert demo_linger_ms(1000, 30) == 20  # short: the floor
    assert demo_linger_ms(1000, 300) == 100  # 5 minutes: a third of the seconds, in ms
    assert demo_linger_ms(5000, 3600) == 250  # the ceiling


def test_the_demo_lets_the_linger_decide_the_batches() -> None:
    from outbox.demo import DEMO_BATCH_BYTES, demo_connector_overrides

    assert demo_connector_overrides(0) == {}  # no linger: Connect's defaults
    assert demo_connector_overrides(100) == {
        "producer.override.linger.ms": "100",
        "producer.override.batch.size": str(DEMO_BATCH_BYTES),
    }
    # 100 ms of 1,000/s notifications (under 1 KB each) fit in one batch.
    assert DEMO_BATCH_BYTES >= 100 * 1024


def test_the_demo_gives_a_fast_load_one_partition() -> None:
    from outbox.demo import demo_partitions

    assert demo_partitions(100, 30) is None  # the stack's setting
    assert demo_partitions(500, 5) == 1  # fast
    assert demo_partitions(50, 120) == 1  # 6,000 notifications
