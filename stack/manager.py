"""Bring the embedded stack up and down.

Order: the broker first (Connect needs it), then Kafka Connect, which takes
20-30 s to boot, and while it boots Postgres and Redis. Any failure stops
whatever was already started, so half a stack is never left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any

import httpx

from relay.resources import data_dir
from relay.topics import ensure_topics
from stack import procs
from stack.artifacts import Layout
from stack.errors import ComponentStartError, PrerequisiteError, StackError, StackStateError
from stack.settings import StackSettings
from stack.state import STATE_FILE, Component, StackState, load

log = logging.getLogger(__name__)
_QUIET_KAFKA = logging.getLogger("stack.librdkafka.probe")
_QUIET_KAFKA.setLevel(logging.CRITICAL)

NOTIFICATION_TOPIC = "huleedu.notification.teacher.requested.v1"
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
PG_DATABASE = "outbox"


def _wait(
    what: str,
    check: Callable[[], bool],
    proc: subprocess.Popen[bytes] | None,
    log_path: Path,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ComponentStartError(
                what, f"the process exited with status {proc.returncode}", procs.tail(log_path)
            )
        try:
            if check():
                return
        except Exception as exc:  # any probe failure means "not ready yet"
            last_error = str(exc)
        time.sleep(0.2)
    reason = f"not ready after {timeout:.0f} s"
    if last_error:
        reason += f" (last probe error: {last_error})"
    raise ComponentStartError(what, reason, procs.tail(log_path))


def check_prerequisites(settings: StackSettings) -> None:
    """Raise :class:`PrerequisiteError` naming the first missing system part."""
    if not (settings.pg_bin_dir / "postgres").exists():
        raise PrerequisiteError(
            f"PostgreSQL 15 server binaries ({settings.pg_bin_dir})",
            "install them with `apt-get install postgresql-15`",
        )
    if shutil.which(settings.redis_server) is None:
        raise PrerequisiteError("redis-server", "install it with `apt-get install redis-server`")
    if shutil.which(settings.java) is None:
        raise PrerequisiteError(
            "Java 17", "install it with `apt-get install openjdk-17-jre-headless`"
        )
    if not Layout(settings.cache_dir).is_complete():
        raise PrerequisiteError(
            f"the stack artifacts ({settings.cache_dir})", "run `outbox stack install` first"
        )


def _pg_user(settings: StackSettings) -> str | None:
    """The unprivileged user Postgres runs as when we are root (created if needed)."""
    if os.getuid() != 0:
        return None
    try:
        pwd.getpwnam(settings.pg_user)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                settings.pg_user,
            ],
            check=True,
            capture_output=True,
        )
    return settings.pg_user


class StackManager:
    """Start and stop the four components; one instance per CLI command."""

    def __init__(self, settings: StackSettings, *, state_dir: Path | None = None,
                 progress: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.state_dir = (state_dir or settings.state_dir).resolve()
        self.layout = Layout(settings.cache_dir)
        self._started: list[Component] = []
        self._progress = progress or (lambda _line: None)

    # -- up ---------------------------------------------------------------

    def up(self) -> StackState:
        """Start every component and write the state file.

        Raises:
            StackError: a prerequisite is missing, a stack already runs in the
                state dir, or a component did not become ready.
        """
        check_prerequisites(self.settings)
        if (self.state_dir / STATE_FILE).exists():
            existing = load(self.state_dir)
            if any(procs.alive(c.pid) for c in existing.components):
                raise StackStateError(
                    str(self.state_dir),
                    "a stack is already running here; `outbox stack down` stops it",
                )
            self._clean_state_dir()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        with self._stopping_on_failure():
            return self._up()

    def _up(self) -> StackState:
        say = self._progress
        broker = self._start_broker()
        say(f"broker    ready at {broker.url}")
        workers = [
            self._spawn_connect(broker.url, index=i) for i in range(self.settings.connect_workers)
        ]
        connect = workers[0][0]
        say(f"connect   starting {len(workers)} worker(s) of one group (about 30 s; Postgres and "
            "Redis meanwhile)")  # fmt: skip
        postgres = self._start_postgres()
        say(f"postgres  ready at {postgres.url}")
        if self.settings.redis == "cluster":
            cluster = self._start_redis_cluster(replicas=self.settings.redis_replicas)
            redis = cluster[0]
            say(f"redis     a cluster of {len(cluster)} nodes, ready at {redis.url} and others")
        else:
            cluster = [self._start_redis()]
            redis = cluster[0]
            say(f"redis     ready at {redis.url}")
        ensure_topics(broker.url, NOTIFICATION_TOPIC, self.settings.topic_partitions)
        say("topics    the notification topic and the registered domain-event topics exist")
        for comp, proc in workers:
            _wait(comp.name, _connect_check(comp.url), proc, Path(comp.log), timeout=180)
        state = StackState(
            state_dir=str(self.state_dir),
            pg_dsn=postgres.url,
            redis_url=redis.url,
            kafka_bootstrap=broker.url,
            connect_url=connect.url,
            connect_urls=[c.url for c, _ in workers],
            topic=NOTIFICATION_TOPIC,
            components=[postgres, *cluster, broker, *(c for c, _ in workers)],
            redis_cluster=self.settings.redis == "cluster",
        )
        state.save()
        return state

    def _register(self, comp: Component) -> Component:
        self._started.append(comp)
        return comp

    def _start_broker(self) -> Component:
        port = procs.free_port()
        log_path = self.state_dir / "broker.log"
        url = f"127.0.0.1:{port}"
        argv = [
            str(self.layout.tansu),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {"PATH": os.environ.get("PATH", ""), "RUST_LOG": "warn"}
        proc = procs.spawn(argv, log_path, env=env)
        comp = self._register(
            Component(
                name="broker",
                pid=proc.pid,
                port=port,
                url=url,
                log=str(log_path),
                expect="tansu",
            )
        )
        _wait("broker", lambda: _broker_ready(url), proc, log_path, timeout=30)
        return comp

    def _spawn_connect(self, bootstrap: str, port: int | None = None, *, index: int = 0,
                       group_id: str = "outbox-stack-connect") -> tuple[Component, subprocess.Popen[bytes]]:  # fmt: skip
        """Start Connect worker ``index`` of the group (``connect``, ``connect-2``, ...)."""
        port = port or procs.free_port()
        name = "connect" if index == 0 else f"connect-{index + 1}"
        cfg_dir = data_dir("connect-config")
        worker = Template((cfg_dir / "worker.properties").read_text()).substitute(
            bootstrap=bootstrap,
            group_id=group_id,
            rest_port=port,
            session_timeout_ms=self.settings.connect_session_timeout_ms,
            heartbeat_interval_ms=self.settings.connect_session_timeout_ms // 3,
        )
        props = self.state_dir / f"{name}-worker.properties"
        props.write_text(worker)
        log_path = self.state_dir / f"{name}.log"
        argv = [
            self.settings.java,
            f"-Xmx{self.settings.connect_heap}",
            *shlex.split(self.settings.connect_jvm_options),
            f"-Dlog4j2.configurationFile=file:{cfg_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.layout.connect_lib}/*",
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(props),
        ]
        proc = procs.spawn(argv, log_path, env=dict(os.environ))
        comp = self._register(
            Component(
                name=name,
                pid=proc.pid,
                port=port,
                url=f"http://127.0.0.1:{port}",
                log=str(log_path),
                expect="ConnectDistributed",
            )
        )
        return comp, proc

    @staticmethod
    def _connect_ready(url: str) -> bool:
        resp = httpx.get(f"{url}/connector-plugins", timeout=2.0)
        return resp.status_code == 200 and POSTGRES_CONNECTOR in resp.text

    def _start_postgres(self) -> Component:
        user = _pg_user(self.settings)
        bin_dir = self.settings.pg_bin_dir
        data = self.state_dir / "pg" / "data"
        sock = self.state_dir / "pg" / "sock"
        data.mkdir(parents=True, exist_ok=True)
        sock.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _check_traversable(self.state_dir, user)
            uid = pwd.getpwnam(user).pw_uid
            for p in (data.parent, data, sock):
                os.chown(p, uid, -1)
        data.chmod(0o700)
        log_path = self.state_dir / "postgres.log"
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=user,
            check=False,
        )
        if init.returncode != 0:
            raise ComponentStartError("postgres", "initdb failed", (init.stderr or "")[-2000:])
        port = procs.free_port()
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(sock),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"wal_level={self.settings.pg_wal_level}",
            "-c",
            "max_replication_slots=10",
            "-c",
            "max_wal_senders=10",
            "-c",
            "max_connections=200",
            # A throwaway dev database: skip fsync for speed. Never in production.
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ]
        proc = procs.spawn(argv, log_path, user=user)
        dsn = f"postgresql://postgres@127.0.0.1:{port}/{PG_DATABASE}"
        comp = self._register(
            Component(
                name="postgres",
                pid=proc.pid,
                port=port,
                url=dsn,
                log=str(log_path),
                expect="postgres",
            )
        )
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _wait("postgres", lambda: _pg_ready(admin), proc, log_path, timeout=60)
        create_database(admin, PG_DATABASE)
        return comp

    def _start_redis(
        self, port: int | None = None, *, name: str = "redis", replica_of: Component | None = None
    ) -> Component:
        port = port or procs.free_port()
        rdir = self.state_dir / name
        rdir.mkdir(parents=True, exist_ok=True)
        log_path = self.state_dir / f"{name}.log"
        argv = [
            self.settings.redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            str(rdir),
            "--daemonize",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ]
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of.port)]
        proc = procs.spawn(argv, log_path)
        url = f"redis://127.0.0.1:{port}/0"
        comp = self._register(
            Component(
                name=name,
                pid=proc.pid,
                port=port,
                url=url,
                log=str(log_path),
                expect="redis-server",
            )
        )
        _wait(name, lambda: _redis_ready(url), proc, log_path, timeout=30)
        return comp

    def start_redis_with_replicas(self, replicas: int = 1) -> list[Component]:
        """Start only a Redis primary and ``replicas`` replicas of it (plain
        replication, no cluster), each a process with its own data directory and
        log; ready once every replica is in sync. The primary comes first. For
        the tests and benchmarks of ``OUTBOX_REDIS_WAIT_REPLICAS``."""
        out: list[Component] = []

        def start() -> Component:
            out.append(self._start_redis())
            for i in range(1, replicas + 1):
                out.append(self._start_redis(name=f"redis-replica-{i}", replica_of=out[0]))
            _wait("redis replication", lambda: _replicas_in_sync(out[0].url, out[1:]), None,
                  Path(out[-1].log), timeout=60)  # fmt: skip
            return out[0]

        self._start_alone(start)
        return out

    def _start_redis_cluster(self, primaries: int = 3, replicas: int = 1) -> list[Component]:
        """A Redis Cluster on loopback: ``primaries`` primaries with ``replicas``
        replicas each, AOF on, a 1 s node timeout (a failover in about 2 s). A
        replica always stands for election (validity factor 0): on an idle dev
        cluster its last word from the primary can be older than the default
        allows, and it would never take over. Ready once every replica is in
        sync with its primary (the first sync starts at once, not after Redis'
        5 s wait for more replicas), so a primary lost right away has a copy."""
        ports: list[int] = []
        comps = [self._start_cluster_node(i, ports) for i in range(primaries * (1 + replicas))]
        cli = shutil.which("redis-cli") or "redis-cli"
        create = subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                                capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        if create.returncode != 0:
            raise ComponentStartError("redis-cluster", "redis-cli --cluster create failed",
                                      (create.stdout + create.stderr)[-2000:])  # fmt: skip
        _wait("redis-cluster", lambda: all(_cluster_ok(c.url, len(ports), replicas) for c in comps),
              None, Path(comps[0].log), timeout=60)  # fmt: skip
        return comps

    def _start_cluster_node(self, i: int, taken: list[int], tries: int = 3) -> Component:
        """Cluster node ``i`` on a free pair of ports not in ``taken`` (which gets
        its port). A port can still be taken between the check and the bind: then
        the node exits saying so, and it is started again on another pair."""
        for attempt in range(1, tries + 1):
            port = procs.free_port_pair()
            if port in taken:
                continue
            rdir = self.state_dir / "redis-cluster" / str(port)
            rdir.mkdir(parents=True, exist_ok=True)
            log_path = self.state_dir / f"redis-cluster-{i}.log"
            argv = [self.settings.redis_server, "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", str(rdir / "nodes.conf"),
                    "--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
                    "--repl-ping-replica-period", "1", "--repl-diskless-sync-delay", "0",
                    "--save", "", "--appendonly", "yes",
                    "--appendfsync", "everysec", "--dir", str(rdir), "--daemonize", "no"]  # fmt: skip
            proc = procs.spawn(argv, log_path)
            url = f"redis://127.0.0.1:{port}/0"
            comp = self._register(Component(name=f"redis-cluster-{i}", pid=proc.pid, port=port,
                                            url=url, log=str(log_path), expect="redis-server"))  # fmt: skip
            try:
                _wait(f"redis-cluster-{i}", _ready_check(url), proc, log_path, timeout=30)
            except ComponentStartError:
                in_use = "Address already in use" in log_path.read_text(errors="replace")
                if attempt == tries or not in_use or proc.poll() is None:
                    raise
                self._started.remove(comp)  # it exited: nothing to stop
                log.info("redis-cluster-%d: port %d was taken meanwhile; trying another", i, port)
                continue
            taken.append(port)
            return comp
        raise ComponentStartError(f"redis-cluster-{i}", "no free pair of ports after "
                                  f"{tries} tries", "")  # fmt: skip

    def start_redis_cluster(self, primaries: int = 3, replicas: int = 1) -> list[Component]:
        """Start only a Redis Cluster (for the router's tests against a cluster)."""
        out: list[Component] = []

        def start() -> Component:
            out.extend(self._start_redis_cluster(primaries, replicas))
            return out[0]

        self._start_alone(start)
        return out

    def start_connect_cluster(self, bootstrap: str, workers: int, group_id: str) -> list[Component]:
        """Start only ``workers`` Connect workers of a group of their own (own
        internal topics) and wait until each answers; for tests of a cluster."""
        out: list[Component] = []

        def start() -> Component:
            spawned = [
                self._spawn_connect(bootstrap, index=i, group_id=group_id) for i in range(workers)
            ]
            for comp, proc in spawned:
                _wait(comp.name, _connect_check(comp.url), proc, Path(comp.log), timeout=240)
                out.append(comp)
            return out[0]

        self._start_alone(start)
        return out

    def restart_connect(self, state: StackState) -> StackState:
        """Start the Connect worker again on its port (after a crash or kill -9)
        and wait until it is ready; the state file gets the new pid."""
        old = state.component("connect")
        procs.stop_pid(old.pid, expect=old.expect, sig=signal.SIGKILL, timeout=5)
        comp, proc = self._spawn_connect(state.kafka_bootstrap, port=old.port)
        _wait("connect", lambda: self._connect_ready(comp.url), proc, Path(comp.log), timeout=180)
        state.components = [comp if c.name == "connect" else c for c in state.components]
        state.save()
        self._started.clear()
        return state

    def start_postgres(self) -> Component:
        """Start only a Postgres (for tests of other settings, e.g. wal_level=replica)."""
        return self._start_alone(self._start_postgres)

    def start_redis(self, port: int | None = None) -> Component:
        """Start only a Redis (for outage tests); again on ``port`` with the same data
        directory after it was stopped."""
        return self._start_alone(lambda: self._start_redis(port))

    def _start_alone(self, start: Callable[[], Component]) -> Component:
        check_prerequisites(self.settings)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        with self._stopping_on_failure():
            return start()

    @contextlib.contextmanager
    def _stopping_on_failure(self) -> Iterator[None]:
        """Whatever ends a start early (a failure, Ctrl-C, SIGTERM, a closed
        terminal) stops what this manager started: there is no state file yet
        to find it by."""
        with procs.stop_signals_unwind():
            try:
                yield
            except BaseException:
                self._stop_started()
                raise

    def stop_started(self) -> None:
        """Stop what this manager started itself (by pid)."""
        self._stop_started()

    # -- down -------------------------------------------------------------

    def _stop_started(self) -> None:
        for comp in reversed(self._started):
            _stop_component(comp)
        self._started.clear()

    def _clean_state_dir(self, *, keep_logs: bool = False) -> None:
        if not self.state_dir.exists():
            return
        if not keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            return
        for entry in self.state_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.suffix != ".log":
                entry.unlink(missing_ok=True)

    def down(self, *, keep_logs: bool = False) -> list[str]:
        """Stop every component of the stack in the state dir; safe to run twice.
        Deletes its data, and its logs too unless ``keep_logs``.

        Returns the names of the components that were running.
        """
        try:
            state = load(self.state_dir)
        except StackStateError:
            self._clean_state_dir(keep_logs=keep_logs)
            return []
        stopped = [c.name for c in reversed(state.components) if _stop_component(c)]
        self._clean_state_dir(keep_logs=keep_logs)
        return stopped


def _stop_component(comp: Component) -> bool:
    # Postgres shuts down fastest and cleanly on SIGINT ("fast" mode).
    sig = signal.SIGINT if comp.name == "postgres" else signal.SIGTERM
    return procs.stop_pid(comp.pid, expect=comp.expect, sig=sig)


def _check_traversable(path: Path, user: str) -> None:
    """Fail early when ``user`` cannot reach ``path`` (a closed parent folder)."""
    for parent in [path, *path.parents]:
        if not parent.stat().st_mode & 0o001:
            raise ComponentStartError(
                "postgres",
                f"{parent} is closed to other users, so the unprivileged user {user!r} "
                "that runs Postgres cannot reach its data directory; pick a --state-dir "
                f"under an open folder (such as the temp dir) or `chmod o+x {parent}`",
            )


def _pg_ready(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


def create_database(admin_dsn: str, name: str) -> None:
    """Create database ``name`` unless it exists."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` and its replication slots (DROP DATABASE refuses
    while a slot exists); a walsender still exiting is waited for."""
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        slots = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall()
        for (slot,) in slots:
            for _ in range(100):
                conn.execute(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE slot_name = %s AND active_pid IS NOT NULL",
                    (slot,),
                )
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
                except psycopg.Error:
                    break
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _connect_check(url: str) -> Callable[[], bool]:
    return lambda: StackManager._connect_ready(url)


def _ready_check(url: str) -> Callable[[], bool]:
    return lambda: _redis_ready(url)


def _cluster_ok(url: str, nodes: int, replicas: int) -> bool:
    """The node sees the whole cluster healthy: every slot served, every node
    known, and its replication in sync (a primary with all ``replicas`` online, a
    replica with its link to the primary up)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        info: dict[str, Any] = client.cluster("info")
        known: dict[str, Any] = client.cluster("nodes")
        repl: dict[str, Any] = client.info("replication")
    finally:
        client.close()
    return (info.get("cluster_state") == "ok" and int(info.get("cluster_slots_ok", 0)) == 16384
            and len(known) == nodes and _in_sync(repl, replicas))  # fmt: skip


def _in_sync(repl: dict[str, Any], replicas: int) -> bool:
    """From a node's ``INFO replication``: a primary with all ``replicas``
    online, or a replica with its link to the primary up."""
    if repl.get("role") == "master":
        online = [v for k, v in repl.items() if k.startswith("slave") and isinstance(v, dict)
                  and v.get("state") == "online"]  # fmt: skip
        return len(online) == replicas
    return repl.get("master_link_status") == "up"


def _replicas_in_sync(primary_url: str, replicas: list[Component]) -> bool:
    """The primary has every replica ``online`` and every replica's link is up."""
    import redis

    def replication(url: str) -> dict[str, Any]:
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            return client.info("replication")
        finally:
            client.close()

    return all(_in_sync(replication(url), len(replicas))
               for url in [primary_url, *(r.url for r in replicas)])  # fmt: skip


def _redis_ready(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _broker_ready(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    # A broker still starting refuses connections: expected, so not logged.
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _QUIET_KAFKA}
    admin = AdminClient(conf)
    md = admin.list_topics(timeout=2)
    return md.brokers is not None and len(md.brokers) > 0


def health(state: StackState) -> dict[str, bool]:
    """Probe each component; ``True`` where it answers."""
    # By the name's start: redis-cluster-N are Redis nodes, connect-N Connect workers.
    probes: dict[str, Callable[[str], bool]] = {
        "postgres": lambda _url: _pg_ready(state.pg_dsn),
        "redis": _redis_ready,
        "broker": _broker_ready,
        "connect": StackManager._connect_ready,
    }
    out: dict[str, bool] = {}
    for comp in state.components:
        ok = procs.alive(comp.pid)
        if ok:
            try:
                kind = next(k for k in probes if comp.name.startswith(k))
                ok = probes[kind](comp.url)
            except Exception:
                ok = False
        out[comp.name] = ok
    return out


__all__ = ["NOTIFICATION_TOPIC", "StackError", "StackManager", "health"]
