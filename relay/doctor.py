"""Preflight checks of everything the pipeline needs; each says ok/fail and the fix."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from relay.connect_api import ConnectClient
from relay.errors import ConnectError
from relay.secrets import dsn_password, safe_dsn, scrub
from relay.settings import RelaySettings
from relay.supervisor import first_line
from relay.topics import KAFKA_LOG

POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
EXPECTED_TABLES = {"outbox.teacher_notifications", "outbox.domain_events", "outbox.heartbeat"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _pg_checks(s: RelaySettings) -> list[Check]:
    if not s.pg_dsn:
        return [Check("postgres reachable", False, "OUTBOX_PG_DSN is not set",
                      'export it or eval "$(outbox stack env)"')]  # fmt: skip
    out: list[Check] = []
    try:
        conn = psycopg.connect(s.pg_dsn, connect_timeout=5, autocommit=True)
    except psycopg.Error as exc:
        reason = scrub(str(exc).strip().splitlines()[0], [dsn_password(s.pg_dsn) or ""])
        return [Check("postgres reachable", False, f"{safe_dsn(s.pg_dsn)}: {reason}",
                      "check OUTBOX_PG_DSN and that Postgres is running")]  # fmt: skip
    with conn:
        out.append(Check("postgres reachable", True, safe_dsn(s.pg_dsn)))

        def show(name: str) -> str:
            row = conn.execute(f"SHOW {name}").fetchone()
            return str(row[0]) if row else ""

        wal = show("wal_level")
        out.append(Check("wal_level=logical", wal == "logical", f"wal_level is {wal}",
                         "set wal_level = logical in postgresql.conf and restart Postgres"))  # fmt: skip
        slots = int(show("max_replication_slots"))
        used_row = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
        used = int(str(used_row[0])) if used_row else 0
        mine_row = conn.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (s.slot_name,)
        ).fetchone()
        need = used + (0 if mine_row else 1)
        out.append(Check("max_replication_slots", slots >= need, f"{slots} configured, {used} in use",
                         f"raise max_replication_slots to at least {need} and restart Postgres"))  # fmt: skip
        senders = int(show("max_wal_senders"))
        active_row = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()
        active = int(str(active_row[0])) if active_row else 0
        out.append(Check("max_wal_senders", senders > active, f"{senders} configured, {active} in use",
                         f"raise max_wal_senders above {active} and restart Postgres"))  # fmt: skip
        role = conn.execute("SELECT rolreplication, rolcanlogin FROM pg_roles WHERE rolname = %s",
                            (s.cdc_user,)).fetchone()  # fmt: skip
        if role is None:
            out.append(
                Check(
                    f"CDC role {s.cdc_user}",
                    False,
                    "role does not exist",
                    "run `outbox db migrate`",
                )
            )
        else:
            ok = bool(role[0]) and bool(role[1])
            out.append(Check(f"CDC role {s.cdc_user}", ok,
                             f"replication={bool(role[0])} login={bool(role[1])}",
                             f"ALTER ROLE {s.cdc_user} LOGIN REPLICATION"))  # fmt: skip
            if ok:
                out.append(_cdc_login(s))
        tables = {f"{r[0]}.{r[1]}" for r in conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s", (s.publication,))}  # fmt: skip
        pub = conn.execute(
            "SELECT puballtables, pubdelete OR pubtruncate FROM pg_publication WHERE pubname = %s",
            (s.publication,),
        ).fetchone()
        if pub is None:
            out.append(
                Check(
                    f"publication {s.publication}",
                    False,
                    "does not exist",
                    "run `outbox db migrate`",
                )
            )
        else:
            ok = not pub[0] and tables == EXPECTED_TABLES
            out.append(Check(f"publication {s.publication}", ok,
                             "covers " + (", ".join(sorted(tables)) or "nothing") + (" (ALL TABLES)" if pub[0] else ""),
                             "it must cover the two outboxes and the heartbeat, nothing else: "
                             f"ALTER PUBLICATION {s.publication} SET TABLE "
                             + ", ".join(sorted(EXPECTED_TABLES))))  # fmt: skip
            out.append(Check(f"publication {s.publication} operations", not pub[1],
                             "publishes deletes or truncates" if pub[1] else "inserts and updates only",
                             "the janitor's deletes would stream through Debezium as bursts of change "
                             f"events: ALTER PUBLICATION {s.publication} SET (publish = 'insert, update')"))  # fmt: skip
    return out


# Known causes of a failed connector task: a piece of its trace, and the fix.
KNOWN_FAILURES: tuple[tuple[str, str], ...] = (
    ("RecordTooLargeException",
     "a row too large for a Kafka record is in the outbox (the validation trigger was "
     "bypassed). Let it through once so the router dead-letters it: set "
     "OUTBOX_CONNECTOR_OVERRIDES='{\"producer.override.max.request.size\": \"10485760\"}' "
     "(and the topic's max.message.bytes), `outbox connector apply`, `outbox connector "
     "restart`; then remove the override. See docs/operations.md, \"A connector task keeps failing\""),
    ("is not permitted to log in", "the CDC role cannot log in: ALTER ROLE <cdc user> LOGIN"),
    ("password authentication failed",
     "the CDC password is wrong: set OUTBOX_CDC_PASSWORD to the role's password and "
     "`outbox connector apply`"),
    ("all replication slots are in use", "raise max_replication_slots and restart Postgres"),
    ("is active for PID", "another client reads the replication slot; stop it or use another "
                          "OUTBOX_SLOT_NAME"),
    ("publication", "the publication is missing or wrong: `outbox db migrate`"),
)  # fmt: skip


def explain(trace: str) -> str:
    """The fix for a known cause of a failed task, else where to look."""
    for needle, fix in KNOWN_FAILURES:
        if needle in trace:
            return fix
    return "see `outbox connector status`, the worker's log, and docs/operations.md"


async def _connector_check(c: ConnectClient, s: RelaySettings) -> Check:
    name = f"connector {s.connector_name}"
    try:
        if await c.get_config(s.connector_name) is None:
            return Check(name, True, "not created yet; `outbox connector apply` or the relay "
                         "creates it")  # fmt: skip
        st = await c.status(s.connector_name)
    except ConnectError as exc:
        return Check(name, False, str(exc), "retry; Connect may be rebalancing")
    failed = [(f"task {t.id}", t.trace or "") for t in st.tasks if t.state == "FAILED"]
    if st.state == "FAILED":
        failed.insert(0, ("connector", st.trace or ""))
    if not failed:
        tasks = ", ".join(t.state for t in st.tasks) or "no tasks yet"
        return Check(name, True, f"{st.state} ({tasks})")
    part, trace = failed[0]
    return Check(name, False, f"{part} FAILED: {first_line(trace) or 'no trace'}", explain(trace))


async def _connect_checks(s: RelaySettings) -> list[Check]:
    async with ConnectClient(s.connect_url, timeout=30) as c:
        try:
            plugins = await c.connector_plugins()
        except ConnectError as exc:
            return [
                Check(
                    "kafka connect reachable",
                    False,
                    str(exc),
                    "start the worker or fix OUTBOX_CONNECT_URL",
                )
            ]
        has = any(p.get("class") == POSTGRES_CONNECTOR for p in plugins)
        return [
            Check("kafka connect reachable", True, s.connect_url),
            Check(
                "debezium postgres connector",
                has,
                "offered" if has else "not among the worker's plugins",
                "put the Debezium Postgres connector on the worker's plugin.path",
            ),
            await _connector_check(c, s),
        ]


def bootstrap_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a ``bootstrap.servers`` list (a ``PLAINTEXT://``-style
    prefix and ``[v6]`` brackets allowed; 9092 when no port is given)."""
    out = []
    for raw in bootstrap.split(","):
        item = raw.strip().split("://", 1)[-1].rstrip("/")
        if item.startswith("["):  # [v6] or [v6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, port = item.split(":")
        else:  # a bare host, or a bare v6 address
            host, port = item, ""
        if host:
            out.append((host, int(port) if port.isdigit() else 9092))
    return out


def _unreachable(bootstrap: str, timeout_s: float = 3.0) -> str | None:
    """Why no bootstrap address takes a TCP connection, or None if one does:
    a refused port answers at once, where the Kafka client would retry until
    its timeout."""
    why = []
    for host, port in bootstrap_addresses(bootstrap):
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            return None
        except OSError as exc:
            why.append(f"{host}:{port}: {exc.strerror or type(exc).__name__}")
    return "; ".join(why) or "no address in OUTBOX_KAFKA_BOOTSTRAP"


def _topic_check(s: RelaySettings) -> Check:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import KafkaException, NewTopic

    if (why := _unreachable(s.kafka_bootstrap)) is not None:
        return Check(f"topic {s.topic}", False, f"broker unreachable: {why}",
                     "start the broker, or check OUTBOX_KAFKA_BOOTSTRAP")  # fmt: skip
    conf: dict[str, Any] = {"bootstrap.servers": s.kafka_bootstrap, "socket.timeout.ms": 5000,
                            "logger": KAFKA_LOG}  # fmt: skip
    admin = AdminClient(conf)
    try:
        md = admin.list_topics(timeout=10)
    except KafkaException as exc:
        return Check(
            f"topic {s.topic}", False, f"broker unreachable: {exc}", "check OUTBOX_KAFKA_BOOTSTRAP"
        )
    t = md.topics.get(s.topic)
    if t is not None and t.error is None:
        return Check(f"topic {s.topic}", True, f"exists with {len(t.partitions)} partitions")
    fut = admin.create_topics(
        [NewTopic(s.topic, num_partitions=s.topic_partitions)], validate_only=True
    )
    try:
        fut[s.topic].result(timeout=10)
    except KafkaException as exc:
        return Check(f"topic {s.topic}", False, f"missing and cannot be created: {exc}",
                     "create it with the partition count you want")  # fmt: skip
    return Check(f"topic {s.topic}", True, f"missing but can be created ({s.topic_partitions} partitions)",
                 "`outbox connector apply` creates it")  # fmt: skip


async def run_checks(s: RelaySettings) -> list[Check]:
    # The three services are independent: ask them at once, report in this order.
    pg, connect, topic = await asyncio.gather(
        asyncio.to_thread(_pg_checks, s), _connect_checks(s), asyncio.to_thread(_topic_check, s)
    )
    return [*pg, *connect, topic]


def _cdc_login(s: RelaySettings) -> Check:
    """Log in as Debezium will (the CDC user and password, to the same database)."""
    name = f"CDC role {s.cdc_user} logs in"
    try:
        conninfo = make_conninfo(s.pg_dsn, user=s.cdc_user,
                                                  password=s.cdc_password.get_secret_value() or None,
                                                  connect_timeout=5)  # fmt: skip
        with psycopg.connect(conninfo) as conn:
            conn.execute("SELECT 1 FROM outbox.teacher_notifications LIMIT 0")
    except psycopg.Error as exc:
        return Check(name, False, first_line(str(exc), 200) or type(exc).__name__,
                     f"set its password (ALTER ROLE {s.cdc_user} PASSWORD '...', or "
                     "OUTBOX_CDC_PASSWORD with `outbox db migrate`) to OUTBOX_CDC_PASSWORD, and "
                     "let pg_hba.conf admit it")  # fmt: skip
    return Check(name, True, "logged in and read the outbox", "")
