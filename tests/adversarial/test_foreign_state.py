"""Entries under the router's Redis prefix that the router never wrote (an
operator's test write, a tool, a version skew): skipped and logged, never a
teacher locked out. Real Redis, broker, router and WebSocket clients."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from tests.fix_router import Client, Env, notification, running_router, wait_ready

ACTION = "student_matching_confirmation_required"


async def test_entries_the_router_never_wrote_do_not_lock_a_teacher_out(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    r = redis.Redis.from_url(env.stack.redis_url, decode_responses=True)
    tag = f"{env.settings.redis_prefix}:{{t:olga}}"
    try:
        async with running_router(env.settings) as router:
            await wait_ready(router.port)
            first = await Client.open(router.port, env.token("olga"))
            real = env.produce(notification(ACTION, "olga", 1))
            plain = env.produce(notification("class_created", "olga", 1))
            env.flush()
            await first.collect(2)
            await first.close()
            # The tree before closed every connection of this teacher 1011, for
            # as long as the pending hash lived.
            junk = {
                "j1": "not json",
                "j2": json.dumps({"id": "x"}),
                "j3": json.dumps({"id": "x", "p": "1-0", "r": 4, "d": "", "n": "a string"}),
                "j4": json.dumps({"id": "x", "p": "no position", "r": 4, "d": "", "n": {}}),
                "j5": json.dumps({"id": "x", "p": "1-0", "r": "high", "d": "", "n": {}}),
                "j6": json.dumps({"id": "x", "p": "1-0", "r": 4, "d": "soon", "n": {}}),
                "j7": json.dumps([1, 2]),
            }
            r.hset(f"{tag}:pending", mapping=junk)
            r.xadd(f"{tag}:hist", {"id": "h1", "n": "not json {"})
            r.xadd(f"{tag}:hist", {"something": "else"})
            r.xadd(f"{tag}:hist", {"id": "h2", "n": '{"a":\n1}'})
            caplog.set_level(logging.WARNING, logger="router.store")
            again = await Client.open(router.port, env.token("olga"), resume="0-0")
            done = next(f for f in again.frames if f["type"] == "replay_done")
            ids = [f["id"] for f in again.notifications()]
            # the action item once, as pending; the other from history; no junk
            assert ids == [real, plain], again.frames
            assert done["pending"] == 1 and done["replayed"] == 1, done
            later = env.produce(notification("class_created", "olga", 2))
            env.flush()
            await again.collect(3)
            assert again.notifications()[-1]["id"] == later
            await again.close()
    finally:
        pending_left = r.hkeys(f"{tag}:pending")
        r.close()
    assert pending_left == [real]  # the unusable ones are gone, the real one kept
    lines = [m.getMessage() for m in caplog.records if m.name == "router.store"]
    assert any("skipped a pending item" in m and ":pending" in m for m in lines), lines
    assert any("skipped a history entry" in m and ":hist" in m for m in lines), lines
    assert len(lines) == 2  # once a minute for each kind, with a count


async def test_a_teacher_key_of_another_type_does_not_lock_the_teacher_out(any_env: Env) -> None:
    """A teacher's pending, history or interest key holding a plain string: the
    teacher still connects and gets what can be delivered, and the teachers
    whose notifications share a batch with theirs miss nothing live (the tree
    before closed every connection of such a teacher 1011, for as long as the
    key lived: for ever, without a TTL)."""
    env = any_env
    url = env.settings.redis_url
    r: Any = RedisCluster.from_url(url) if env.settings.redis_cluster else redis.Redis.from_url(url)
    p = env.settings.redis_prefix
    r.set(f"{p}:{{t:olga}}:pending", "a string")
    r.set(f"{p}:{{t:ivan}}:hist", "a string")
    r.set(f"{p}:{{t:nina}}:replicas", "a string")  # read with interest fan-out only
    r.close()
    async with running_router(env.settings) as router:
        await wait_ready(router.port)
        olga = await Client.open(router.port, env.token("olga"), resume="0-0")
        ivan = await Client.open(router.port, env.token("ivan"), resume="0-0")
        nina = await Client.open(router.port, env.token("nina"), resume="0-0")
        paul = await Client.open(router.port, env.token("paul"), resume="0-0")
        for c in (olga, ivan, nina, paul):
            done = c.frames[-1]
            assert done["type"] == "replay_done" and done["replayed"] == done["pending"] == 0
        # One key, so one batch: each broken teacher's items between paul's.
        sent: dict[str, list[str]] = {"olga": [], "nina": [], "paul": []}
        for i in range(3):
            for t in ("olga", "ivan", "nina", "paul"):
                eid = env.produce(notification("class_created", t, i), key="k")
                if t in sent:
                    sent[t].append(eid)
        env.flush()
        # With interest fan-out nina's interest key is read too: hers go the way
        # of ivan's (dead-lettered store_rejected), and nobody else's with them.
        refused = ["ivan", "nina"] if env.settings.fanout == "interest" else ["ivan"]
        for t, c in (("olga", olga), ("nina", nina), ("paul", paul)):
            if t not in refused:
                await c.collect(3)
                assert [f["id"] for f in c.notifications()] == sent[t], t
        for c in (ivan, nina):
            await c.quiet(0.5)
        for t, c in (("ivan", ivan), ("nina", nina)):
            assert (c.notifications() == []) == (t in refused), t
        await olga.ws.send(json.dumps({"type": "ack", "id": sent["olga"][0]}))
        answer = await olga.until(lambda f: f["type"] == "error")
        assert answer["code"] == "not_pending" and answer["id"] == sent["olga"][0]
        for c in (olga, ivan, nina, paul):
            await c.close()
