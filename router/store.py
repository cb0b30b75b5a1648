"""Redis: deduplication, per-teacher history, pending action items and fan-out.

Keys (``{p}`` is the configured prefix; ``{t:<teacher>}`` is a Redis Cluster
hash tag, so every key of one teacher is in one slot)::

    {p}:{t:<teacher>}:seen:<event_id>   string "1": the event was recorded; TTL = dedupe TTL
    {p}:{t:<teacher>}:hist              stream of the teacher's notifications (capped, TTL)
    {p}:{t:<teacher>}:pending           hash event_id -> JSON of action-required items not yet acked
    {p}:{t:<teacher>}:replicas          sorted set replica id -> lease end (ms); interest fan-out
    {p}:{t:<teacher>}:hist:wait         string, 60 s: a batch call's last write, when waiting for replicas
    {p}:fanout                          pub/sub channel of every notification (broadcast fan-out)
    {p}:r:<replica id>                  pub/sub channel of one replica (interest fan-out)
    {p}:{t:<teacher>}:fan               sharded pub/sub channel of one teacher (sharded fan-out)

One Lua script deduplicates, appends and publishes a batch atomically, so a
notification is either recorded and announced, or not at all. On one Redis a
batch is one script call. On a Redis Cluster it is one call per primary, for
the items of every slot it serves (Redis 7's ``allow-cross-slot-keys``). Each
item's claim of its event id is the check that its slot is here and still: a
node makes a new key only in a slot it owns and is not moving, so a refused
claim (answered ``?``) means nothing of the item was written, and the teacher's
later items are held back with it. Those items go again one call per slot,
declaring every key they touch: while a reshard has a slot's keys split
between two primaries Redis answers ``TRYAGAIN``/``ASK`` before running any of
it (:class:`SlotMovingError`), and a slot that moved answers ``MOVED``, which
the cluster client follows. An event belongs to one teacher, so deduplicating
per teacher is deduplicating per event.

With ``wait_replicas`` set, calls are per slot (on a cluster), each node's
followed by ``WAIT`` on the same connection, and a batch counts as recorded
only once that many replicas of every primary it touched have it
(:class:`ReplicationShortError` otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterError,
    MasterDownError,
    MovedError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from contracts.protocol import next_position, position_key, valid_position
from router.decode import Routable
from router.errors import (
    PoisonMessageError,
    ReplicationShortError,
    SlotMovingError,
    StoreFullError,
    StoreUnavailableError,
)
from router.limits import LogThrottle
from router.settings import REDIS_MAX_CONNECTIONS, session_calls

log = logging.getLogger(__name__)

# Lease ends (interest fan-out) are Redis' own clock, in ms, in every script.
_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_INGEST = (
    _NOW_MS
    + r"""
-- KEYS[1]: the first item's history. On a cluster KEYS also holds every other
-- key the call touches (Store.ingest_keys), which only Redis reads.
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
-- '1': interest-based fan-out. Each replica whose lease on a teacher is live
-- gets that teacher's part of the batch; one message per replica per batch, on
-- the replica's own channel. '2': sharded fan-out, each teacher's part on the
-- teacher's own sharded channel (SPUBLISH: in the teacher's slot, so a cluster
-- carries it only within that shard). Otherwise one message on the shared channel.
local per_replica = ARGV[8] == '1'
local per_teacher = ARGV[8] == '2'
local now = 0
if per_replica then
  now = now_ms()
end
local out = {}
local replicas_of = {}
local touched = {}
-- What to publish: per channel, the records' headers and bodies, channels in
-- the order first met (one shared channel, one per replica or one per teacher).
local by_channel = {}
local channels = {}
local function announce(channel, head, body)
  local mine = by_channel[channel]
  if mine == nil then
    mine = {{}, {}}
    by_channel[channel] = mine
    channels[#channels + 1] = channel
  end
  mine[1][#mine[1] + 1] = head
  mine[2][#mine[2] + 1] = body
end
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
-- Interest fan-out: the replicas whose lease on a teacher is live, read once per
-- batch and before anything of the item is written (a key of another type is
-- an error table, and the item is refused).
local function replicas(teacher, tag)
  local rs = replicas_of[teacher]
  if rs == nil then
    rs = redis.pcall('ZRANGE', tag .. ':replicas', string.format('%d', now), '+inf', 'BYSCORE')
    replicas_of[teacher] = rs
  end
  return rs
end
-- A teacher whose claim Redis refused: that teacher's later items are held
-- back too (answered as the first), so what is recorded keeps its order.
local held = {}
for i = 1, #batch do
  local r = batch[i]
  local eid, teacher, n, created = r[1], r[2], r[3], r[4]
  local tag = p .. ':{t:' .. teacher .. '}'
  local seen = tag .. ':seen:' .. eid
  local hist = tag .. ':hist'
  local pend = tag .. ':pending'
  -- Claiming the event id first is the duplicate check (one call, not two);
  -- an item that then cannot be recorded gives the claim back. A claim Redis
  -- refuses is answered '?' and the reason, and nothing of the item is written:
  -- on a cluster node that is a teacher whose slot is moving or is served
  -- elsewhere (a claim written is a new key, which a node makes only in a
  -- slot it owns and is not moving, so the teacher's other keys are here too);
  -- anywhere, Redis out of memory.
  local claim = held[teacher]
  if claim == nil then
    claim = redis.pcall('SET', seen, '1', 'NX', 'EX', seen_ttl)
    if type(claim) == 'table' and claim.err then
      held[teacher] = claim
    end
  end
  if type(claim) == 'table' and claim.err then
    out[i] = '?' .. tostring(claim.err)
  elseif not claim then
    out[i] = ''
  elseif r[5] == 1 and not key_ok(pend, 'hash') then
    redis.call('DEL', seen)
    out[i] = '!WRONGTYPE the pending key of teacher ' .. teacher .. ' holds another type'
  elseif per_replica and replicas(teacher, tag).err then
    redis.call('DEL', seen)
    out[i] = '!' .. tostring(replicas_of[teacher].err) .. ' (the interest key of teacher ' ..
             teacher .. ')'
  else
    -- A history key of another type fails here, before anything is written.
    local pos = redis.pcall('XADD', hist, 'MAXLEN', '~', maxlen, '*',
                            'id', eid, 'n', n, 'c', created)
    if type(pos) == 'table' then
      redis.call('DEL', seen)
      out[i] = '!' .. tostring(pos.err) .. ' (the history key of teacher ' .. teacher .. ')'
    else
      touched[hist] = true
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
      local head = {'n', teacher, eid, pos, created, received}
      if per_replica then
        for _, rid in ipairs(replicas_of[teacher]) do
          announce(p .. ':r:' .. rid, head, n)
        end
      elseif per_teacher then
        announce(tag .. ':fan', head, n)
      else
        announce(p .. ':fanout', head, n)
      end
      out[i] = pos
    end
  end
end
-- Each touched history gets its TTL once per batch, not once per notification.
for hist in pairs(touched) do
  redis.call('EXPIRE', hist, hist_ttl)
end
-- One message per channel for the whole batch, in order: a JSON line of every
-- record's header, then each notification's JSON as is, a line each (compact
-- JSON never holds a raw newline). Receivers route without parsing the bodies.
local publish = per_teacher and 'SPUBLISH' or 'PUBLISH'
for _, channel in ipairs(channels) do
  local mine = by_channel[channel]
  redis.call(publish, channel, cjson.encode(mine[1]) .. '\n' .. table.concat(mine[2], '\n'))
end
-- '1': the caller sends WAIT next, on this connection. WAIT covers the
-- connection's last write, so the call always writes (a short-lived marker in
-- this call's slot), even when every item was a duplicate: a batch sent again
-- after a WAIT that fell short then waits for the writes of the first attempt.
if ARGV[9] == '1' then
  redis.call('SET', KEYS[1] .. ':wait', ARGV[6], 'PX', 60000)
end
return out
"""
)

# A script of one call per cluster node touches the keys of every slot the
# node serves (Redis 7's flag; the claim of each item is its locality check).
_CROSS_SLOT = "#!lua flags=allow-cross-slot-keys\n"

# KEYS: pending, replicas (interest fan-out only) of one teacher. ARGV: event id, teacher, channel
# (broadcast), the replica channels' prefix (interest) or the teacher's channel
# (sharded); '1' for interest, '2' for sharded.
_ACK = (
    _NOW_MS
    + """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then
  local msg = cjson.encode({{'a', ARGV[2], ARGV[1]}})
  if ARGV[4] == '2' then
    redis.call('SPUBLISH', ARGV[3], msg)
  elseif ARGV[4] == '1' then
    -- An interest key of another type holds no lease: nobody to tell.
    local rs = redis.pcall('ZRANGE', KEYS[2], string.format('%d', now_ms()), '+inf', 'BYSCORE')
    for _, rid in ipairs(rs.err and {} or rs) do
      redis.call('PUBLISH', ARGV[3] .. rid, msg)
    end
  else
    redis.call('PUBLISH', ARGV[3], msg)
  end
end
return removed
"""
)

# KEYS: the replicas sets of some teachers (one slot). ARGV: replica id, lease
# in ms, '1' to register or renew, '0' to withdraw. Lease ends are Redis' own
# clock, here and in the readers, so the replicas' clocks do not matter. A set
# lives as long as its longest lease; ended leases are dropped on the way.
_INTEREST = (
    _NOW_MS
    + """
local rid, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
-- A key of another type (something else wrote it) is skipped and named in the
-- answer, so one such teacher does not fail the leases of the others; any
-- other error (Redis out of memory) fails the call, as before.
local skipped = {}
for _, key in ipairs(KEYS) do
  local done
  if ARGV[3] == '1' then
    done = redis.pcall('ZADD', key, string.format('%d', now + lease), rid)
  else
    done = redis.pcall('ZREM', key, rid)
  end
  if type(done) == 'table' and done.err then
    if string.find(done.err, 'WRONGTYPE', 1, true) == nil then
      return redis.error_reply(done.err)
    end
    skipped[#skipped + 1] = key
  elseif ARGV[3] == '1' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%d', now))
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', key, last[2])
  end
end
return skipped
"""
)


_I = TypeVar("_I")
_INTEREST_CHUNK = 500  # leases per script call on one Redis

# Only these mean "Redis is not there" (or a cluster between two primaries, or
# the cluster client out of redirects: ClusterError "TTL exhausted"); any other
# Redis error (a script bug, a wrong key type) is a defect and is raised as it is.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, ClusterError, TryAgainError,
                MasterDownError, SlotNotCoveredError, RedisClusterException)  # fmt: skip
# What a script meets on a node whose slot is moving when a key it touches is
# not where the script runs. The ingest script declares its keys, so Redis
# answers TRYAGAIN instead; should it still come, the call is sent again (as
# for TRYAGAIN) rather than taken as a refusal of its items.
_NON_LOCAL = "Script attempted to access a non local key"
# A node's own client also meets these when the slot map it went by is out of
# date (MOVED: the slot has moved; READONLY: the node is a replica now): read
# the map again and retry. ASK (the slot is moving) is SlotMovingError.
_STALE_MAP = (MovedError, ReadOnlyError)
# The slot map is read again at most this often (seconds) after failed calls.
_MAP_REREAD_S = 0.5


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


async def _evalsha_each(pipeline: Callable[[], Any], load: Callable[[], Awaitable[Any]],
                        script: AsyncScript, calls: list[tuple[list[str], list[Any]]], *,
                        then: tuple[Any, ...] | None = None,
                        keep: tuple[type[Exception], ...] = ()) -> list[Any]:  # fmt: skip
    """``script`` once per ``(keys, args)`` in one pipeline from ``pipeline()``,
    then the command ``then`` if given; every answer in order. A node that never
    saw the script (new, or a promoted replica) gets it from ``load()`` and the
    calls are sent again: every script here is safe to run twice (ingest
    deduplicates, leases are set again). Raises the first failed call
    (unavailable: retried; refused: narrowed by the caller), except an error of
    a type in ``keep``, which is answered in the call's place."""
    for attempt in range(2):
        pipe = pipeline()
        for keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        if then is not None:
            pipe.execute_command(*then)
        answers = await pipe.execute(raise_on_error=False)
        if attempt == 0 and any(isinstance(a, NoScriptError) for a in answers):
            await load()
            continue
        break
    for answer in answers:
        if isinstance(answer, Exception) and not isinstance(answer, keep):
            raise answer
    return list(answers)


def _s(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else v


def _wrong_type(exc: ResponseError) -> bool:
    """Redis refused a read because the key holds another type (something other
    than the router wrote it): the teacher has nothing of ours there."""
    return "WRONGTYPE" in str(exc)


def parse_pending(value: bytes | str) -> PendingItem | None:
    """A pending item as the ingest script writes it, or None for anything else
    (Redis holds what anyone with access writes; one such field must not keep a
    teacher from connecting)."""
    try:
        d = json.loads(value)
        deadline = datetime.fromisoformat(d["d"]) if d.get("d") else None
        if deadline is not None and deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        eid, pos, n = d["id"], d["p"], d["n"]
        if not (isinstance(eid, str) and eid and valid_position(pos) and isinstance(n, dict)):
            return None
        created = d.get("c") or None
        return PendingItem(eid, pos, int(d["r"]), deadline,
                           created if isinstance(created, str) else None, n)  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


class Store:
    """Thin async adapter over one Redis; every call raises StoreUnavailableError."""

    def __init__(self, client: aioredis.Redis | RedisCluster, *, prefix: str, dedupe_ttl_s: int,
                 history_maxlen: int, history_ttl_s: int, pending_max: int = 500,
                 observe: Callable[[str, float], None] | None = None,
                 replica_id: str | None = None, sharded: bool = False,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000,
                 calls_at_once: int = session_calls(REDIS_MAX_CONNECTIONS)) -> None:  # fmt: skip
        self.redis = client
        self._broken = LogThrottle()  # entries of ours holding what we never wrote
        # The connections' own calls (replay, pending, ack) in flight at once; the
        # others wait their turn. A thousand teachers connecting together would
        # otherwise want a thousand Redis connections, beyond any pool's bound.
        self._calls = asyncio.Semaphore(calls_at_once)
        # WAIT after each ingest call: replicas that must have it, and how long
        # Redis may take to say so. 0: the primary's answer is enough.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        # Waiting on a cluster: a plain client per primary (WAIT must go on the
        # connection that ran the script, which the cluster client does not keep).
        self._node_clients: dict[str, aioredis.Redis] = {}
        self._map_lock = asyncio.Lock()
        self._map_read_at = 0.0  # monotonic time the slot map was last read again
        # Called with (call, seconds) after each call to Redis, failed or not.
        self._observe = observe
        self.prefix = prefix
        self.dedupe_ttl_s = dedupe_ttl_s
        self.history_maxlen = history_maxlen
        self.history_ttl_s = history_ttl_s
        self.pending_max = pending_max
        self.cluster = isinstance(client, RedisCluster)
        # Interest fan-out: this replica's id (its channel, its leases); None
        # announces every batch on the shared channel.
        self.replica_id = replica_id
        # Sharded fan-out: each teacher's notifications on the teacher's own
        # sharded channel (``teacher_channel``), heard by the replicas subscribed.
        self.sharded = sharded
        if sharded and replica_id is not None:
            raise ValueError("sharded fan-out has no replica leases")
        # Called after a cluster call met a dead node and the slot map was read
        # again: what was registered there may not have reached its replica.
        self.on_failover: Callable[[], None] | None = None
        # Teachers whose batch part was redirected (their slot moved or is
        # moving): a sharded message went out where the slot is now, which the
        # subscription on the old primary does not hear.
        self.on_redirect: Callable[[list[str]], None] | None = None
        # A cluster client runs them as well (EVALSHA routed by the first key).
        self._ingest = AsyncScript(client, _INGEST)
        # The same script, one call per cluster node for all of its slots.
        self._ingest_node = AsyncScript(client, _CROSS_SLOT + _INGEST)
        self._ack = AsyncScript(client, _ACK)
        self._interest = AsyncScript(client, _INTEREST)

    @property
    def channel(self) -> str:
        """What this replica listens to: the shared channel (broadcast) or its own
        (interest); with sharded fan-out, the shared channel is never published."""
        if self.replica_id is None:
            return f"{self.prefix}:fanout"
        return self.replica_channel(self.replica_id)

    def replica_channel(self, replica_id: str) -> str:
        """Where the teachers' notifications and acks reach one replica when
        fan-out is by interest."""
        return f"{self.prefix}:r:{replica_id}"

    def teacher_channel(self, teacher_id: str) -> str:
        """Sharded fan-out: the teacher's channel, in the teacher's slot."""
        return f"{self.tag(teacher_id)}:fan"

    def replicas_key(self, teacher_id: str) -> str:
        """The replicas serving a teacher (leases), in the teacher's slot."""
        return f"{self.tag(teacher_id)}:replicas"

    def _note_broken(self, key: str, what: str) -> None:
        """Log entries that are skipped as unusable at most once a minute for each
        kind (not per key: the throttle's memory stays two entries), naming the
        key of the one that made the line."""
        count = self._broken.hit(what, time.monotonic())
        if count is not None:
            log.warning("skipped %s (%d times since the last such line; this one in %s); "
                        "something other than the router writes under the prefix %r", what,
                        count, key, self.prefix)  # fmt: skip

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
            # Every connection meets the dead node at once: one reading of the
            # map serves them all (each reading replaces the client's node
            # objects and their connections).
            async with self._map_lock:
                if time.monotonic() - self._map_read_at >= _MAP_REREAD_S:
                    with contextlib.suppress(*_UNAVAILABLE):
                        await self.redis.nodes_manager.initialize()
                    self._map_read_at = time.monotonic()
                    await self._drop_node_clients(set(self.redis.nodes_manager.nodes_cache))
            if self.on_failover is not None:
                self.on_failover()
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

    @contextlib.asynccontextmanager
    async def _session_call(self, call: str) -> AsyncIterator[None]:
        async with self._calls:
            with self._timed(call):
                yield

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
                if self.cluster and not self.wait_replicas:
                    result = await self._ingest_by_node(batch, received_at)
                elif self.cluster:
                    result = await self._ingest_by_slot(batch, received_at)
                elif self.wait_replicas:
                    assert isinstance(self.redis, aioredis.Redis)
                    [result] = await self._run_on(self.redis, "", [
                        ([self.hist_key(batch[0].teacher_id)],
                         self._ingest_args(batch, received_at))])  # fmt: skip
                else:
                    result = await self._ingest(keys=[self.hist_key(batch[0].teacher_id)],
                                                args=self._ingest_args(batch, received_at))  # fmt: skip
        except _STALE_MAP as exc:
            raise await self._unavailable(exc) from exc
        except (TryAgainError, AskError) as exc:
            # A slot is moving (its keys split between two primaries): not a
            # failover, and the map is right; nothing of the slot's call ran.
            raise SlotMovingError(str(exc)) from exc
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        except OutOfMemoryError as exc:  # full: nothing of the batch is refused, wait
            raise StoreFullError(str(exc)) from exc
        except ResponseError as exc:
            if self.cluster and str(exc).startswith(_NON_LOCAL):
                raise SlotMovingError(str(exc)) from exc
            raise
        out: list[str | PoisonMessageError | None] = []
        held: str | None = None
        for x in result:
            v = _s(x) or None
            if v and v[0] == "?":  # not recorded, and nothing refused: send again
                held = held or v[1:]
            out.append(PoisonMessageError("store_rejected", v[1:]) if v and v[0] == "!" else v)
        if held is not None:
            # What was recorded was announced: sent again, it is a duplicate.
            if held.startswith("OOM"):
                raise StoreFullError(held)
            raise StoreUnavailableError(f"Redis did not record part of the batch: {held}")
        return out

    def _ingest_args(self, batch: Sequence[Routable], received_at: float) -> list[str | int]:
        # UTF-8 as it is (ensure_ascii off): Lua's cjson passes it through untouched.
        rows = json.dumps([[r.event_id, r.teacher_id, r.notification_json, r.created_at or "",
                            1 if r.action_required else 0, r.priority_rank, r.deadline or ""]
                           for r in batch], ensure_ascii=False)  # fmt: skip
        return [self.prefix, self.dedupe_ttl_s, self.history_maxlen, self.history_ttl_s, rows,
                f"{received_at:.6f}", self.pending_max, self._mode,
                "1" if self.wait_replicas else "0"]  # fmt: skip

    async def _run_on(self, client: aioredis.Redis, node: str,
                      calls: list[tuple[list[str], list[Any]]]) -> list[Any]:  # fmt: skip
        """The ingest script once per ``(keys, args)``, and then ``WAIT`` when
        waiting for replicas, all on one connection of ``client`` (a pipeline);
        the scripts' answers in order.

        Raises:
            ReplicationShortError: fewer than ``wait_replicas`` replicas had the
                writes within ``wait_timeout_ms``.
            redis.RedisError: a call failed (the first failure).
        """
        pipeline, load = (lambda: client.pipeline(transaction=False),
                          lambda: client.script_load(self._ingest.script))  # fmt: skip
        if not self.wait_replicas:  # a redirect is followed by the caller
            return await _evalsha_each(pipeline, load, self._ingest, calls, keep=(MovedError,))
        *scripts, acked = await _evalsha_each(
            pipeline, load, self._ingest, calls,
            then=("WAIT", self.wait_replicas, self.wait_timeout_ms))  # fmt: skip
        if int(acked) < self.wait_replicas:
            raise ReplicationShortError(node or "redis", int(acked), self.wait_replicas,
                                        self.wait_timeout_ms)  # fmt: skip
        return scripts

    def _node_client(self, host: str, port: int | str) -> aioredis.Redis:
        """A plain client of one cluster node, made once, with the cluster's
        connection settings (password, TLS, timeouts)."""
        assert isinstance(self.redis, RedisCluster)
        name = f"{host}:{port}"
        client = self._node_clients.get(name)
        if client is None:
            kwargs: dict[str, Any] = {**self.redis.get_connection_kwargs(), "host": host,
                                      "port": int(port)}  # fmt: skip
            kwargs.pop("response_callbacks", None)
            client = aioredis.Redis(connection_pool=aioredis.ConnectionPool(**kwargs))
            self._node_clients[name] = client
        return client

    async def aclose(self) -> None:
        """Close the clients this store made (not the one it was given)."""
        await self._drop_node_clients(set())

    async def _drop_node_clients(self, keep: set[str]) -> None:
        """Close the node clients of nodes not in ``keep`` (names ``host:port``)."""
        gone = [name for name in self._node_clients if name not in keep]
        clients = [self._node_clients.pop(name) for name in gone]
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()
                await client.connection_pool.disconnect()  # a pool given is not closed with it

    @property
    def _mode(self) -> str:
        """The scripts' fan-out argument: '0' broadcast, '1' interest, '2' sharded."""
        return "2" if self.sharded else "0" if self.replica_id is None else "1"

    async def _ingest_by_node(self, batch: Sequence[Routable], received_at: float
                              ) -> list[Any]:  # fmt: skip
        """One script call per primary for all of its items (of every slot it
        serves), primaries at once; answers in the batch's order. A call per
        slot costs the router and Redis far more: a batch's teachers are spread
        over as many slots as there are teachers. Items whose claim the node
        refused (their slot is moving, or served elsewhere: the map is stale)
        were not written; they go again by slot (:meth:`_ingest_by_slot`), which
        follows a slot that moved and raises :class:`SlotMovingError` for one
        still moving. A teacher's items are on one node, in order."""
        out = await self._on_each_primary(
            [self.hist_key(r.teacher_id) for r in batch],
            lambda client, _node, idx: self._run_node_call(client, [batch[i] for i in idx],
                                                           received_at))  # fmt: skip
        again = [i for i, answer in enumerate(out) if (_s(answer) or "")[:1] == "?"]
        if again:
            for i, answer in zip(again, await self._ingest_by_slot([batch[i] for i in again],
                                                                   received_at), strict=True):  # fmt: skip
                out[i] = answer
        return out

    async def _run_node_call(self, client: aioredis.Redis, items: list[Routable],
                             received_at: float) -> list[Any]:  # fmt: skip
        [answer] = await _evalsha_each(lambda: client.pipeline(transaction=False),
                                       lambda: client.script_load(self._ingest_node.script),
                                       self._ingest_node, [([], self._ingest_args(items, received_at))])  # fmt: skip
        return list(answer)

    async def _ingest_by_slot(self, batch: Sequence[Routable], received_at: float
                              ) -> list[Any]:  # fmt: skip
        """One script call per slot; each node's calls pipelined on one connection
        of it (and a ``WAIT`` after them when waiting for replicas), nodes at
        once; answers put back in the batch's order. A teacher's items stay in
        one call, in order, so per-teacher order holds."""
        groups = self._by_slot(range(len(batch)), lambda i: self.hist_key(batch[i].teacher_id))
        parts = [[batch[i] for i in idx] for idx in groups]
        calls = [(self.ingest_keys(part), self._ingest_args(part, received_at)) for part in parts]
        answers, moved = await self._by_node(calls)
        if moved and self.on_redirect is not None:
            self.on_redirect(sorted({batch[i].teacher_id for c in moved for i in groups[c]}))
        out: list[Any] = [None] * len(batch)
        for idx, answer in zip(groups, answers, strict=True):
            for i, v in zip(idx, answer, strict=True):
                out[i] = v
        return out

    def ingest_keys(self, items: Sequence[Routable]) -> list[str]:
        """Every key the ingest script touches for ``items`` (of one slot), the
        first item's history first (the script's ``KEYS[1]``): the history,
        the pending items (if an item is one), the leases (interest fan-out) and
        the wait marker (waiting for replicas) of each teacher, and each event's
        claim. Declared, they let Redis answer ``TRYAGAIN`` for a slot a reshard
        has split, before the script runs."""
        keys: dict[str, None] = {}
        for r in items:
            tag = self.tag(r.teacher_id)
            keys[f"{tag}:hist"] = None
            if r.action_required:
                keys[f"{tag}:pending"] = None
            if self.replica_id is not None:
                keys[f"{tag}:replicas"] = None
            keys[f"{tag}:seen:{r.event_id}"] = None
        if self.wait_replicas:
            keys[f"{self.hist_key(items[0].teacher_id)}:wait"] = None
        return list(keys)

    async def _on_each_primary(self, keys: Sequence[str],
                               run: Callable[[aioredis.Redis, str, list[int]], Awaitable[list[Any]]]
                               ) -> list[Any]:  # fmt: skip
        """Item ``i`` (of ``keys``) goes to the primary of ``keys[i]``: ``run(the
        node's own client, "host:port", its items' indices)`` on every primary
        at once, and the answers back in the items' order. Raises the first
        failure (unavailable, short of replicas, or refused: narrowed)."""
        cluster = self.redis
        assert isinstance(cluster, RedisCluster)
        if not cluster.nodes_manager.slots_cache:
            await cluster.initialize()
        by_node: dict[tuple[str, int | str], list[int]] = {}
        for i, key in enumerate(keys):
            node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(key))
            by_node.setdefault((node.host, node.port), []).append(i)
        parts = list(by_node.items())
        results = await asyncio.gather(*[
            run(self._node_client(host, port), f"{host}:{port}", idx) for (host, port), idx in parts],
            return_exceptions=True)  # fmt: skip
        out: list[Any] = [None] * len(keys)
        for (_node, idx), result in zip(parts, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            for i, answer in zip(idx, result, strict=True):
                out[i] = answer
        return out

    async def _by_node(self, calls: list[tuple[list[str], list[Any]]]
                       ) -> tuple[list[Any], list[int]]:  # fmt: skip
        """Each primary's share of ``calls`` (and a ``WAIT``) on one connection of
        it, every primary at once, through the node's own client: the cluster
        pipeline would find the slot and node of every call again. The answers
        in the order of ``calls``, and which calls were redirected."""
        out = await self._on_each_primary(
            [keys[0] for keys, _args in calls],
            lambda client, node, idx: self._run_on(client, node, [calls[i] for i in idx]),
        )
        # A slot that moved (MOVED) is for the cluster client, which follows the
        # redirect and learns the new map. Waiting for replicas never gets here:
        # a WAIT covers only its own connection's writes, so such a batch is
        # retried. (A slot still moving was answered ASK or TRYAGAIN, raised.)
        moved = [i for i, answer in enumerate(out) if isinstance(answer, MovedError)]
        if moved:
            again = await self._pipelined(self._ingest, [calls[i] for i in moved])
            for i, answer in zip(moved, again, strict=True):
                out[i] = answer
        return out, moved

    def _by_slot(self, items: Iterable[_I], key: Callable[[_I], str]) -> list[list[_I]]:
        """``items`` grouped by the slot of their key, each group in order."""
        assert isinstance(self.redis, RedisCluster)
        groups: dict[int, list[_I]] = {}
        for it in items:
            groups.setdefault(self.redis.keyslot(key(it)), []).append(it)
        return list(groups.values())

    async def _pipelined(self, script: AsyncScript, calls: list[tuple[list[str], list[Any]]]
                         ) -> list[Any]:  # fmt: skip
        """Run a script once per ``(keys, args)``, every call of one slot, in one
        cluster pipeline; the answers in order. Raises the first failed call."""
        cluster = self.redis
        assert isinstance(cluster, RedisCluster)

        async def load_everywhere() -> None:
            await cluster.execute_command("SCRIPT LOAD", script.script,
                                          target_nodes=RedisCluster.ALL_NODES)  # fmt: skip

        return await _evalsha_each(cluster.pipeline, load_everywhere, script, calls)

    async def register(self, teachers: Sequence[str], *, lease_ms: int) -> None:
        """Register (or renew) this replica's lease on ``teachers``.

        Raises:
            StoreUnavailableError: Redis is not reachable; nothing is known of
                what was set.
        """
        await self._leases(teachers, [lease_ms, "1"])

    async def withdraw(self, teachers: Sequence[str]) -> None:
        """End this replica's lease on ``teachers``.

        Raises:
            StoreUnavailableError: as :meth:`register`.
        """
        await self._leases(teachers, [0, "0"])

    async def _leases(self, teachers: Sequence[str], args: list[str | int]) -> None:
        assert self.replica_id is not None, "leases are for interest fan-out"
        if not teachers:
            return
        args = [self.replica_id, *args]
        try:
            with self._timed("interest"):
                if self.cluster:
                    groups = self._by_slot(teachers, self.replicas_key)
                    answers = await self._pipelined(self._interest,
                                                    [([self.replicas_key(t) for t in g], args)
                                                     for g in groups])  # fmt: skip
                else:
                    answers = []
                    for i in range(0, len(teachers), _INTEREST_CHUNK):  # Redis stays responsive
                        keys = [self.replicas_key(t) for t in teachers[i : i + _INTEREST_CHUNK]]
                        answers.append(await self._interest(keys=keys, args=args))
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        for skipped in answers:
            for key in skipped or ():
                self._note_broken(_s(key) or "", "an interest key that is not a sorted set")

    async def replay_count(self, teacher_id: str, after: str | None, limit: int) -> int:
        """How many entries a resume from ``after`` would replay, counting at
        most ``limit`` (and at most the history)."""
        start = next_position(after) if after is not None else None
        if start is None:
            return 0
        try:
            async with self._session_call("replay_count"):
                rows = await self.redis.xrange(self.hist_key(teacher_id), min=start,
                                               max="+", count=min(limit, self.history_maxlen))  # fmt: skip
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        except ResponseError as exc:
            if not _wrong_type(exc):
                raise
            return 0  # no history to replay (see _do_replay)
        return len(rows or ())

    async def replay(self, teacher_id: str, after: str | None) -> Replay:
        async with self._session_call("replay"):
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
            start = next_position(after)
            rows = await self.redis.xrange(key, min=start, max="+") if start is not None else []
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        except ResponseError as exc:
            if not _wrong_type(exc):
                raise
            # Not a stream: nothing of ours to replay (new notifications for the
            # teacher are dead-lettered store_rejected until the key is removed).
            self._note_broken(key, "a history key that is not a stream")
            return Replay([], after is None or after == "0-0", None)
        entries = []
        for pos, fields in rows or ():
            f = {_s(k): _s(v) for k, v in (fields or {}).items()}
            eid, n = f.get("id"), f.get("n")
            # The script writes the id and a validated JSON object: anything else
            # is skipped rather than sent (a client cannot parse a broken frame).
            if not eid or not n or n[0] != "{" or n[-1] != "}" or "\n" in n:
                self._note_broken(key, "a history entry that is not one the router wrote")
                continue
            entries.append(HistoryEntry(_s(pos) or "", eid, n, f.get("c") or None))
        return Replay(entries, recovered, head)

    async def pending(self, teacher_id: str, *, now: datetime, limit: int) -> list[PendingItem]:
        async with self._session_call("pending"):
            return await self._do_pending(teacher_id, now=now, limit=limit)

    async def _do_pending(self, teacher_id: str, *, now: datetime, limit: int) -> list[PendingItem]:
        """Pending action-required items, highest priority first, oldest first within
        a priority. Items past their deadline are dropped from the set."""
        key = self.pending_key(teacher_id)
        try:
            raw = await self.redis.hgetall(key)
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        except ResponseError as exc:
            if not _wrong_type(exc):
                raise
            self._note_broken(key, "a pending key that is not a hash")
            return []
        items: list[PendingItem] = []
        expired: list[str] = []
        for field, value in raw.items():
            item = parse_pending(value)
            if item is None:  # not one the ingest script wrote: unusable, so dropped
                expired.append(_s(field) or "")
                self._note_broken(key, "a pending item that is not one the router wrote")
            elif item.deadline is not None and item.deadline <= now:
                expired.append(_s(field) or "")
            else:
                items.append(item)
        if expired:
            try:
                await self.redis.hdel(key, *expired)
            except _UNAVAILABLE as exc:
                raise await self._unavailable(exc) from exc
        items.sort(key=lambda it: (-it.rank, position_key(it.position)))
        return items[:limit]

    async def ack(self, teacher_id: str, event_id: str) -> bool:
        async with self._session_call("ack"):
            return await self._do_ack(teacher_id, event_id)

    async def _do_ack(self, teacher_id: str, event_id: str) -> bool:
        """Clear a pending item for every connection of the teacher; False if not pending."""
        try:
            channel = (self.teacher_channel(teacher_id) if self.sharded
                       else self.channel if self.replica_id is None else self.replica_channel(""))  # fmt: skip
            # The leases only with interest fan-out: a key declared and never
            # made would hold the ack back while a reshard moves the slot.
            keys = [self.pending_key(teacher_id)]
            if self.replica_id is not None:
                keys.append(self.replicas_key(teacher_id))
            n = await self._ack(keys=keys, args=[event_id, teacher_id, channel, self._mode])
        except _UNAVAILABLE as exc:
            raise await self._unavailable(exc) from exc
        except ResponseError as exc:
            if not _wrong_type(exc):
                raise
            self._note_broken(keys[0], "an ack on a key of another type")
            return False  # nothing of ours is pending there
        return bool(n)
