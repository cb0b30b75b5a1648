"""The state file of a running stack: every DSN, URL, port and pid."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from stack.errors import StackStateError

STATE_FILE = "stack.json"

# The consumer-group session for clients of the stack's broker (Connect's
# workers, routers): it holds every join for about half the session timeout
# (docs/operations.md, "Consumer-group joins on the embedded broker").
DEV_SESSION_TIMEOUT_MS = 3000


class Component(BaseModel):
    name: str
    pid: int
    port: int
    url: str
    log: str
    # A substring of the process' command line, checked before it is signalled.
    expect: str


class StackState(BaseModel):
    state_dir: str
    pg_dsn: str
    redis_url: str
    kafka_bootstrap: str
    connect_url: str
    topic: str
    components: list[Component]
    redis_cluster: bool = False
    connect_urls: list[str] = []  # every worker of the Connect group (connect_url is the first)

    def env(self) -> dict[str, str]:
        """The environment every other command reads its settings from."""
        return {
            "OUTBOX_PG_DSN": self.pg_dsn,
            "OUTBOX_REDIS_URL": self.redis_url,
            "OUTBOX_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "OUTBOX_CONNECT_URL": ",".join(self.connect_urls)
            if len(self.connect_urls) > 1
            else self.connect_url,
            "OUTBOX_KAFKA_SESSION_TIMEOUT_MS": str(DEV_SESSION_TIMEOUT_MS),
        } | ({"OUTBOX_REDIS_CLUSTER": "true"} if self.redis_cluster else {})

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)


def load(state_dir: Path) -> StackState:
    """Read the state file in ``state_dir``.

    Raises:
        StackStateError: there is no stack state there, or it is unreadable.
    """
    path = state_dir / STATE_FILE
    if not path.exists():
        raise StackStateError(str(state_dir), "no stack is running here")
    try:
        return StackState.model_validate(json.loads(path.read_text()))
    except ValueError as exc:
        raise StackStateError(str(state_dir), f"unreadable state file: {exc}") from exc
