"""The connection protocol of docs/protocol.md, rule by rule, on the sans-I/O
core (``router.session.Session``) with an in-memory store model."""

from __future__ import annotations

import json
import time

import pytest

from contracts.protocol import server_frame_adapter
from router.fanout import Hub
from router.session import (
    INTERNAL,
    NOT_AUTH,
    SLOW_CLIENT,
    STORE_DOWN,
    Ack,
    CountReplay,
    Limits,
    LoadCatchUp,
    LoadSync,
    Phase,
)
from tests.unit.protocol_model import (
    SECRET,
    T0,
    VERIFIER,
    Client,
    ModelStore,
    connect,
    deliver,
    token,
)


@pytest.fixture
def hub() -> Hub[Client]:
    return Hub()


@pytest.fixture
def store() -> ModelStore:
    return ModelStore()


def closed(c: Client) -> tuple[int, str]:
    assert c.session.closing is not None, c.frames
    assert c.session.phase is Phase.CLOSED
    return c.session.closing.code, c.session.closing.reason


def kinds(c: Client) -> list[str]:
    def kind(f: dict[str, object]) -> str:
        if f["type"] != "notification":
            return str(f["type"])
        return "notification" + ("/pending" if f["pending"] else "/replayed" if f["replayed"]
                                 else "")  # fmt: skip

    return [kind(f) for f in c.frames]


def positions(c: Client, *, pending: bool | None = False) -> list[str]:
    return [f["position"] for f in c.of("notification")
            if pending is None or f["pending"] is pending]  # fmt: skip


# -- authentication ------------------------------------------------------------


def test_auth_by_header_opens_with_welcome_then_syncs(hub: Hub[Client], store: ModelStore) -> None:
    c = connect(hub, "t1")
    assert c.session.phase is Phase.OPEN and c.registered
    assert kinds(c) == ["welcome"]
    assert c.frames[0]["teacher_id"] == "t1" and c.frames[0]["protocol"] == 1
    assert c.asked == [LoadSync("t1", None, 500)]
    c.answer_all(store)
    assert kinds(c) == ["welcome", "replay_done"]
    assert c.frames[-1] == {"type": "replay_done", "recovered": True, "replayed": 0,
                            "pending": 0, "position": "0-0"}  # fmt: skip
    for f in c.frames:
        server_frame_adapter.validate_python(f)


def test_auth_by_first_frame_with_resume(hub: Hub[Client], store: ModelStore) -> None:
    c = connect(hub, None, first={"type": "auth", "token": token("t1"), "resume": "0-0"})
    assert c.session.phase is Phase.OPEN
    assert c.asked == [LoadSync("t1", "0-0", 500)]


def test_resume_in_the_query_is_used_when_the_auth_frame_has_none(hub: Hub[Client]) -> None:
    c = connect(hub, None, resume="5-1", first={"type": "auth", "token": token("t1")})
    assert c.asked == [LoadSync("t1", "5-1", 500)]


@pytest.mark.parametrize(
    ("header", "reason"),
    [("Basic abc", "authorization must be a Bearer token"),
     ("Bearer ", "authorization must be a Bearer token"),
     ("Bearer nope", "malformed token")],
)  # fmt: skip
def test_bad_authorization_header_is_4401(hub: Hub[Client], header: str, reason: str) -> None:
    c = connect(hub, None, header=header)
    assert closed(c) == (4401, reason)
    assert c.frames == [] and not c.registered


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ("{nope", 4400, NOT_AUTH),
        (b"\x00binary", 4400, NOT_AUTH),
        ({"type": "ack", "id": "x"}, 4400, NOT_AUTH),
        ({"type": "auth", "token": ""}, 4400, NOT_AUTH),
        ({"type": "auth", "token": "x", "extra": 1}, 4400, NOT_AUTH),
        ({"type": "auth", "token": "x", "resume": "nope"}, 4400, "bad resume position"),
        ({"type": "auth", "token": "x", "resume": f"{1 << 64}-0"}, 4400, "bad resume position"),
        ({"type": "auth", "token": "abc.def"}, 4401, "malformed token"),
        ({"type": "auth", "token": token("t1", ttl=-120)}, 4401, "token expired"),
        ({"type": "auth", "token": token("t1", key="another-secret-0123456789abcdef0123")},
         4401, "bad signature"),
    ],
)  # fmt: skip
def test_bad_first_frames(hub: Hub[Client], first: object, code: int, reason: str) -> None:
    c = connect(hub, None, first=first)  # type: ignore[arg-type]
    assert closed(c) == (code, reason)
    assert not c.registered


def test_wrong_audience_is_4401() -> None:
    import dataclasses

    v = dataclasses.replace(VERIFIER, audience="huleedu")
    c = connect(Hub(), None, verifier=v, first={"type": "auth", "token": token("t1")})
    assert closed(c) == (4401, "token has no aud claim")


@pytest.mark.parametrize("resume", ["nope", "1-2-3", f"1-{1 << 64}", "-1"])
def test_bad_resume_in_the_query_is_4400_before_any_token(hub: Hub[Client], resume: str) -> None:
    c = connect(hub, "t1", resume=resume)
    assert closed(c) == (4400, "bad resume position")


def test_no_auth_frame_in_time_is_4408(hub: Hub[Client]) -> None:
    c = connect(hub, None)
    assert c.session.deadline() == T0 + 5.0
    c.session.tick(T0 + 4.9)
    assert c.session.closing is None
    c.session.tick(T0 + 5.0)
    assert closed(c) == (4408, "no auth frame in time")


def test_session_ends_when_the_token_expires(hub: Hub[Client]) -> None:
    now = time.time()
    c = connect(hub, None, first={"type": "auth", "token": token("t1", ttl=60, now=now)}, now=now)
    exp = int(now + 60)
    assert c.session.deadline() == exp + 10.0  # the leeway
    c.session.tick(exp + 9.0)
    assert c.session.closing is None
    c.session.tick(exp + 10.0)
    c.flush()
    assert closed(c) == (4401, "token expired") and c.session.closing.kind == "expired"  # type: ignore[union-attr]
    assert not c.registered and c.session.deadline() is None


def test_too_many_connections_for_one_teacher_is_4429(hub: Hub[Client]) -> None:
    limits = Limits(max_connections_per_teacher=2)
    a, b = connect(hub, "t1", limits=limits), connect(hub, "t1", limits=limits)
    c = connect(hub, "t1", limits=limits)
    assert closed(c) == (4429, "too many connections for this teacher")
    assert (a.registered, b.registered, c.registered) == (True, True, False)
    assert connect(hub, "t2", limits=limits).registered


# -- frames after authentication ---------------------------------------------


def test_bad_frames_get_errors_then_1008(hub: Hub[Client], store: ModelStore) -> None:
    c = connect(hub, "t1")
    c.answer_all(store)
    c.send("{nope")
    c.send(b"binary")
    c.send({"type": "bogus"})
    c.send({"type": "ack"})
    c.send({"type": "auth", "token": token("t1")})
    errors = c.of("error")
    assert [e["code"] for e in errors] == ["bad_frame"] * 4 + ["already_authenticated"]
    assert "binary frames are not supported" in errors[1]["message"]
    assert c.session.closing is None
    c.send({"type": "bogus"})
    assert closed(c) == (1008, "too many bad frames (bad_frame)")


def test_rate_limit(hub: Hub[Client], store: ModelStore) -> None:
    c = connect(hub, "t1", limits=Limits(rate_limit_per_s=1, rate_limit_burst=3, max_errors=100))
    c.answer_all(store)
    for _ in range(5):
        c.send({"type": "ack", "id": "x"}, now=T0)
    assert [e["code"] for e in c.of("error")] == ["rate_limited", "rate_limited"]
    assert len(c.asked) == 3
    c.send({"type": "ack", "id": "x"}, now=T0 + 1.0)  # one token back a second later
    assert len(c.asked) == 4


def test_the_rate_limit_is_the_teachers_across_connections_and_reconnects(
    hub: Hub[Client], store: ModelStore
) -> None:
    limits = Limits(rate_limit_per_s=1, rate_limit_burst=3, max_errors=100)
    frames = limits.frame_budgets()  # one per server, as the server holds it
    a = connect(hub, "t1", limits=limits, frame_budgets=frames)
    b = connect(hub, "t1", limits=limits, frame_budgets=frames)
    other = connect(hub, "t2", limits=limits, frame_budgets=frames)
    for c in (a, b, other):
        c.answer_all(store)
    a.send({"type": "ack", "id": "x"}, now=T0)
    a.send({"type": "ack", "id": "x"}, now=T0)
    b.send({"type": "ack", "id": "x"}, now=T0)
    b.send({"type": "ack", "id": "x"}, now=T0)  # the teacher's fourth: refused
    assert (len(a.asked), len(b.asked)) == (2, 1)
    assert [e["code"] for e in b.of("error")] == ["rate_limited"]
    # A new connection of the same teacher brings no new allowance; another
    # teacher's is its own.
    fresh = connect(hub, "t1", limits=limits, frame_budgets=frames)
    fresh.answer_all(store)
    fresh.send({"type": "ack", "id": "x"}, now=T0)
    other.send({"type": "ack", "id": "x"}, now=T0)
    assert (len(fresh.asked), len(other.asked)) == (0, 1)
    assert [e["code"] for e in fresh.of("error")] == ["rate_limited"]


def test_a_flooding_connection_is_closed_and_the_teachers_others_are_not(
    hub: Hub[Client], store: ModelStore
) -> None:
    limits = Limits(rate_limit_per_s=1, rate_limit_burst=10, max_errors=2)
    frames = limits.frame_budgets()
    calm = connect(hub, "t1", limits=limits, frame_budgets=frames)
    calm.answer_all(store)
    for k, at in enumerate((T0, T0 + 2, T0 + 4)):
        # A tab sends all the teacher's allowance and more: closed at its third
        # refusal (max_errors 2).
        c = connect(hub, "t1", limits=limits, frame_budgets=frames, now=at)
        c.answer_all(store)
        for _ in range(13 if k == 0 else 5):
            c.send({"type": "ack", "id": "x"}, now=at)
        assert closed(c) == (1008, "too many bad frames (rate_limited)")
        # The calm tab, one ack at a time, is refused meanwhile, naming the
        # ack, and not counted: three errors, past max_errors, and it stays open.
        calm.send({"type": "ack", "id": f"a{k}"}, now=at)
    errors = calm.of("error")
    assert [(e["code"], e.get("id")) for e in errors] == [("rate_limited", f"a{k}")
                                                          for k in range(3)]  # fmt: skip
    assert "sent too many messages together" in errors[0]["message"]
    assert calm.session.closing is None
    # The shared allowance refills (one a second) and its acks go through again.
    calm.send({"type": "ack", "id": "a3"}, now=T0 + 6)
    assert [r.event_id for r in calm.asked if isinstance(r, Ack)] == ["a3"]
    # A frame sent right after another one is counted: the calm tab is not
    # calm any more.
    calm.send({"type": "ack", "id": "a4"}, now=T0 + 6)
    calm.send({"type": "ack", "id": "a5"}, now=T0 + 6)
    assert calm.of("error")[-1] == {"type": "error", "code": "rate_limited",
                                    "message": "too many messages; slow down"}  # fmt: skip


def test_rate_limit_violations_count_towards_the_policy_close(hub: Hub[Client]) -> None:
    c = connect(hub, "t1", limits=Limits(rate_limit_per_s=1, rate_limit_burst=1, max_errors=2))
    for _ in range(4):
        c.send({"type": "ack", "id": "x"}, now=T0)
    assert closed(c) == (1008, "too many bad frames (rate_limited)")


# -- sync: pending, history, replay_done --------------------------------------


def test_order_of_a_session(hub: Hub[Client], store: ModelStore) -> None:
    e1 = store.publish("t1")
    store.publish("t1", action=True, rank=1)
    e3 = store.publish("t1", action=True, rank=4)
    e4 = store.publish("t1")
    store.publish("t2", action=True, rank=4)  # someone else's
    store.inflight.clear()
    c = connect(hub, "t1", resume=e1.position)
    c.answer_all(store)
    assert kinds(c) == ["welcome", "notification/pending", "notification/pending",
                        "notification/replayed", "replay_done"]  # fmt: skip
    # highest priority first, then the history after the resume point without
    # the pending items already sent
    assert [f["id"] for f in c.of("notification")] == [e3.event_id, "ev-2", e4.event_id]
    done = c.of("replay_done")[0]
    assert done == {"type": "replay_done", "recovered": True, "replayed": 1, "pending": 2,
                    "position": e4.position}  # fmt: skip
    assert all(f["notification"]["teacher_id"] == "t1" for f in c.of("notification"))


def test_no_resume_starts_at_the_head_without_replay(hub: Hub[Client], store: ModelStore) -> None:
    store.publish("t1")
    e2 = store.publish("t1")
    store.inflight.clear()
    c = connect(hub, "t1")
    c.answer_all(store)
    assert kinds(c) == ["welcome", "replay_done"]
    assert c.frames[-1]["position"] == e2.position
    store.publish("t1")
    deliver(store, hub)
    assert kinds(c)[-1] == "notification" and positions(c) == ["1000-3"]


def test_resume_older_than_history_is_not_recovered(hub: Hub[Client], store: ModelStore) -> None:
    for _ in range(5):
        store.publish("t1")
    store.trim("t1", keep=2)
    store.inflight.clear()
    c = connect(hub, "t1", resume="1000-1")
    c.answer_all(store)
    done = c.of("replay_done")[0]
    assert (done["recovered"], done["replayed"]) == (False, 2)
    assert positions(c) == ["1000-4", "1000-5"]
    # "0-0" asks for whatever is kept, which is always recovered
    d = connect(hub, "t1", resume="0-0")
    d.answer_all(store)
    assert d.of("replay_done")[0]["recovered"] is True


def test_live_items_during_a_sync_are_held_and_released_once(
    hub: Hub[Client], store: ModelStore
) -> None:
    store.publish("t1")
    store.inflight.clear()
    c = connect(hub, "t1", resume="0-0")
    e2 = store.publish("t1")  # in the history read and on the fan-out
    deliver(store, hub)
    assert kinds(c) == ["welcome"]  # held
    c.answer_all(store)
    e3 = store.publish("t1")
    deliver(store, hub)
    assert positions(c) == ["1000-1", e2.position, e3.position]
    assert kinds(c)[-2:] == ["replay_done", "notification"]


def test_no_resume_keeps_what_arrived_during_the_first_sync(
    hub: Hub[Client], store: ModelStore
) -> None:
    """Regression: the head read after registering covers an item announced in
    between; it used to be dropped as 'older than the head'."""
    c = connect(hub, "t1")
    e1 = store.publish("t1")
    deliver(store, hub)
    c.answer_all(store)
    assert positions(c) == [e1.position]
    assert c.of("replay_done")[0]["position"] == e1.position


# -- acks ----------------------------------------------------------------------


def test_ack_of_an_own_pending_item_reaches_every_connection(
    hub: Hub[Client], store: ModelStore
) -> None:
    e = store.publish("t1", action=True)
    store.inflight.clear()
    a, b = connect(hub, "t1"), connect(hub, "t1")
    other = connect(hub, "t2")
    for c in (a, b, other):
        c.answer_all(store)
    a.send({"type": "ack", "id": e.event_id})
    assert a.asked == [Ack("t1", e.event_id)]
    a.answer_all(store)
    assert a.of("error") == []
    deliver(store, hub)
    assert a.of("acked") == b.of("acked") == [{"type": "acked", "id": e.event_id}]
    assert other.of("acked") == []
    c = connect(hub, "t1")
    c.answer_all(store)
    assert c.of("notification") == []  # no longer pending


@pytest.mark.parametrize("whose", ["unknown", "already acked", "another teacher's"])
def test_ack_of_an_id_not_pending_for_this_teacher_is_not_pending(
    hub: Hub[Client], store: ModelStore, whose: str
) -> None:
    mine = store.publish("t1", action=True)
    theirs = store.publish("t2", action=True)
    store.inflight.clear()
    c = connect(hub, "t1", limits=Limits(max_errors=0))
    c.answer_all(store)
    target = {"unknown": "nope", "already acked": mine.event_id,
              "another teacher's": theirs.event_id}[whose]  # fmt: skip
    if whose == "already acked":
        store.ack("t1", mine.event_id)
    c.send({"type": "ack", "id": target})
    c.answer_all(store)
    assert [e["code"] for e in c.of("error")] == ["not_pending"]
    assert c.session.closing is None  # two tabs acking at once is normal: not a bad frame
    assert theirs.event_id in store.pending["t2"]  # untouched


# -- mid-session resume -----------------------------------------------------------


def test_mid_session_resume_is_a_new_sync(hub: Hub[Client], store: ModelStore) -> None:
    store.publish("t1", action=True)
    store.publish("t1")
    store.inflight.clear()
    c = connect(hub, "t1")
    c.answer_all(store)
    c.send({"type": "resume", "position": "0-0"})
    assert c.asked == [CountReplay("t1", "0-0", 1001)]
    c.answer_all(store)
    assert kinds(c) == ["welcome", "notification/pending", "replay_done",
                        "notification/pending", "notification/replayed", "replay_done"]  # fmt: skip


def test_a_resume_during_a_sync_waits_for_it_and_the_newest_waiting_one_wins(
    hub: Hub[Client], store: ModelStore
) -> None:
    store.publish("t1")
    store.publish("t1")
    store.inflight.clear()
    c = connect(hub, "t1", resume="0-0")
    c.send({"type": "resume", "position": "1000-1"})
    c.send({"type": "resume", "position": "1000-2"})
    assert c.asked == [LoadSync("t1", "0-0", 500)]  # nothing asked while the sync runs
    c.answer_one(store)
    assert c.asked == [CountReplay("t1", "1000-2", 1001)]
    c.answer_all(store)
    assert kinds(c) == ["welcome", "notification/replayed", "notification/replayed",
                        "replay_done", "replay_done"]  # fmt: skip
    assert c.of("replay_done")[1]["position"] == "1000-2"


def test_resume_over_the_replay_budget_is_refused(hub: Hub[Client], store: ModelStore) -> None:
    for _ in range(30):
        store.publish("t1")
    store.inflight.clear()
    # The burst is one history and the pending cap: 40 here.
    c = connect(hub, "t1", limits=Limits(replay_rate_per_s=1, history_maxlen=40, pending_max=0))
    c.answer_all(store)
    c.send({"type": "resume", "position": "0-0"}, now=T0)
    c.answer_all(store, now=T0)
    c.send({"type": "resume", "position": "0-0"}, now=T0 + 1)
    c.answer_all(store, now=T0 + 1)
    err = c.of("error")
    assert [e["code"] for e in err] == ["rate_limited"]
    assert "would replay more than 11 notifications" in err[0]["message"]
    assert len(c.of("replay_done")) == 2


# -- what syncs replay is charged to the teacher ----------------------------------


def _charged(store: ModelStore, entries: int, *, pending: int = 0) -> None:
    for _ in range(entries):
        store.publish("t1")
    for _ in range(pending):
        store.publish("t1", action=True)
    store.inflight.clear()


def test_reconnecting_buys_no_new_replay_budget(hub: Hub[Client], store: ModelStore) -> None:
    _charged(store, 30)
    limits = Limits(replay_rate_per_s=1, history_maxlen=40, pending_max=0)
    budgets = limits.replay_budgets()  # one per server, as the server holds it
    first = connect(hub, "t1", limits=limits, resume="0-0", replay_budgets=budgets)
    first.answer_all(store)
    assert len(first.of("notification")) == 30 and budgets.level("t1", T0) == 10
    hub.registry.remove("t1", first)  # the client goes away; the budget stays
    # Within the budget: served whole, even past it (10 left, 30 replayed).
    second = connect(hub, "t1", limits=limits, resume="0-0", replay_budgets=budgets)
    second.answer_all(store)
    assert len(second.of("notification")) == 30 and budgets.level("t1", T0) == -20
    # Overdrawn: the next connection is refused before anything is read.
    third = connect(hub, "t1", limits=limits, resume="0-0", replay_budgets=budgets)
    assert closed(third) == (1013, "this teacher's connections replayed too much; "
                             "reconnect in 21 s")  # fmt: skip
    assert third.asked == [] and third.session.closing is not None
    assert third.session.closing.kind == "replay_budget"
    # Another teacher's budget is its own.
    other = connect(hub, "t2", limits=limits, resume="0-0", replay_budgets=budgets)
    other.answer_all(store)
    assert other.of("replay_done") and other.session.closing is None
    # Paid back after the wait it named: served again.
    later = connect(hub, "t1", limits=limits, resume="1000-29", now=T0 + 21, replay_budgets=budgets)
    later.answer_all(store, now=T0 + 21)
    assert [f["id"] for f in later.of("notification")] == ["ev-30"]


def test_pending_items_sent_on_connect_are_charged(hub: Hub[Client], store: ModelStore) -> None:
    _charged(store, 0, pending=5)
    limits = Limits(replay_rate_per_s=2, history_maxlen=0, pending_max=5)
    budgets = limits.replay_budgets()
    c = connect(
        hub, "t1", limits=limits, replay_budgets=budgets
    )  # no resume: the pending items only
    c.answer_all(store)
    assert len([f for f in c.of("notification") if f["pending"]]) == 5
    assert budgets.level("t1", T0) == 0
    refused = connect(hub, "t1", limits=limits, replay_budgets=budgets)
    assert closed(refused) == (1013, "this teacher's connections replayed too much; "
                               "reconnect in 1 s")  # fmt: skip
    ok = connect(hub, "t1", limits=limits, now=T0 + 0.6, replay_budgets=budgets)
    ok.answer_all(store, now=T0 + 0.6)
    assert ok.session.closing is None and budgets.level("t1", T0 + 0.6) == pytest.approx(-3.8)


def test_a_priced_resume_is_charged_once(hub: Hub[Client], store: ModelStore) -> None:
    _charged(store, 30)
    limits = Limits(replay_rate_per_s=1, history_maxlen=40, pending_max=0)
    budgets = limits.replay_budgets()
    c = connect(hub, "t1", limits=limits, replay_budgets=budgets)
    c.answer_all(store)
    c.send({"type": "resume", "position": "0-0"})
    c.answer_all(store)
    assert len(c.of("notification")) == 30
    assert budgets.level("t1", T0) == 10  # priced 30 and taken; the sync charged nothing more


def test_replay_budgets_keep_only_those_not_full_again() -> None:
    from router.limits import TeacherBudgets

    b = TeacherBudgets(rate_per_s=10, burst=100)
    for i in range(3000):
        b.spend(f"t{i}", 50, now=float(i) * 0.001)  # 3 s of teachers, 5 s to refill each
    assert len(b) == 3000  # none is full again yet: each is kept
    assert b.level("t2999", 2.999) == pytest.approx(50)
    # 10 s later every one is full again: the next new teacher sweeps them all.
    for i in range(2000):
        b.spend(f"u{i}", 1, now=20.0)
    assert len(b) <= 2000
    assert b.level("t0", 20.0) == 100  # a dropped budget is a full one
    assert b.take("new", 0, 0.0) and b.wait_s("new", 0.0) == 0.0


# -- lost and restored fan-out subscription -----------------------------------------


def test_catch_up_sends_only_what_was_missed(hub: Hub[Client], store: ModelStore) -> None:
    store.publish("t1", action=True)
    store.inflight.clear()
    c = connect(hub, "t1")
    c.answer_all(store)
    store.publish("t1")
    deliver(store, hub)
    store.subscribed = False
    missed = [store.publish("t1"), store.publish("t1")]
    store.subscribed = True
    hub.restored()
    assert c.asked == [LoadCatchUp("t1", "1000-2")]
    live = store.publish("t1")  # announced after the restore: held, and in the read too
    deliver(store, hub)
    assert len(c.frames) == 4
    c.answer_all(store)
    assert kinds(c) == ["welcome", "notification/pending", "replay_done", "notification"] + [
        "notification/replayed"] * 3  # once, not again from the held copy  # fmt: skip
    assert positions(c, pending=None)[2:] == [missed[0].position, missed[1].position, live.position]


def test_restored_during_the_first_sync_catches_up_after_it(
    hub: Hub[Client], store: ModelStore
) -> None:
    c = connect(hub, "t1", resume="0-0")
    hub.restored()
    assert c.asked == [LoadSync("t1", "0-0", 500)]
    store.subscribed = False
    e = store.publish("t1")  # missed by the fan-out, maybe by the sync's read too
    store.subscribed = True
    c.answer_one(store)
    assert c.asked == [LoadCatchUp("t1", e.position)]
    c.answer_all(store)
    assert len(c.of("replay_done")) == 1 and positions(c) == [e.position]


def test_restored_again_during_a_catch_up_catches_up_again(
    hub: Hub[Client], store: ModelStore
) -> None:
    c = connect(hub, "t1")
    c.answer_all(store)
    hub.restored()
    store.subscribed = False
    store.publish("t1")
    c.answer_one(store)  # this catch-up read already covers it
    store.publish("t1")
    store.subscribed = True
    hub.restored()
    c.answer_all(store)
    assert positions(c) == ["1000-1", "1000-2"] and len(c.of("replay_done")) == 1


def test_a_restore_while_a_resume_is_priced_is_covered_by_its_sync(
    hub: Hub[Client], store: ModelStore
) -> None:
    store.publish("t1")
    store.inflight.clear()
    c = connect(hub, "t1")
    c.answer_all(store)
    c.send({"type": "resume", "position": "0-0"})
    hub.restored()  # no catch-up of its own: the resume's sync reads the history after it
    assert c.asked == [CountReplay("t1", "0-0", 1001)]
    c.answer_all(store)
    assert kinds(c)[1:] == ["replay_done", "notification/replayed", "replay_done"]


# -- the connection ends -------------------------------------------------------------


def test_redis_failing_closes_1011(hub: Hub[Client], store: ModelStore) -> None:
    c = connect(hub, "t1")
    req = c.asked.pop(0)
    assert isinstance(req, LoadSync)
    c.session.store_failed(req)
    c.flush()
    assert closed(c) == (1011, STORE_DOWN) and not c.registered


def test_a_defect_closes_1011(hub: Hub[Client]) -> None:
    c = connect(hub, "t1")
    c.session.internal_error()
    assert closed(c) == (1011, INTERNAL)


def test_a_slow_client_is_closed_1013(hub: Hub[Client]) -> None:
    c = connect(hub, "t1")
    c.session.too_slow()
    assert closed(c) == (1013, SLOW_CLIENT)


def test_nothing_goes_out_after_the_close(hub: Hub[Client], store: ModelStore) -> None:
    c = connect(hub, "t1", resume="0-0")
    store.publish("t1", action=True)
    c.session.too_slow()
    before = list(c.frames)
    c.answer_all(store)  # the answer comes after the close: ignored
    c.session.live("1000-9", "x", ("{}", None, None))
    c.send({"type": "ack", "id": "x"})
    c.session.subscription_restored()
    c.flush()
    assert c.frames == before and c.asked == []


def test_answers_must_come_in_order(hub: Hub[Client], store: ModelStore) -> None:
    c = connect(hub, "t1")
    c.answer_all(store)
    c.send({"type": "ack", "id": "a"})
    c.send({"type": "ack", "id": "b"})
    with pytest.raises(RuntimeError, match="out of order"):
        c.session.ack_done(c.asked[1], True)  # type: ignore[arg-type]


def test_the_hub_isolates_teachers(hub: Hub[Client], store: ModelStore) -> None:
    a, b = connect(hub, "t1"), connect(hub, "t2")
    for c in (a, b):
        c.answer_all(store)
    for t in ("t1", "t2", "t3", "t1"):
        store.publish(t)
    deliver(store, hub)
    assert [f["notification"]["teacher_id"] for f in a.of("notification")] == ["t1", "t1"]
    assert [f["notification"]["teacher_id"] for f in b.of("notification")] == ["t2"]
    assert json.loads(json.dumps(a.frames))  # every frame is JSON


def test_frames_and_limits_follow_the_settings() -> None:
    from router.settings import RouterSettings

    s = RouterSettings(jwt_secret=SECRET, max_errors=7, pending_max=3, auth_timeout_s=2)
    limits = Limits.from_settings(s)
    assert (limits.max_errors, limits.pending_max, limits.auth_timeout_s) == (7, 3, 2)
    assert Limits() == Limits.from_settings(RouterSettings())
