"""Poison never stops the router: every record it cannot route goes to the
dead-letter topic with the reason, its offset is committed, and the next good
notification reaches its teacher (real broker, Redis and WebSocket clients)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import redis

from contracts.display import printable
from contracts.limits import MAX_RECORD_BYTES
from router.consumer import Ingestor
from router.dlq import read_dead_letters
from tests.adversarial.docs import hostile
from tests.fix_kafka import consume, make_consumer
from tests.fix_router import Client, Env, notification, running_router, wait_ready
from tests.raw_kafka import produce_raw

ACCEPTED = {
    "valid", "valid critical", "deep payload 32 (limit)", "deep payload 32 via array",
    "15-digit integer", "trailing zeros 1.50", "1e2", "0e20", "-0.0", "1e-15",
    "128-char teacher_id", "128 astral chars teacher_id", "NFC teacher_id", "NFD teacher_id",
    "emoji and U+2028 in payload", "action_required missing", "payload missing",
    "payload at limit", "payload 32000 x é", "payload many small", "deadline year 2199",
    "deadline Feb 29 leap", "deadline +14:59", "duplicate keys, last valid",
    # a write-time rule: the router still delivers a notification whose deadline passed
    "deadline past",
}  # fmt: skip


def _poison() -> dict[str, bytes]:
    """Every record the router must refuse, as record values."""
    out = {
        name: text.encode(errors="surrogatepass")
        for name, text in hostile().items()
        if name not in ACCEPTED and len(text) < 1_000_000  # the 1.1 MB one: Kafka refuses it
    }
    out["invalid UTF-8"] = b'{"teacher_id":"\xff\xfe"}'
    out["empty value"] = b""
    out["over the record limit"] = b'{"payload":"' + b"x" * MAX_RECORD_BYTES + b'"}'
    good = notification("class_created", "mallory").to_json()
    out["JSON string of a bad document"] = json.dumps(good.replace('"mallory"', "7")).encode()
    out["JSON string of a JSON string"] = json.dumps(json.dumps(good)).encode()
    out["binary garbage"] = bytes(range(256))
    # the record's own text, quoted in the error: escaped, not a terminal's input
    doc = json.loads(good)
    out["terminal escape in priority"] = json.dumps(
        {**doc, "priority": "\x1b]0;owned\x07\nFAKE LOG LINE \u202e", "category": "c" * 5000}
    ).encode()
    return out


async def test_every_poison_record_is_dead_lettered_and_delivery_goes_on(env: Env) -> None:
    poison = _poison()
    dlq = make_consumer(env.stack.kafka_bootstrap, env.settings.dlq_topic)
    good: list[str] = []
    try:
        async with running_router(env.settings) as router:
            await wait_ready(router.port)
            c = await Client.open(router.port, env.token("mallory"))
            # One key, so one partition: each poison record is followed by a good one.
            for i, value in enumerate(poison.values()):
                env.produce(value, key="mallory")
                good.append(env.produce(notification("class_created", "mallory", i)))
            env.produce(b"{}", key="mallory", headers=[("id", b"bad id with spaces")])
            env.produce(b"{}", key="mallory", headers=[])
            good.append(env.produce(notification("class_created", "mallory", 999)))
            env.flush()
            await c.collect(len(good), timeout=60)
            assert [f["id"] for f in c.notifications()] == good
            dead = await asyncio.to_thread(consume, dlq, len(poison) + 2, 30)
            await c.quiet(0.5)
            assert len(c.notifications()) == len(good)
            await c.close()
    finally:
        dlq.close()
    missing = [n for n, v in poison.items() if v not in {m.value() for m in dead}]
    assert not missing
    assert len(dead) == len(poison) + 2
    reasons = [dict(m.headers())["dlq.reason"].decode() for m in dead]
    by_name = dict(zip([*poison, "bad id header", "no id header"], reasons, strict=True))
    assert by_name["over the record limit"] == "too_large"
    assert by_name["unknown type"] == "unknown_type"
    assert by_name["not JSON"] == "invalid_json"
    assert by_name["no id header"] == "missing_id"
    assert by_name["deep payload 1500"] == "schema"
    assert by_name["129-char teacher_id"] == "schema"
    assert set(reasons) <= {"too_large", "invalid_json", "unknown_type", "schema", "missing_id"}
    for m in dead:
        h = dict(m.headers())
        assert h["dlq.error"] and h["dlq.source.topic"] == env.topic.encode()
        text = h["dlq.error"].decode()
        assert printable(text) == text, text  # no control, invisible or bidi character
    errors = dict(zip([*poison, "bad id header", "no id header"],
                      [dict(m.headers())["dlq.error"].decode() for m in dead], strict=True))  # fmt: skip
    escaped = errors["terminal escape in priority"]
    assert "\\x1b]0;OWNED\\x07\\x0aFAKE LOG LINE \\u202e" in escaped, escaped
    values = {m.value() for m in dead}
    assert poison["5000-digit number"] in values  # kept whole, for `outbox dlq replay`


async def test_a_record_whose_headers_cannot_be_read_is_dead_lettered_and_delivery_goes_on(
    env: Env,
) -> None:
    """A header name that is not UTF-8 (any producer but librdkafka's bindings
    can write one): the Kafka client cannot give the record's headers, so not
    its event id either. Each such record is dead-lettered with its key and
    value; the notifications behind it on the same partitions arrive. The
    tree before this test crashed the router (and, with the name last, the
    interpreter)."""
    dlq = make_consumer(env.stack.kafka_bootstrap, env.settings.dlq_topic)
    hostile = notification("class_created", "mallory", 1).to_json().encode()
    bad = b"\xff\xfeid"
    try:
        async with running_router(env.settings) as router:
            await wait_ready(router.port)
            c = await Client.open(router.port, env.token("mallory"))
            for partition in range(3):  # every partition: the good ones are behind them
                produce_raw(env.stack.kafka_bootstrap, env.topic, partition, [
                    (b"mallory", hostile, [(bad, b"x"), (b"id", f"first-{partition}".encode())]),
                    (b"mallory", hostile, [(b"id", f"last-{partition}".encode()), (bad, None)]),
                ])  # fmt: skip
            good = [env.produce(notification("class_created", "mallory", i)) for i in range(2, 12)]
            env.flush()
            await c.collect(len(good), timeout=60)
            assert [f["id"] for f in c.notifications()] == good
            dead = await asyncio.to_thread(consume, dlq, 6, 30)
            await c.close()
    finally:
        dlq.close()
    assert len(dead) == 6
    for m in dead:
        h = dict(m.headers() or [])  # the dead letter's own headers are readable
        assert h["dlq.reason"] == b"unreadable_headers"
        assert b"not UTF-8" in h["dlq.error"]
        assert h["dlq.headers_dropped"] == b"true"
        assert m.value() == hostile and m.key() == b"mallory"
    # Something else writing such a record to the dead-letter topic: listed, not a crash.
    produce_raw(env.stack.kafka_bootstrap, env.settings.dlq_topic, 0,
                [(b"k", b"{}", [(bad, b"x")])])  # fmt: skip
    listed = await asyncio.to_thread(read_dead_letters, env.stack.kafka_bootstrap,
                                     env.settings.dlq_topic, limit=100)  # fmt: skip
    assert len(listed) == 7
    assert listed[-1].reason == "?" and "not UTF-8" in listed[-1].error
    assert listed[-1].headers == []


async def test_an_item_redis_refuses_is_dead_lettered_and_the_rest_recorded(env: Env) -> None:
    """A failure nobody planned for: the store's script errors on one teacher's
    item (its history key holds a string). The batch is narrowed down to that
    item; the others are recorded and delivered."""
    r = redis.Redis.from_url(env.stack.redis_url)
    r.set(f"{env.settings.redis_prefix}:{{t:broken}}:hist", "not a stream")
    r.close()
    dlq = make_consumer(env.stack.kafka_bootstrap, env.settings.dlq_topic)
    try:
        async with running_router(env.settings.model_copy(update={"batch_max": 50})) as router:
            await wait_ready(router.port)
            c = await Client.open(router.port, env.token("olga"))
            ids = []
            for i in range(10):
                ids.append(env.produce(notification("class_created", "olga", i), key="k"))
                if i == 4:
                    env.produce(notification("class_created", "broken", i), key="k")
            env.flush()
            await c.collect(10)
            assert [f["id"] for f in c.notifications()] == ids
            dead = await asyncio.to_thread(consume, dlq, 1, 30)
            await c.close()
    finally:
        dlq.close()
    assert [dict(m.headers())["dlq.reason"] for m in dead] == [b"store_rejected"]
    assert b"WRONGTYPE" in dict(dead[0].headers())["dlq.error"]


def test_an_unforeseen_decode_error_is_poison_not_a_crash(env: Env) -> None:
    import router.decode as decode_mod

    original = decode_mod.read_document

    def explode(raw: bytes | str, **kw: object) -> object:
        raise RuntimeError("a defect nobody foresaw")

    decode_mod.read_document = explode  # type: ignore[assignment]
    try:
        from router.metrics import RouterMetrics
        from router.store import Store

        ing = Ingestor(env.settings, store=Store.__new__(Store), metrics=RouterMetrics())

        class M:
            def error(self) -> None:
                return None

            def value(self) -> bytes:
                return notification("class_created", "x").to_json().encode()

            def headers(self) -> list[tuple[str, bytes]]:
                return [("id", uuid.uuid4().hex.encode()),
                        ("created_at", datetime.now(UTC).isoformat().encode())]  # fmt: skip

            def timestamp(self) -> tuple[int, int]:
                return (1, int(time.time() * 1000))  # TIMESTAMP_CREATE_TIME

            def topic(self) -> str:
                return "t"

            def partition(self) -> int:
                return 0

            def offset(self) -> int:
                return 41

        batch = ing.validate([M()])  # type: ignore[list-item]
    finally:
        decode_mod.read_document = original
    assert batch.good == []
    assert [e.kind for _, e in batch.dead] == ["internal"]
    assert "a defect nobody foresaw" in batch.dead[0][1].detail
    assert batch.offsets == {("t", 0): 42}
