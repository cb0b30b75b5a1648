"""Locate the project's data folders (``sql/``, ``connect-config/``).

In a source checkout they sit beside the packages; in an installed wheel they are
shipped under ``outbox/_data``.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` (``"sql"`` or ``"connect-config"``).

    Raises:
        FileNotFoundError: neither a checkout nor an installed copy has it.
    """
    for candidate in (_ROOT / name, _ROOT / "outbox" / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the project's {name}/ folder is missing; reinstall outbox-relay")
