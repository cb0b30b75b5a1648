"""The domain-event registry and rules (pure)."""

from __future__ import annotations

import re

from contracts.events import (
    EVENT_TOPICS,
    EventTopic,
    event_violations,
    registry_problems,
    topics_sql,
)
from contracts.limits import TOPIC_PATTERN
from relay.resources import data_dir


def test_registry_is_well_formed_and_the_sql_is_fresh() -> None:
    assert registry_problems() == []
    assert (data_dir("sql") / "R__event_topics.sql").read_text() == topics_sql(), (
        "sql/R__event_topics.sql is stale: run `outbox db generate --write`"
    )


def test_registry_problems_are_named(monkeypatch: object) -> None:
    import contracts.events as ev

    bad = {
        "huleedu.notification.teacher.requested.v1": EventTopic(
            "huleedu.notification.teacher.requested.v1", "notification", 3, "x"),
        "Huleedu.a.b.c.v1": EventTopic("Huleedu.a.b.c.v1", "a", 3, "x"),
        "huleedu.a.b.c.v1": EventTopic("huleedu.a.b.c.v1", "z", 0, "x"),
    }  # fmt: skip
    saved = dict(ev.EVENT_TOPICS)
    ev.EVENT_TOPICS.clear()
    ev.EVENT_TOPICS.update(bad)
    try:
        problems = registry_problems()
    finally:
        ev.EVENT_TOPICS.clear()
        ev.EVENT_TOPICS.update(saved)
    assert any("notification topic" in p for p in problems)
    assert any(p.startswith("Huleedu.a.b.c.v1: not") for p in problems)
    assert any("service part is not z" in p for p in problems)
    assert any("0 partitions" in p for p in problems)


def test_topic_names_follow_the_platform_pattern() -> None:
    pat = re.compile(TOPIC_PATTERN)
    assert all(pat.fullmatch(t) for t in EVENT_TOPICS)
    for bad in ("huleedu.a.b.v1", "huleedu.a.b.c.v0", "huleedu.A.b.c.v1", "huleedu.a.b.c.v1\n",
                "x.a.b.c.v1", "huleedu.a-b.c.d.v1"):  # fmt: skip
        assert not pat.fullmatch(bad), bad


def test_event_rules() -> None:
    topic = next(iter(EVENT_TOPICS))
    assert event_violations(topic, "k", "T", {}, "c") == []
    got = event_violations("huleedu.x.y.z.v1", None, 5, "nope", "")
    assert [(v.field, v.sqlstate) for v in got] == [
        ("topic", "OB007"), ("event_key", "OB004"), ("event_type", "OB006"),
        ("correlation_id", "OB004"), ("payload", "OB005")]  # fmt: skip
    assert "known:" in got[0].message
