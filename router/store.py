"""Redis: deduplication, per-teacher history, pending action items and fan-out.

Keys (``{p}`` is the configured prefix; ``{t:<teacher>}`` is a Redis Cluster
hash tag, so every key of one teacher is in one slot)::

    {p}:{t:<teacher>}:seen:<event_id>   string, the event's position; TTL = dedupe TTL
    {p}:{t:<teacher>}:hist              stream of the teacher's notifications (capped, TTL)
    {p}:{t:<teacher>}:pending           hash event_id -> JSON of action-required items not yet acked
    {p}:fanout                          pub/sub channel of every notification (broadcast fan-out)
    {p}:{t:<teacher>}:ch                pub/sub channel of one teacher (interest fan-out)

One Lua script deduplicates, appends and publishes a batch atomically, so a
notification is either recorded and announced, or not at all. On one Redis a
batch is one script call; on a Redis Cluster it is split by slot, one call per
slot (every key a call touches is in that slot), pipelined per node. An event
belongs to one teacher, so deduplicating per teacher is deduplicating per event.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contracts.protocol import position_key
from router.decode import Routable
from router.errors import PoisonMessageError, StoreUnavailableError

_INGEST = r"""
local p = ARGV[1]
local seen_ttl = tonumber(ARGV[2])
local maxlen = ARGV[3]
local hist_ttl = tonumber(ARGV[4])
-- The batch is one JSON argument: [[event id, teacher, notification JSON,
-- created_at, action 0/1, priority rank, deadline], ...]. One argument
-- instead of seven per notification is far cheaper to send and to unpack.
local batch = cjson.decode(ARGV[5])
local received = tonumber(ARGV[6])
local pending_max = tonumber(ARGV[7])
-- '1': one message per teacher on the teacher's own channel (interest-based
-- fan-out); otherwise one message for the batch on the shared channel.
local per_teacher = ARGV[8] == '1'
local out = {}
local heads = {}
local bodies = {}
local by_teacher = {}
local teachers = {}
local touched = {}
-- Redis scripts do not roll back: a command failing half-way would leave items
-- recorded but never announced. So each item's keys are type-checked (once per
-- batch) before anything is written, and an item that cannot be recorded is
-- answered with '!' and the reason; the others go on.
local kind = {}
local function key_ok(key, want)
  local t = kind[key]
  if t == nil then
    t = redis.call('TYPE', key)['ok']
    kind[key] = t
  end
  return t == 'none' or t == want
end
for i = 1, #batch do
  local r = batch[i]
  local eid, teacher, n, created = r[1], r[2], r[3], r[4]
  local tag = p .. ':{t:' .. teacher .. '}'
  local seen = tag .. ':seen:' .. eid
  local hist = tag .. ':hist'
  local pend = tag .. ':pending'
  if redis.call('EXISTS', seen) == 1 then
    out[i] = ''
  elseif not key_ok(hist, 'stream') or (r[5] == 1 and not key_ok(pend, 'hash')) then
    out[i] = '!WRONGTYPE a key of teacher ' .. teacher .. ' holds another type'
  else
    local pos = redis.pcall('XADD', hist, 'MAXLEN', '~', maxlen, '*',
                            'id', eid, 'n', n, 'c', created)
    if type(pos) == 'table' then
      out[i] = '!' .. tostring(pos.err)
    else
      kind[hist] = 'stream'
      touched[hist] = true
      redis.call('SET', seen, pos, 'EX', seen_ttl)
      -- Past the cap a new action item is still recorded and announced, but not
      -- kept for re-sending on connect (a bound on what one teacher can pile up).
      if r[5] == 1 and redis.call('HLEN', pend) < pending_max then
        local item = '{"id":' .. cjson.encode(eid) .. ',"p":"' .. pos .. '","r":' ..
                     string.format('%d', r[6]) .. ',"d":' .. cjson.encode(r[7]) ..
                     ',"c":' .. cjson.encode(created) .. ',"n":' .. n .. '}'
        redis.call('HSET', pend, eid, item)
        redis.call('EXPIRE', pend, hist_ttl)
        kind[pend] = 'hash'
      end
      if per_teacher then
        local mine = by_teacher[teacher]
        if mine == nil then
          mine = {tag, {}, {}}
          by_teacher[teacher] = mine
          teachers[#teachers + 1] = teacher
        end
        mine[2][#mine[2] + 1] = {'n', teacher, eid, pos, created, received}
        mine[3][#mine[3] + 1] = n
      else
        heads[#heads + 1] = {'n', teacher, eid, pos, created, received}
        bodies[#bodies + 1] = n
      end
      out[i] = pos
    end
  end
end
-- Each touched history gets its TTL once per batch, not once per notification.
for hist in pairs(touched) do
  redis.call('EXPIRE', hist, hist_ttl)
end
-- One message for the whole batch, in order: a JSON line of every record's
-- header, then each notification's JSON as is, a line each (compact JSON never
-- holds a raw newline). Receivers route without parsing the bodies.
if #heads > 0 then
  redis.call('PUBLISH', p .. ':fanout', cjson.encode(heads) .. '\n' .. table.concat(bodies, '\n'))
end
for _, teacher in ipairs(teachers) do
  local mine = by_teacher[teacher]
  redis.call('PUBLISH', mine[1] .. ':ch', cjson.encode(mine[2]) .. '\n' .. table.concat(mine[3], '\n'))
end
return out
"""

_ACK = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[3], cjson.encode({{'a', ARGV[2], ARGV[1]}}))
end
return removed
"""


# Only these mean "Redis is not there" (or a cluster between two primaries);
# any other Redis error (a script bug, a wrong key type) is a defect and is
# raised as it is.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError,
                MasterDownError, SlotNotCoveredError, RedisClusterException)  # fmt: skip


@dataclass(frozen=True)
class HistoryEntry:
    position: str
    event_id: str
    notification: str  # JSON text
    created_at: str | None


@dataclass(frozen=True)
class PendingItem:
    event_id: str
    position: str
    rank: int
    deadline: datetime | None
    created_at: str | None
    notification: dict[str, Any]


@dataclass(frozen=True)
class Replay:
    entries: list[HistoryEntry]
    recovered: bool
    head: str | None


def _s(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else v


class Store:
    """Thin async adapter over one Redis; every call raises StoreUnavailableError."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str, dedupe_ttl_s: int,
                 history_maxlen: int, history_ttl_s: int, pending_max: int = 500,
                 observe: Callable[[str, float], None] | None = None,
                 per_teacher: bool = False) -> None:  # fmt: skip
        self.redis = client
        # Called with (call, seconds) after each call to Redis, failed or not.
        self._observe = observe
        self.prefix = prefix
        self.dedupe_ttl_s = dedupe_ttl_s
        self.history_maxlen = history_maxlen
        self.history_ttl_s = history_ttl_s
        self.pending_max = pending_max
        self.cluster = isinstance(client, RedisCluster)
        # Announce on each teacher's channel instead of the shared one.
        self.per_teacher = per_teacher
        # A cluster client runs them as well (EVALSHA routed by the first key).
        self._ingest = AsyncScript(client, _INGEST)  # type: ignore[arg-type]
        self._ack = AsyncScript(client, _ACK)  # type: ignore[arg-type]

    @property
    def channel(self) -> str:
        return f"{self.prefix}:fanout"

    def teacher_channel(self, teacher_id: str) -> str:
        """The channel a teacher's notifications and acks are announced on when
        fan-out is by interest (in the teacher's slot, like its keys)."""
        return f"{self.tag(teacher_id)}:ch"

    def tag(self, teacher_id: str) -> str:
        """The prefix of every key of one teacher: ``{p}:{t:<teacher>}``. The hash
        tag is what is between the first ``{`` and the next ``}``, so it is never
        empty, and a teacher id holding ``}`` still gives all its keys one slot."""
        return f"{self.prefix}:{{t:{teacher_id}}}"

    def hist_key(self, teacher_id: str) -> str:
        return f"{self.tag(teacher_id)}:hist"

    def pending_key(self, teacher_id: str) -> str:
        return f"{self.tag(teacher_id)}:pending"

    async def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        """The error for a call Redis did not answer. On a cluster the slot map is
        read again first (from any node that answers), so the next call goes to
        the replica promoted in place of a dead primary."""
        if isinstance(self.redis, RedisCluster):
            with contextlib.suppress(*_UNAVAILABLE):
                await self.redis.nodes_manager.initialize()
        return StoreUnavailableError(str(exc))

    @contextlib.contextmanager
    def _timed(self, call: str) -> Iterator[None]:
        if self._observe is None:
            yield
            return
        start = time.perf_counter()
        try:
            yield
        finally:
            self._observe(call, time.perf_counter() - start)

    async def ping(self) -> bool:
        try:
            with self._timed("ping"):
                return bool(await self.redis.ping())
        except _UNAVAILABLE:
            return False

    async def ingest(self, batch: Sequence[Routable], *, received_at: float
                     ) -> list[str | PoisonMessageError | None]:  # fmt: skip
        """Record and announce ``batch`` (read from Kafka at epoch ``received_at``);
        a position per item, ``None`` for a duplicate, or why Redis could not
        record that item.

        Raises:
            StoreUnavailableError: Redis is not reachable (nothing to conclude).
            redis.RedisError: the whole call was refused (nothing was written).
        """
        if not batch:
            return []
        try:
            with self._timed("ingest"):
                if self.cluster:
                    result = await self._ingest_by_slot(batch, received_at)
                else:
                    result = await self._ingest(keys=[self.hist_key(batch[0].teacher_id)],
                                                args=self._ingest_args(batch, received_at))  # fmt: skip
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        out: list[str | PoisonMessageError | None] = []
        for x in result:
            v = _s(x) or None
            out.append(PoisonMessageError("store_rejected", v[1:]) if v and v[0] == "!" else v)
        return out

    def _ingest_args(self, batch: Sequence[Routable], received_at: float) -> list[str | int]:
        # UTF-8 as it is (ensure_ascii off): Lua's cjson passes it through untouched.
        rows = json.dumps([[r.event_id, r.teacher_id, r.notification_json, r.created_at or "",
                            1 if r.action_required else 0, r.priority_rank, r.deadline or ""]
                           for r in batch], ensure_ascii=False)  # fmt: skip
        return [self.prefix, self.dedupe_ttl_s, self.history_maxlen, self.history_ttl_s, rows,
                f"{received_at:.6f}", self.pending_max, "1" if self.per_teacher else "0"]  # fmt: skip

    async def _ingest_by_slot(self, batch: Sequence[Routable], received_at: float) -> list[Any]:
        """One script call per slot, all pipelined (the client sends each node its
        calls together); answers put back in the batch's order. A teacher's items
        stay in one call, in order, so per-teacher order holds."""
        assert isinstance(self.redis, RedisCluster)
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(self.redis.keyslot(self.hist_key(r.teacher_id)), []).append(i)
        calls = [(idx, self.hist_key(batch[idx[0]].teacher_id),
                  self._ingest_args([batch[i] for i in idx], received_at)) for idx in groups.values()]  # fmt: skip
        for attempt in range(2):
            pipe = self.redis.pipeline()
            for _, key, args in calls:
                pipe.execute_command("EVALSHA", self._ingest.sha, 1, key, *args)
            answers = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(a, NoScriptError) for a in answers):
                # A node that never saw the script (new, or a promoted replica):
                # load it everywhere and send the batch again; the calls that did
                # run are deduplicated by the second round.
                await self.redis.execute_command("SCRIPT LOAD", _INGEST,
                                                 target_nodes=RedisCluster.ALL_NODES)  # fmt: skip
                continue
            break
        out: list[Any] = [None] * len(batch)
        for (idx, _, _), answer in zip(calls, answers, strict=True):
            if isinstance(answer, Exception):  # unavailable (retried), or refused (narrowed)
                raise answer
            for i, v in zip(idx, answer, strict=True):
                out[i] = v
        return out

    async def replay_count(self, teacher_id: str, after: str | None) -> int:
        """How many entries a resume from ``after`` would replay (at most the history)."""
        if after is None:
            return 0
        try:
            with self._timed("replay_count"):
                rows = await self.redis.xrange(self.hist_key(teacher_id), min=f"({after}",
                                               max="+", count=self.history_maxlen)  # fmt: skip
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        return len(rows)

    async def replay(self, teacher_id: str, after: str | None) -> Replay:
        with self._timed("replay"):
            return await self._do_replay(teacher_id, after)

    async def _do_replay(self, teacher_id: str, after: str | None) -> Replay:
        """History after position ``after`` (all retained history for ``"0-0"``)."""
        key = self.hist_key(teacher_id)
        try:
            head_rows = await self.redis.xrevrange(key, count=1)
            head = _s(head_rows[0][0]) if head_rows else None
            if after is None:
                return Replay([], True, head)
            recovered = True
            if head is None:
                recovered = after == "0-0"
            else:
                # Trimming does not move max-deleted-entry-id, so compare with
                # the first entry kept: anything older may have been trimmed.
                info = await self.redis.xinfo_stream(key)
                first = info.get("first-entry")
                first_pos = _s(first[0]) if first else None
                trimmed = int(info.get("entries-added", 0)) > int(info.get("length", 0))
                # "0-0" asks for whatever is retained, which is always "recovered".
                older = first_pos is not None and position_key(after) < position_key(first_pos)
                if trimmed and older and after != "0-0":
                    recovered = False
            rows = await self.redis.xrange(key, min=f"({after}", max="+")
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        entries = []
        for pos, fields in rows:
            f = {_s(k): _s(v) for k, v in fields.items()}
            entries.append(HistoryEntry(_s(pos) or "", f.get("id") or "", f.get("n") or "{}",
                                        f.get("c") or None))  # fmt: skip
        return Replay(entries, recovered, head)

    async def pending(self, teacher_id: str, *, now: datetime, limit: int) -> list[PendingItem]:
        with self._timed("pending"):
            return await self._do_pending(teacher_id, now=now, limit=limit)

    async def _do_pending(self, teacher_id: str, *, now: datetime, limit: int) -> list[PendingItem]:
        """Pending action-required items, highest priority first, oldest first within
        a priority. Items past their deadline are dropped from the set."""
        key = self.pending_key(teacher_id)
        try:
            raw: dict[bytes, bytes] = await self.redis.hgetall(key)  # type: ignore[misc]
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        items: list[PendingItem] = []
        expired: list[str] = []
        for field, value in raw.items():
            d = json.loads(value)
            deadline = datetime.fromisoformat(d["d"]) if d.get("d") else None
            if deadline is not None and deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=UTC)
            if deadline is not None and deadline <= now:
                expired.append(_s(field) or "")
                continue
            items.append(PendingItem(d["id"], d["p"], int(d["r"]), deadline, d.get("c") or None,
                                     d["n"]))  # fmt: skip
        if expired:
            try:
                await self.redis.hdel(key, *expired)  # type: ignore[misc]
            except _UNAVAILABLE as exc:
                raise await self._unavailable(exc) from exc
        items.sort(key=lambda it: (-it.rank, position_key(it.position)))
        return items[:limit]

    async def ack(self, teacher_id: str, event_id: str) -> bool:
        with self._timed("ack"):
            return await self._do_ack(teacher_id, event_id)

    async def _do_ack(self, teacher_id: str, event_id: str) -> bool:
        """Clear a pending item for every connection of the teacher; False if not pending."""
        try:
            n = await self._ack(keys=[self.pending_key(teacher_id)],
                                args=[event_id, teacher_id,
                                      self.teacher_channel(teacher_id) if self.per_teacher
                                      else self.channel])  # fmt: skip
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        return bool(n)
