"""What must never be shown: secret connector keys and DSN passwords (pure).

Every display path (``connector render``, ``apply --dry-run`` and its diffs,
``doctor``, ``relay status``, logs) goes through these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import psycopg.conninfo

MASK = "********"

# Kafka, Connect and Debezium keys that hold credentials.
_SECRET_KEY = re.compile(
    r"password|secret|token|credential|sasl\.jaas\.config|basic\.auth\.user\.info|"
    r"private\.key|api\.key",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def masked(config: dict[str, str]) -> dict[str, str]:
    """``config`` with every secret value replaced by a mask, for display."""
    return {k: (MASK if v and is_secret_key(k) else v) for k, v in config.items()}


def mask_value(key: str, value: str | None) -> str | None:
    return MASK if value and is_secret_key(key) else value


def safe_dsn(dsn: str) -> str:
    """A DSN for display: ``user@host:port/dbname`` without its password, from a
    URL or a key=value DSN alike ("<unparsable DSN>" if psycopg cannot read it,
    since the text itself may hold the password)."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<unparsable DSN>"
    user = str(parts.get("user") or "")
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    db = parts.get("dbname") or ""
    return f"{user + '@' if user else ''}{host}:{port}/{db}"


def dsn_password(dsn: str) -> str | None:
    """The password a DSN holds, to scrub it from text that quotes the DSN."""
    try:
        pw = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        return None
    return str(pw) if pw else None


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value in it (of 3 characters or more; shorter
    ones would mask ordinary text) replaced by the mask, longest first."""
    for s in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(s, MASK)
    return text
