"""pytest plugin: routers (in-process or as a real `outbox router run` process),
producers and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import redis
from confluent_kafka import Producer
from redis.cluster import RedisCluster
from websockets.asyncio.client import ClientConnection, connect

from contracts import CATALOG, DeadlineRule, build_notification
from contracts.catalog import requires_batch_id, requires_class_id
from contracts.notification import TeacherNotificationRequestedV1
from router.app import Router
from router.auth import mint
from router.settings import RouterSettings
from stack.manager import StackManager
from stack.procs import free_port, stop_pid
from stack.settings import StackSettings
from stack.state import DEV_SESSION_TIMEOUT_MS, Component, StackState
from tests.fix_kafka import create_topic

SECRET = "test-secret-please-change-0123456789"


def notification(
    t: str, teacher: str, i: int = 0, **payload: Any
) -> TeacherNotificationRequestedV1:
    dl = (
        datetime.now(UTC) + timedelta(hours=1)
        if CATALOG[t].deadline is DeadlineRule.REQUIRED
        else None
    )
    return build_notification(
        t, teacher, {"i": i, **payload}, f"corr-{i}",
        batch_id="b-1" if requires_batch_id(t) else None,
        class_id="c-1" if requires_class_id(t) else None,
        deadline_timestamp=dl,
    )  # fmt: skip


@dataclass
class Env:
    """One test's isolated topic, group and Redis prefix."""

    stack: StackState
    unique: str
    topic: str
    settings: RouterSettings
    producer: Producer = field(init=False)

    def __post_init__(self) -> None:
        self.producer = Producer({"bootstrap.servers": self.stack.kafka_bootstrap, "linger.ms": 1})

    def produce(self, n: TeacherNotificationRequestedV1 | bytes, event_id: str | None = None,
                *, headers: list[tuple[str, bytes]] | None = None, key: str | None = None) -> str:  # fmt: skip
        eid = event_id or str(uuid.uuid4())
        value = n if isinstance(n, bytes) else n.to_json().encode()
        k = key or (n.teacher_id if not isinstance(n, bytes) else "poison")
        hdrs = headers if headers is not None else [
            ("id", eid.encode()),
            ("created_at", datetime.now(UTC).isoformat().encode()),
        ]  # fmt: skip
        self.producer.produce(self.topic, value=value, key=k.encode(), headers=hdrs)
        return eid

    def flush(self) -> None:
        assert self.producer.flush(10) == 0

    def token(self, teacher: str, ttl: int = 3600, **kw: Any) -> str:
        return mint(SECRET, teacher, ttl, now=time.time(), **kw)


def router_settings(stack: StackState, unique: str, **kw: Any) -> RouterSettings:
    base: dict[str, Any] = {
        "kafka_bootstrap": stack.kafka_bootstrap,
        "redis_url": stack.redis_url,
        "topic": f"rt.{unique}",
        "dlq_topic": f"rt.{unique}.dlq",
        "group_id": f"router-{unique}",
        "redis_prefix": f"t{unique}",
        "router_port": 0,
        "jwt_secret": SECRET,
        "kafka_session_timeout_ms": DEV_SESSION_TIMEOUT_MS,
        "kafka_max_poll_interval_ms": 10000,
        "auth_timeout_s": 1.5,
    }
    base.update(kw)
    return RouterSettings(**base)


@contextmanager
def make_env(stack: StackState, unique: str, cluster_url: str | None = None) -> Iterator[Env]:
    """An Env on the stack's Redis, or on the Redis Cluster at ``cluster_url``."""
    extra: dict[str, Any] = {"redis_url": cluster_url, "redis_cluster": True} if cluster_url else {}
    s = router_settings(stack, unique, **extra)
    create_topic(stack.kafka_bootstrap, s.topic, 3)
    create_topic(stack.kafka_bootstrap, s.dlq_topic, 1)
    e = Env(stack, unique, s.topic, s)
    yield e
    r: Any = (RedisCluster.from_url(cluster_url) if cluster_url
              else redis.Redis.from_url(stack.redis_url))  # fmt: skip
    for key in list(r.scan_iter(f"t{unique}:*", count=1000)):
        r.delete(key)  # one by one: a cluster refuses keys of several slots at once
    r.close()


@pytest.fixture
def env(stack: StackState, unique: str) -> Iterator[Env]:
    with make_env(stack, unique) as e:
        yield e


@dataclass
class Cluster:
    """A running Redis Cluster: a URL to reach it and its nodes (with pids)."""

    url: str
    nodes: list[Component]


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    """A real Redis Cluster on loopback (3 primaries, 3 replicas), for the session."""
    tmp = Path(tempfile.mkdtemp(prefix="outbox-test-cluster-"))
    manager = StackManager(StackSettings(), state_dir=tmp / "state")
    try:
        nodes = manager.start_redis_cluster()
        yield Cluster(nodes[0].url, nodes)
    finally:
        manager.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(params=["single", "cluster", "interest", "sharded"])
def any_env(request: pytest.FixtureRequest, stack: StackState, unique: str) -> Iterator[Env]:
    """The same test on one Redis, on a Redis Cluster, and with interest and
    sharded fan-out on the cluster (both on one Redis have tests of their own)."""
    on_cluster = request.param != "single"
    url = request.getfixturevalue("redis_cluster").url if on_cluster else None
    with make_env(stack, unique, url) as e:
        if request.param in ("interest", "sharded"):
            e.settings = e.settings.model_copy(update={"fanout": request.param})
        yield e


@asynccontextmanager
async def running_router(settings: RouterSettings) -> AsyncIterator[Router]:
    router = Router(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(router.run(stop))
    try:
        await asyncio.wait_for(router.started.wait(), 30)
        yield router
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_ready(port: int, timeout: float = 30) -> None:
    """Until /readyz says ok and the replica owns partitions (a test that
    produces right away then measures delivery, not the group's join)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                r = await client.get(f"http://127.0.0.1:{port}/readyz")
                if r.status_code == 200 and "kafka_assigned ok" in r.text:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("router not ready")


class Client:
    """A real WebSocket client for one teacher. Clients a test leaves open (a
    failed assertion, a killed router) are closed after it by ``_close_clients``."""

    live: ClassVar[set[Client]] = set()

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        Client.live.add(self)

    @classmethod
    async def open(cls, port: int, token: str, *, resume: str | None = None,
                   header: bool = False, **kw: Any) -> Client:  # fmt: skip
        url = f"ws://127.0.0.1:{port}/ws"
        if header:
            if resume:
                url += f"?resume={resume}"
            ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, **kw)
        else:
            ws = await connect(url, **kw)
            auth: dict[str, Any] = {"type": "auth", "token": token}
            if resume:
                auth["resume"] = resume
            await ws.send(json.dumps(auth))
        c = cls(ws)
        await c.until(lambda f: f["type"] == "replay_done")
        return c

    async def until(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for f in self.frames:
            if pred(f):
                return f
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"frame not received; last frames: {self.frames[-3:]}")
            try:
                raw = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                raise AssertionError(
                    f"frame not received in {timeout} s; last frames: {self.frames[-3:]}"
                ) from None
            f = json.loads(raw)
            self.frames.append(f)
            if pred(f):
                return f

    def notifications(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "notification"]

    async def collect(self, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        """Until ``n`` notification frames have been received in total."""
        await self.until(lambda f: len(self.notifications()) >= n, timeout)
        return self.notifications()

    async def quiet(self, seconds: float = 0.5) -> None:
        """Read whatever arrives for ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.frames.append(json.loads(await asyncio.wait_for(self.ws.recv(), left)))
            except TimeoutError:
                return

    @property
    def position(self) -> str | None:
        pos = None
        for f in self.frames:
            if f["type"] == "notification" and not f["pending"]:
                pos = f["position"]
            elif f["type"] == "replay_done":
                pos = f["position"] or pos
        return pos

    async def close(self) -> None:
        Client.live.discard(self)
        await self.ws.close()


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    # Leftovers of a finished test (a failed assertion, a killed router): a
    # peer that never answers the close costs a second, not websockets' 10 s.
    for c in list(Client.live):
        c.ws.close_timeout = 1
    await asyncio.gather(*(c.close() for c in list(Client.live)))


@dataclass
class RouterProcess:
    """`outbox router run` as a real process, stopped by pid."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_pid(self.proc.pid, expect="router", timeout=20)
            self.proc.wait(10)


def start_router_process(
    settings: RouterSettings,
    log_dir: Path,
    port: int | None = None,
    *,
    limit_fds: int | None = None,
) -> RouterProcess:
    port = port or free_port()
    env = dict(os.environ)
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(value)
        env[f"OUTBOX_{name.upper()}"] = str(value)
    env["OUTBOX_JWT_SECRET"] = SECRET
    env["OUTBOX_ROUTER_PORT"] = str(port)
    log = log_dir / f"router-{port}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "outbox.cli", "router", "run"], env=env,
                                stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
    if limit_fds:  # set from outside: the router is still importing, far below it
        import resource

        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (limit_fds, limit_fds))
    return RouterProcess(proc, port, log)
