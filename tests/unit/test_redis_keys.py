"""Where a teacher's keys live: one Redis Cluster slot per teacher, whatever the
teacher id holds; the prefix setting refuses what would break the tag."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from router.app import node_url
from router.settings import RouterSettings
from router.store import Store
from stack.settings import StackSettings
from stack.state import StackState


def store() -> Store:
    s = Store.__new__(Store)
    s.prefix = "outbox"
    return s


@pytest.mark.parametrize(
    "teacher", ["ada", "a}b", "{x}", "}{", "{", "}", "t:1", "Åsa 🎉", "a" * 128]
)
def test_every_key_of_a_teacher_is_in_one_slot(teacher: str) -> None:
    st = store()
    keys = [st.hist_key(teacher), st.pending_key(teacher), f"{st.tag(teacher)}:seen:some-event"]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert st.hist_key(teacher) == f"outbox:{{t:{teacher}}}:hist"


def test_teachers_spread_over_slots() -> None:
    st = store()
    slots = {key_slot(st.hist_key(f"teacher-{i}").encode()) for i in range(1000)}
    assert len(slots) > 900  # not all in one slot (as a tag of the prefix alone would)


@pytest.mark.parametrize("prefix", ["", "a{b", "a}b", "a b"])
def test_a_prefix_that_would_break_the_tag_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        RouterSettings(redis_prefix=prefix)


def test_the_subscription_node_keeps_the_urls_credentials() -> None:
    assert (
        node_url("redis://:pw@10.0.0.1:7000/0", "127.0.0.1", 7001) == "redis://:pw@127.0.0.1:7001/0"
    )
    assert node_url("redis://h:1", "n", 2) == "redis://n:2"


def test_a_cluster_stack_tells_the_other_commands() -> None:
    base = dict(state_dir="/x", pg_dsn="p", redis_url="redis://h:1/0", kafka_bootstrap="k",
                connect_url="c", topic="t", components=[])  # fmt: skip
    assert "OUTBOX_REDIS_CLUSTER" not in StackState(**base).env()
    assert StackState(**base, redis_cluster=True).env()["OUTBOX_REDIS_CLUSTER"] == "true"


def test_the_stack_tells_routers_the_session_its_broker_joins_fast_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = dict(state_dir="/x", pg_dsn="p", redis_url="redis://h:1/0", kafka_bootstrap="k",
                connect_url="c", topic="t", components=[])  # fmt: skip
    for k, v in StackState(**base).env().items():
        monkeypatch.setenv(k, v)
    router = RouterSettings(jwt_secret="s" * 32)
    assert router.kafka_session_timeout_ms == StackSettings().connect_session_timeout_ms == 3000
