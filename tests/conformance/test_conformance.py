"""The client written from docs/protocol.md (``doc_client``) through the cases
the document promises, against a real router, broker and Redis."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from tests.conformance.doc_client import DocClient
from tests.fix_router import Env, notification, running_router, wait_ready


async def test_a_client_written_from_the_document(env: Env) -> None:
    s = env.settings.model_copy(update={"history_maxlen": 10, "max_errors": 1})
    async with running_router(s) as router:
        await wait_ready(router.port)
        url = f"ws://127.0.0.1:{router.port}/ws"
        tok = env.token("doc-t")
        c = DocClient(url)

        # First connect, no position: the stream starts at replay_done's position.
        done = await c.open(tok)
        assert (done["recovered"], done["replayed"], done["pending"]) == (True, 0, 0)
        assert c.frames[0]["type"] == "welcome" and c.position == done["position"]
        env.produce(notification("class_created", "doc-t", 1))
        env.produce(notification("batch_validation_failed", "doc-t", 2))  # an action item
        env.flush()
        await c.until("notification", count=2)
        action_id = c.notifications()[1]["id"]
        live_position = c.position
        assert live_position == c.notifications()[1]["position"]

        # Rule 2: reconnect with the kept position; exactly what was missed.
        await c.close()
        for i in (3, 4, 5):
            env.produce(notification("class_created", "doc-t", i))
        env.flush()
        await asyncio.sleep(1.0)  # recorded while away
        done = await c.open(tok, header=True)
        pend = c.notifications(pending=True)
        missed = c.notifications(pending=False)
        # Rule 3: the action item comes first and again; rule 1: its older
        # position does not move ours back.
        assert [f["id"] for f in pend] == [action_id]
        assert [f["notification"]["payload"]["i"] for f in missed] == [3, 4, 5]
        assert all(f["replayed"] for f in missed) and done["replayed"] == 3
        assert c.position == done["position"] == missed[-1]["position"]

        # Rule 6: acking twice; the second is not_pending and the connection stays.
        await c.send({"type": "ack", "id": action_id})
        await c.until("acked")
        assert action_id not in c.actions
        await c.send({"type": "ack", "id": action_id})
        err = await c.until("error")
        assert err["code"] == "not_pending"
        # and another teacher's id gets the same answer, without touching it
        other = DocClient(url)
        env.produce(notification("batch_validation_failed", "doc-other", 9))
        env.flush()
        await other.open(env.token("doc-other"))
        theirs = (await other.until("notification"))["id"]
        await c.send({"type": "ack", "id": theirs})
        assert (await c.until("error", count=2))["code"] == "not_pending"
        await other.close()
        await other.open(env.token("doc-other"))
        assert [f["id"] for f in other.notifications(pending=True)] == [theirs]
        await other.close()

        # Rule 4: a mid-session resume is a new sync and re-sends what follows.
        await c.send({"type": "resume", "position": live_position})
        done = await c.until("replay_done", count=2)
        again = c.notifications(pending=False)[3:]
        assert [f["notification"]["payload"]["i"] for f in again] == [3, 4, 5]
        assert done["replayed"] == 3

        # Rule 5: older than the history kept (OUTBOX_HISTORY_MAXLEN 10, trimmed
        # approximately, in whole stream nodes): not recovered, and what is kept
        # still comes, in order, up to the newest.
        first = c.position
        await c.close()
        for i in range(100, 350):
            env.produce(notification("class_created", "doc-t", i))
        env.flush()
        await asyncio.sleep(1.5)
        done = await c.open(tok, resume=first)
        kept = [f["notification"]["payload"]["i"] for f in c.notifications()]
        assert done["recovered"] is False and done["replayed"] == len(kept)
        assert 10 <= len(kept) < 250 and kept == list(range(350 - len(kept), 350))
        await c.close()

        # The exact refusals.
        bad = DocClient(url)
        bad.ws = await connect(url)
        await bad.send({"type": "auth", "token": tok, "resume": "not-a-position"})
        closed = await bad.closed()
        assert (closed.code, closed.reason) == (4400, "bad resume position")
        bad.ws = await connect(url + "?resume=99999999999999999999999-0",
                               additional_headers={"Authorization": f"Bearer {tok}"})  # fmt: skip
        closed = await bad.closed()
        assert (closed.code, closed.reason) == (4400, "bad resume position")
        await c.open(tok)
        await c.send({"type": "resume", "position": "nope"})
        assert (await c.until("error"))["code"] == "bad_frame"
        await c.send({"type": "resume", "position": "nope"})
        closed = await c.closed()
        assert closed.code == 1008  # max_errors 1: the second bad frame ends it
        # No auth frame in time (OUTBOX_AUTH_TIMEOUT_S, 1.5 s here): 4408; a bad
        # header token: 4401 with the reason.
        bad.ws = await connect(url)
        closed = await bad.closed()
        assert (closed.code, closed.reason) == (4408, "no auth frame in time")
        bad.ws = await connect(url, additional_headers={"Authorization": "Bearer nope"})
        closed = await bad.closed()
        assert (closed.code, closed.reason) == (4401, "malformed token")
