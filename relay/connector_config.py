"""Render the Debezium connector config from ``connect-config/connector.json``.

Pure: settings and the template in, a flat ``dict[str, str]`` out. Keys starting
with ``//`` are comments in the template and are dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

from relay.errors import SettingsError
from relay.resources import data_dir
from relay.settings import RelaySettings


def load_template(path: Path | None = None) -> str:
    """The template text.

    Raises:
        SettingsError: ``path`` cannot be read.
    """
    target = path or data_dir("connect-config") / "connector.json"
    try:
        return target.read_text()
    except OSError as exc:
        raise SettingsError("connector_template", f"cannot read {target}: {exc.strerror}") from exc


def render(settings: RelaySettings, template: str | None = None) -> dict[str, str]:
    """The connector config for ``settings``.

    Raises:
        SettingsError: ``pg_dsn`` is missing, or the template names a value the
            settings do not provide.
    """
    if not settings.pg_dsn:
        raise SettingsError("pg_dsn", 'is not set; export it or run `eval "$(outbox stack env)"`')
    try:
        host, port, database = settings.pg_parts()
    except ValueError as exc:
        raise SettingsError("pg_dsn", str(exc)) from None
    values = {
        "pg_host": host,
        "pg_port": str(port),
        "pg_user": settings.cdc_user,
        "pg_password": settings.cdc_password.get_secret_value(),
        "pg_database": database,
        "topic_prefix": settings.topic_prefix,
        "slot_name": settings.slot_name,
        "publication": settings.publication,
        "heartbeat_interval_ms": str(settings.heartbeat_interval_ms),
        "poll_interval_ms": str(settings.poll_interval_ms),
        "topic": settings.topic,
    }
    text = template if template is not None else load_template(settings.connector_template)
    try:
        # Values are JSON-escaped so a password with quotes cannot break the document.
        escaped = {k: json.dumps(v)[1:-1] for k, v in values.items()}
        raw: dict[str, Any] = json.loads(Template(text).substitute(escaped))
    except KeyError as exc:
        raise SettingsError(str(exc.args[0]), "the connector template needs it") from exc
    config = {k: str(v) for k, v in raw.items() if not k.startswith("//")}
    for key, value in settings.connector_overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def diff(
    live: dict[str, str] | None, desired: dict[str, str]
) -> list[tuple[str, str | None, str | None]]:
    """Keys whose values differ: ``(key, live, desired)``; ``None`` for absent.

    ``name`` is ignored: Connect adds it to every live config.
    """
    live = {k: v for k, v in (live or {}).items() if k != "name"}
    keys = sorted(set(live) | set(desired))
    return [(k, live.get(k), desired.get(k)) for k in keys if live.get(k) != desired.get(k)]
