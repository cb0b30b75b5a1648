"""Idempotent apply of the connector config: no request when nothing changed."""

from __future__ import annotations

from dataclasses import dataclass

from relay.connect_api import ConnectClient
from relay.connector_config import diff
from relay.secrets import mask_value


@dataclass(frozen=True)
class ApplyResult:
    created: bool
    changes: list[tuple[str, str | None, str | None]]  # secrets masked
    applied: bool

    @property
    def changed(self) -> bool:
        return bool(self.changes)


async def apply(
    client: ConnectClient, name: str, desired: dict[str, str], *, dry_run: bool = False
) -> ApplyResult:
    """Make the live config of ``name`` equal ``desired``.

    Raises:
        ConnectError: Connect refused the config or could not be reached.
    """
    live = await client.get_config(name)
    changes = diff(live, desired)
    masked = [(k, mask_value(k, a), mask_value(k, b)) for k, a, b in changes]
    if not changes or dry_run:
        return ApplyResult(live is None, masked, applied=False)
    await client.put_config(name, desired)
    return ApplyResult(live is None, masked, applied=True)


def format_changes(result: ApplyResult) -> str:
    lines = []
    for k, old, new in result.changes:
        if old is None:
            lines.append(f"+ {k} = {new}")
        elif new is None:
            lines.append(f"- {k} = {old}")
        else:
            lines.append(f"~ {k}: {old} -> {new}")
    return "\n".join(lines)
