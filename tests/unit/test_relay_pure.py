"""Pure parts of the relay: config rendering, diff, slot assessment, janitor
watermarks, and the Connect client's error translation (httpx MockTransport)."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import httpx
import pytest

from relay.connect_api import ConnectClient
from relay.connector_config import diff, render
from relay.errors import (
    ConnectApiError,
    ConnectorNotFoundError,
    ConnectUnreachableError,
    SettingsError,
)
from relay.janitor import Watermark, parse_lsn, usable
from relay.secrets import masked
from relay.settings import RelaySettings
from relay.slot_health import Level, SlotStats, assess


def settings(**kw: object) -> RelaySettings:
    return RelaySettings(pg_dsn="postgresql://u@db.example:6543/app", **kw)  # type: ignore[arg-type]


def test_render_fills_every_placeholder_and_drops_comments() -> None:
    cfg = render(settings(cdc_password='p"w'))
    assert cfg["database.hostname"] == "db.example"
    assert cfg["database.port"] == "6543"
    assert cfg["database.dbname"] == "app"
    assert cfg["database.password"] == 'p"w'
    assert cfg["plugin.name"] == "pgoutput"
    assert cfg["snapshot.mode"] == "no_data"
    assert cfg["table.include.list"] == "outbox.teacher_notifications,outbox.domain_events"
    # domain events: to the topic in the row, the envelope as the value
    assert cfg["transforms.events.route.by.field"] == "topic"
    assert cfg["transforms.events.route.topic.replacement"] == "${routedByValue}"
    assert cfg["transforms.events.table.field.event.payload"] == "envelope"
    assert cfg["predicates.isDomainEvents.pattern"] == "outbox\\.outbox\\.domain_events"
    assert (
        cfg["transforms.outbox.route.topic.replacement"]
        == "huleedu.notification.teacher.requested.v1"
    )
    assert cfg["transforms.outbox.predicate"] == "isOutboxTable"
    assert cfg["predicates.isOutboxTable.pattern"] == "outbox\\.outbox\\.teacher_notifications"
    assert cfg["producer.override.acks"] == "all"
    assert cfg["tombstones.on.delete"] == "false"
    assert not any(k.startswith("//") or ("${" in v and "routedByValue" not in v)
                   for k, v in cfg.items())  # fmt: skip
    assert masked(cfg)["database.password"] == "********"


def test_render_overrides_and_errors() -> None:
    cfg = render(settings(connector_overrides={"poll.interval.ms": None, "x": "1"}))
    assert "poll.interval.ms" not in cfg and cfg["x"] == "1"
    with pytest.raises(SettingsError, match="OUTBOX_PG_DSN"):
        render(RelaySettings(pg_dsn=""))
    with pytest.raises(SettingsError, match="nope"):
        render(settings(), template='{"a": "${nope}"}')


def test_diff_ignores_name() -> None:
    assert diff({"a": "1", "name": "n"}, {"a": "1"}) == []
    assert diff(None, {"a": "1"}) == [("a", None, "1")]
    assert diff({"a": "1", "b": "2"}, {"a": "3"}) == [("a", "1", "3"), ("b", "2", None)]


def test_assess() -> None:
    ok = SlotStats("s", True, active=True, retained_bytes=10, heartbeat_age_s=1)
    assert assess(ok, warn_bytes=100, critical_bytes=1000, heartbeat_warn_s=60).level is Level.OK
    warn = SlotStats("s", True, active=False, retained_bytes=200)
    a = assess(warn, warn_bytes=100, critical_bytes=1000, heartbeat_warn_s=60)
    assert a.level is Level.WARN and len(a.problems) == 2
    crit = SlotStats("s", True, active=True, retained_bytes=2000)
    assert (
        assess(crit, warn_bytes=100, critical_bytes=1000, heartbeat_warn_s=60).level
        is Level.CRITICAL
    )
    old = SlotStats("s", True, active=True, heartbeat_age_s=500)
    assert (
        "heartbeat"
        in assess(old, warn_bytes=100, critical_bytes=1000, heartbeat_warn_s=60).problems[0]
    )
    assert (
        assess(SlotStats("s", False), warn_bytes=1, critical_bytes=2, heartbeat_warn_s=1).level
        is Level.WARN
    )


def test_janitor_watermarks() -> None:
    assert parse_lsn("0/16B3748") == 0x16B3748
    assert parse_lsn("1/0") == 1 << 32
    marks = deque([Watermark(10, 100), Watermark(20, 200), Watermark(30, 300)])
    assert usable(marks, 50) is None
    assert usable(marks, 250) == Watermark(20, 200)
    assert list(marks) == [Watermark(30, 300)]


async def test_connect_errors_are_translated() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.startswith("/connectors/missing/"):
            return httpx.Response(
                404, json={"error_code": 404, "message": "Connector missing not found"}
            )
        if req.url.path == "/connectors/bad/config":
            return httpx.Response(
                400, json={"error_code": 400, "message": "Connector configuration is invalid"}
            )
        if req.url.path == "/connectors/x/restart":
            assert (
                req.url.params["onlyFailed"] == "true" and req.url.params["includeTasks"] == "true"
            )
            return httpx.Response(202, json={"name": "x"})
        return httpx.Response(500, text="boom")

    async with ConnectClient("http://connect", transport=httpx.MockTransport(handler)) as c:
        assert await c.get_config("missing") is None
        with pytest.raises(ConnectorNotFoundError, match="outbox connector apply"):
            await c.status("missing")
        with pytest.raises(ConnectApiError) as ei:
            await c.put_config("bad", {})
        assert ei.value.status_code == 400 and "invalid" in str(ei.value)
        await c.restart("x")
        with pytest.raises(ConnectApiError, match="500"):
            await c.version()

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with ConnectClient("http://connect", transport=httpx.MockTransport(down)) as c:
        with pytest.raises(ConnectUnreachableError, match="OUTBOX_CONNECT_URL"):
            await c.version()
    assert json.dumps({})


def test_render_from_a_mounted_template(tmp_path: Path) -> None:
    t = tmp_path / "connector.json"
    t.write_text('{"//": "c", "slot.name": "${slot_name}", "x": "y"}')
    assert render(settings(connector_template=t)) == {"slot.name": "outbox_notifications", "x": "y"}
    with pytest.raises(SettingsError, match="cannot read"):
        render(settings(connector_template=tmp_path / "missing.json"))


def test_liveness_is_not_readiness() -> None:
    from relay.daemon import Relay
    from relay.supervisor import Health, Report

    relay = Relay(settings())
    for health, ready in ((Health.HEALTHY, 200), (Health.PAUSED, 503),
                          (Health.UNHEALTHY, 503), (Health.DEGRADED, 503)):  # fmt: skip
        relay.report = Report(health, "x")
        relay.last_tick = 100.0
        assert relay.http_answer("/healthz", 101.0)[0] == 200, health  # alive all the same
        assert relay.http_answer("/readyz", 101.0)[0] == ready, health
        assert relay.http_answer("/status", 101.0)[0] == 200
    assert relay.http_answer("/healthz", 100.0 + 10_000)[0] == 503  # the loop is stuck
    assert relay.http_answer("/nope", 0)[0] == 404
    assert relay.http_answer("/metrics", 0)[1].startswith("text/plain")


def test_the_cli_names_each_failure_and_its_exit_code() -> None:
    import errno

    import psycopg
    from confluent_kafka import KafkaError, KafkaException

    from outbox.errors import classify

    cases: list[tuple[BaseException, int, str]] = [
        (psycopg.OperationalError('connection failed: FATAL:  password authentication failed '
                                  'for user "x"'), 3, "refused the login"),
        (psycopg.OperationalError("connection to server failed: Connection refused"), 3,
         "Postgres is unreachable"),
        (psycopg.ProgrammingError('invalid dsn: missing "=" after "x"'), 2, "not a Postgres DSN"),
        (KafkaException(KafkaError(KafkaError._TRANSPORT, "Broker transport failure")), 3,
         "Kafka is unreachable"),
        (OSError(errno.EADDRINUSE, "address already in use"), 1, "already in use"),
        (ExceptionGroup("tg", [OSError(errno.EADDRINUSE, "in use")]), 1, "already in use"),
        (ZeroDivisionError("x"), 1, "internal error (ZeroDivisionError"),
    ]  # fmt: skip
    for exc, code, text in cases:
        line, got = classify(exc)
        assert (got, text in line) == (code, True), (exc, line, got)


async def test_the_connect_client_goes_on_to_the_next_worker() -> None:
    import httpx

    from relay.connect_api import ConnectClient
    from relay.errors import ConnectUnreachableError

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host + ":" + str(request.url.port))
        if request.url.port == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json=["c1"])

    c = ConnectClient("http://w1:1, http://w2:2/", transport=httpx.MockTransport(handler))
    assert await c.connectors() == ["c1"]
    assert await c.connectors() == ["c1"]  # the one that answered is asked first now
    assert seen == ["w1:1", "w2:2", "w2:2"] and c.url == "http://w2:2"
    await c.aclose()

    dead = ConnectClient("http://w1:1,http://w3:1", transport=httpx.MockTransport(handler))
    try:
        await dead.connectors()
        raise AssertionError("expected unreachable")
    except ConnectUnreachableError as exc:
        assert "w1:1" in str(exc) and "w3:1" in str(exc)
    await dead.aclose()


def test_a_task_on_another_worker_is_a_move() -> None:
    from relay.connect_api import ConnectorStatus, TaskStatus
    from relay.supervisor import task_moves

    def st(*tasks: TaskStatus) -> ConnectorStatus:
        return ConnectorStatus("c", "RUNNING", "w1", list(tasks))

    seen, moves = task_moves({}, st(TaskStatus(0, "RUNNING", "w1")))
    assert seen == {0: "w1"} and moves == []
    seen, moves = task_moves(seen, st(TaskStatus(0, "UNASSIGNED", None)))  # between workers
    assert seen == {0: "w1"} and moves == []
    seen, moves = task_moves(seen, st(TaskStatus(0, "RUNNING", "w2")))
    assert seen == {0: "w2"} and moves == [(0, "w1", "w2")]
    assert task_moves(seen, None) == (seen, [])


@pytest.mark.parametrize(
    ("bootstrap", "want"),
    [
        ("127.0.0.1:9092", [("127.0.0.1", 9092)]),
        ("a:1, b:2,", [("a", 1), ("b", 2)]),
        ("PLAINTEXT://kafka:29092", [("kafka", 29092)]),
        ("kafka", [("kafka", 9092)]),
        ("[::1]:9093", [("::1", 9093)]),
        ("[::1]", [("::1", 9092)]),
        ("", []),
    ],
)
def test_doctor_reads_every_form_of_a_bootstrap_list(
    bootstrap: str, want: list[tuple[str, int]]
) -> None:
    from relay.doctor import bootstrap_addresses

    assert bootstrap_addresses(bootstrap) == want


def test_doctor_says_at_once_that_no_broker_address_answers() -> None:
    import socket

    from relay.doctor import _unreachable

    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        up, down = listening.getsockname()[1], closed.getsockname()[1]
        why = _unreachable(f"127.0.0.1:{down}")
        assert why is not None and f"127.0.0.1:{down}" in why and "refused" in why.lower()
        assert _unreachable(f"127.0.0.1:{down},127.0.0.1:{up}") is None  # one is enough
    assert _unreachable("") == "no address in OUTBOX_KAFKA_BOOTSTRAP"
