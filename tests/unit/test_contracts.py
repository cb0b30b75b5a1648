"""The notification model, its catalog and the builder (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts import (
    CATALOG,
    DEAD_LETTER_TOPIC,
    NOTIFICATION_TOPIC,
    DeadlineRule,
    InvalidNotificationError,
    NotificationPriority,
    TeacherNotificationRequestedV1,
    UnknownNotificationTypeError,
    WebSocketEventCategory,
    build_notification,
)
from contracts.catalog import requires_batch_id, requires_class_id
from contracts.notification import parse_notification

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

REQUIRED_TYPES = {
    "student_matching_confirmation_required": ("CRITICAL", "student_workflow", True),
    "student_matching_deadline_approaching": ("CRITICAL", "student_workflow", True),
    "batch_validation_failed": ("IMMEDIATE", "file_operations", True),
    "batch_file_corrupted": ("IMMEDIATE", "file_operations", True),
    "batch_registration_failed": ("IMMEDIATE", "batch_progress", True),
    "batch_processing_completed": ("HIGH", "batch_progress", False),
    "batch_processing_failed": ("HIGH", "batch_progress", True),
    "cj_assessment_results_ready": ("HIGH", "processing_results", False),
    "batch_students_associated": ("STANDARD", "student_workflow", False),
    "class_roster_updated": ("STANDARD", "class_management", False),
    "class_created": ("STANDARD", "class_management", False),
    "batch_files_uploaded": ("STANDARD", "file_operations", False),
    "batch_file_removed": ("STANDARD", "file_operations", False),
    "batch_processing_started": ("LOW", "batch_progress", False),
    "batch_spellcheck_completed": ("LOW", "batch_progress", False),
    "batch_cj_assessment_completed": ("LOW", "batch_progress", False),
}


def ids_for(t: str) -> dict[str, str]:
    out = {}
    if requires_batch_id(t):
        out["batch_id"] = "b1"
    if requires_class_id(t):
        out["class_id"] = "c1"
    return out


def deadline_for(t: str) -> datetime | None:
    return NOW + timedelta(hours=2) if CATALOG[t].deadline is DeadlineRule.REQUIRED else None


def test_topics() -> None:
    assert NOTIFICATION_TOPIC == "huleedu.notification.teacher.requested.v1"
    assert DEAD_LETTER_TOPIC.startswith(NOTIFICATION_TOPIC)
    assert DEAD_LETTER_TOPIC != NOTIFICATION_TOPIC


def test_priorities_are_ordered() -> None:
    p = NotificationPriority
    assert p.CRITICAL > p.IMMEDIATE > p.HIGH > p.STANDARD > p.LOW
    assert sorted([p.LOW, p.CRITICAL, p.STANDARD]) == [p.LOW, p.STANDARD, p.CRITICAL]
    assert max(p) is p.CRITICAL
    assert p.LOW <= p.LOW
    assert {p.HIGH: 1}[p("high")] == 1


def test_categories() -> None:
    assert {c.value for c in WebSocketEventCategory} == {
        "batch_progress",
        "processing_results",
        "file_operations",
        "class_management",
        "student_workflow",
        "system_alerts",
    }


@pytest.mark.parametrize("t", sorted(REQUIRED_TYPES))
def test_catalog_holds_required_types(t: str) -> None:
    prio, cat, action = REQUIRED_TYPES[t]
    e = CATALOG[t]
    assert e.priority.name == prio
    assert e.category.value == cat
    assert e.action_required is action
    assert e.description
    if prio == "CRITICAL":
        assert e.deadline is DeadlineRule.REQUIRED


def test_catalog_size_and_default_deadline() -> None:
    assert len(CATALOG) >= 15
    assert {e.priority for e in CATALOG.values()} == set(NotificationPriority)
    assert CATALOG["student_matching_confirmation_required"].default_deadline == timedelta(hours=24)


@pytest.mark.parametrize("t", sorted(CATALOG))
def test_builder_fills_from_catalog(t: str) -> None:
    n = build_notification(
        t,
        "teacher-1",
        {"k": 1},
        "corr-1",
        deadline_timestamp=deadline_for(t),
        now=NOW,
        **ids_for(t),
    )
    e = CATALOG[t]
    assert (n.priority, n.category, n.action_required) == (
        e.priority,
        e.category,
        e.action_required,
    )
    assert TeacherNotificationRequestedV1.model_validate_json(n.to_json()) == n


def test_default_deadline_is_24h() -> None:
    n = build_notification(
        "student_matching_confirmation_required", "t", {}, "c", batch_id="b", now=NOW
    )
    assert n.deadline_timestamp == NOW + timedelta(hours=24)


def test_unknown_type_lists_known_ones() -> None:
    with pytest.raises(UnknownNotificationTypeError) as ei:
        build_notification("nope", "t", {}, "c")
    assert "class_created" in str(ei.value)
    assert ei.value.sqlstate == "OB001"


def _violation_fields(exc: InvalidNotificationError) -> set[str]:
    return {v.field for v in exc.violations}


@pytest.mark.parametrize(
    ("kwargs", "field", "sqlstate"),
    [
        ({"teacher_id": " "}, "teacher_id", "OB004"),
        ({"correlation_id": ""}, "correlation_id", "OB004"),
        ({"batch_id": None}, "batch_id", "OB004"),
        ({"deadline_timestamp": datetime(2026, 12, 2, 12, 0)}, "deadline_timestamp", "OB003"),
        ({"deadline_timestamp": NOW - timedelta(minutes=1)}, "deadline_timestamp", "OB003"),
        ({"payload": {"x": "y" * 70_000}}, "payload", "OB005"),
    ],
)
def test_builder_rejects(kwargs: dict[str, object], field: str, sqlstate: str) -> None:
    args: dict[str, object] = {
        "notification_type": "batch_validation_failed",
        "teacher_id": "t",
        "payload": {},
        "correlation_id": "c",
        "batch_id": "b1",
        "now": NOW,
    }
    args.update(kwargs)
    with pytest.raises(InvalidNotificationError) as ei:
        build_notification(**args)  # type: ignore[arg-type]
    assert field in _violation_fields(ei.value)
    assert ei.value.sqlstate == sqlstate
    assert field in str(ei.value)


def test_deadline_missing_where_required() -> None:
    with pytest.raises(InvalidNotificationError, match="requires a deadline"):
        build_notification("student_matching_deadline_approaching", "t", {}, "c", batch_id="b")


def test_deadline_on_type_without_one() -> None:
    with pytest.raises(InvalidNotificationError, match="takes no deadline"):
        build_notification(
            "class_created", "t", {}, "c", class_id="k", deadline_timestamp=NOW + timedelta(1)
        )


def test_class_id_required() -> None:
    with pytest.raises(InvalidNotificationError) as ei:
        build_notification("class_roster_updated", "t", {}, "c")
    assert _violation_fields(ei.value) == {"class_id"}


def test_model_rejects_catalog_contradictions() -> None:
    base = build_notification("class_created", "t", {}, "c", class_id="k").model_dump()
    for field, value in (
        ("priority", "critical"),
        ("category", "system_alerts"),
        ("action_required", True),
    ):
        with pytest.raises(ValidationError, match=field):
            TeacherNotificationRequestedV1.model_validate(base | {field: value})


def test_model_forbids_extra_fields() -> None:
    base = build_notification("class_created", "t", {}, "c", class_id="k").model_dump()
    with pytest.raises(ValidationError):
        TeacherNotificationRequestedV1.model_validate(base | {"other_teacher": "x"})


def test_payload_must_be_object() -> None:
    with pytest.raises(InvalidNotificationError, match="JSON object"):
        build_notification("class_created", "t", [1, 2], "c", class_id="k")  # type: ignore[arg-type]


# Text Postgres can hold (no NUL, no lone surrogate) and numbers within the limits.
json_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=20)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**15 - 1), 10**15 - 1) | json_text,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(json_text, c, max_size=4),
    max_leaves=12,
)
printable_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Cf", "Zl", "Zp")), min_size=1, max_size=30
).filter(lambda s: s.strip())


@given(
    t=st.sampled_from(sorted(CATALOG)),
    teacher=printable_ids,
    payload=st.dictionaries(json_text, json_values, max_size=5),
)
def test_round_trip_property(t: str, teacher: str, payload: dict[str, object]) -> None:
    n = build_notification(
        t, teacher, payload, "corr", deadline_timestamp=deadline_for(t), now=NOW, **ids_for(t)
    )
    back = TeacherNotificationRequestedV1.model_validate(json.loads(n.to_json()))
    assert back == n
    assert back.teacher_id == teacher


def test_parse_notification_reads_number_digits_exactly() -> None:
    base = build_notification("class_created", "t", {"n": 1.5}, "c", class_id="k").to_json()
    assert parse_notification(base).payload == {"n": 1.5}
    # A float reader would round this to 1.0 and accept it; the database refuses it.
    with pytest.raises(InvalidNotificationError, match="15 digits"):
        parse_notification(base.replace("1.5", "1.0000000000000001"))
    with pytest.raises(InvalidNotificationError, match="15 digits"):
        parse_notification(base.replace("1.5", "9" * 5000))


def test_the_lock_file_pins_what_is_installed() -> None:
    """requirements.lock is the runtime closure at the installed versions (make
    lock rewrites it; bootstrap installs with it as constraints)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("lock", root / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    assert (root / "requirements.lock").read_text() == lock.render(lock.runtime_closure()), (
        "requirements.lock is stale: run `make lock`")  # fmt: skip


def test_outside_text_is_shown_escaped_in_logs_and_terminals() -> None:
    import logging

    from contracts.display import printable
    from contracts.limits import ID_FORBIDDEN_RANGES
    from outbox.common import _HumanFormatter

    assert printable("plain text, é, 日本, 🎉") == "plain text, é, 日本, 🎉"
    assert printable("a\nb\x1b]0;t\x07\u202e\ud800") == "a\\x0ab\\x1b]0;t\\x07\\u202e\\ud800"
    for lo, hi in ID_FORBIDDEN_RANGES:  # every character an id may not hold
        for c in {lo, hi}:
            shown = printable(chr(c))
            assert shown.startswith("\\") and shown.isascii() and shown.isprintable(), hex(c)
    f = _HumanFormatter("%(levelname)s %(message)s")
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "got %s", ("a\nFAKE",), None)
    assert f.format(rec) == "WARNING got a\\x0aFAKE"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", (), sys.exc_info())
    assert f.format(rec).startswith("ERROR m\nTraceback")  # the traceback keeps its lines
