"""pytest plugin: the embedded stack, started once per test session.

Set ``OUTBOX_TEST_STACK_DIR`` to the state dir of a running stack (``outbox stack
up --state-dir DIR``) to reuse it across runs; otherwise a fresh stack is started
in a temp dir and stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.migrations import migrate
from relay.resources import data_dir
from stack.manager import StackManager, create_database, drop_database
from stack.settings import StackSettings
from stack.state import StackState, load


@pytest.fixture(scope="session")
def stack() -> Iterator[StackState]:
    reuse = os.environ.get("OUTBOX_TEST_STACK_DIR")
    if reuse:
        yield load(Path(reuse))
        return
    tmp = Path(tempfile.mkdtemp(prefix="outbox-test-stack-"))
    tmp.chmod(0o755)  # the unprivileged Postgres user must reach its data dir
    manager = StackManager(StackSettings(), state_dir=tmp / "state")
    try:
        yield manager.up()
    finally:
        manager.down()
        shutil.rmtree(tmp, ignore_errors=True)


def _admin_dsn(dsn: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/postgres"


class Database:
    """A database of its own for one test (or module), migrated, dropped afterwards."""

    def __init__(self, stack: StackState, *, migrated: bool = True) -> None:
        self.name = f"t_{uuid.uuid4().hex[:12]}"
        self.admin = _admin_dsn(stack.pg_dsn)
        self.dsn = self.admin.rsplit("/", 1)[0] + f"/{self.name}"
        create_database(self.admin, self.name)
        if migrated:
            migrate(self.dsn, data_dir("sql"))

    @property
    def port(self) -> int:
        return int(self.dsn.rsplit(":", 1)[1].split("/")[0])

    def drop(self) -> None:
        drop_database(self.admin, self.name)


@pytest.fixture
def db(stack: StackState) -> Iterator[Database]:
    d = Database(stack)
    try:
        yield d
    finally:
        d.drop()


@pytest.fixture(scope="module")
def module_db(stack: StackState) -> Iterator[Database]:
    d = Database(stack)
    try:
        yield d
    finally:
        d.drop()


@pytest.fixture
def unique() -> str:
    """A short unique token for topic, group and connector names."""
    return uuid.uuid4().hex[:10]
