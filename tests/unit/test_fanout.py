"""The registry and the replay/live merge (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.fanout import FanoutMessage, Registry, parse_fanout
from router.session import SyncState


def test_registry_isolates_teachers() -> None:
    r: Registry[str] = Registry()
    r.add("a", "c1")
    r.add("a", "c2")
    r.add("b", "c3")
    assert set(r.targets("a")) == {"c1", "c2"}
    assert list(r.targets("b")) == ["c3"]
    assert list(r.targets("nobody")) == []
    r.remove("a", "c1")
    r.remove("a", "c2")
    assert r.count("a") == 0
    assert len(r) == 1


def test_parse_fanout() -> None:
    m = parse_fanout(b'[["n","t1","e1","1-0",""]]\n{"x":1}')
    assert m == [FanoutMessage("n", "t1", "e1", "1-0", None, '{"x":1}')]
    assert parse_fanout('[["a","t1","e1"]]') == [FanoutMessage("a", "t1", "e1")]
    # with the time the ingesting replica read it from Kafka
    m = parse_fanout('[["n","t1","e1","1-0","c",1764547200.5]]\n{"x":1}')
    assert m == [FanoutMessage("n", "t1", "e1", "1-0", "c", '{"x":1}', 1764547200.5)]
    batch = parse_fanout(
        '[["n","t1","e1","1-0","c"],["a","t1","e0"],["n","t2","e2","2-0",""]]\n'
        '{"x":1}\n{"y":"a\\nb"}'
    )
    assert [(x.kind, x.teacher_id, x.notification) for x in batch] == [
        ("n", "t1", '{"x":1}'),
        ("a", "t1", None),
        ("n", "t2", '{"y":"a\\nb"}'),
    ]
    for bad in (
        b'{"k":"zzz"}', b'[["zzz"]]', b'[["n","t1"]]', b"nope", b"[]",
        b'[["n","t1","e1","1-0",""]]',  # a header without its notification line
        b'[["a","t1","e1"]]\n{"x":1}',  # a notification line without its header
        # a position that is not one (frames carry it as it is)
        b'[["n","t1","e1","1-0\\",\\"x","c"]]\n{"x":1}', b'[["n","t1","e1",10,"c"]]\n{"x":1}',
        b'[["n","t1","e1","1-0\\n","c"]]\n{"x":1}',
    ):  # fmt: skip
        with pytest.raises(ValueError):
            parse_fanout(bad)


def test_live_during_sync_is_buffered_and_deduplicated() -> None:
    s = SyncState()
    s.begin()
    # live messages published while history is being read
    assert s.live("5-0", "e5", "L5") == []
    assert s.live("6-0", "e6", "L6") == []
    # history holds up to 5-0 (the read saw e5 already)
    assert [p for p, e in [("4-0", "e4"), ("5-0", "e5")] if s.replayed(p, e)] == ["4-0", "5-0"]
    assert s.finish() == ["L6"]
    assert s.live("6-0", "e6", "L6 again") == []
    assert s.live("7-0", "e7", "L7") == ["L7"]
    assert s.position == "7-0"


def test_pending_sent_up_front_is_not_repeated() -> None:
    s = SyncState()
    s.begin()
    s.mark_sent("e2")
    assert s.live("3-0", "e3", "L3") == []
    assert not s.replayed("2-0", "e2")
    assert s.replayed("2-5", "e25")
    assert s.finish() == ["L3"]


@given(
    history=st.integers(min_value=0, max_value=30),
    cut=st.integers(min_value=0, max_value=30),
    overlap=st.integers(min_value=0, max_value=30),
    extra=st.integers(min_value=0, max_value=10),
)
def test_merge_has_no_gap_and_no_duplicate(
    history: int, cut: int, overlap: int, extra: int
) -> None:
    """Positions 1..history are in the store when the read happens; the live
    buffer holds the tail from `overlap` on plus `extra` newer ones."""
    cut = min(cut, history)
    s = SyncState()
    s.begin(f"{cut}-0" if cut else None)  # resume from `cut`
    live = list(range(min(overlap, history) + 1, history + extra + 1))
    for p in live:
        s.live(f"{p}-0", f"e{p}", p)
    got = [p for p in range(cut + 1, history + 1) if s.replayed(f"{p}-0", f"e{p}")]
    got += s.finish()
    for p in range(history + extra + 1, history + extra + 4):
        got += s.live(f"{p}-0", f"e{p}", p)
    assert got == list(range(cut + 1, history + extra + 4))


def test_catch_up_after_a_lost_subscription_sends_only_what_was_missed() -> None:
    s = SyncState()
    s.begin(None)
    s.mark_sent("p1")  # a pending item sent up front
    assert s.replayed("1-0", "p1") is False
    assert s.replayed("2-0", "a") is True
    assert s.finish() == []
    assert s.live("3-0", "b", "B") == ["B"]
    # Subscription lost: "c" and "d" were published meanwhile, "e" arrives live
    # while the catch-up reads the history.
    s.hold()
    assert s.live("6-0", "e", "E") == []
    sent = [eid for pos, eid in [("1-0", "p1"), ("2-0", "a"), ("3-0", "b"), ("4-0", "c"),
                                 ("5-0", "d"), ("6-0", "e")] if s.replayed(pos, eid)]  # fmt: skip
    assert sent == ["c", "d", "e"]
    assert s.finish() == []  # "e" went out with the history, not twice
    assert s.position == "6-0"
