"""A benchmark stopped by SIGTERM (``timeout``, ``kill``) still stops what it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A benchmark in miniature: a child process, stopped in a ``finally``.
BENCH = textwrap.dedent(
    """
    import subprocess, time
    from bench.common import python_proc
    child = python_proc(["-c", "import time; time.sleep(120)"], stdout=subprocess.DEVNULL)
    try:
        print(child.pid, flush=True)
        time.sleep(120)
    finally:
        child.kill()
        child.wait()
        print("cleaned", flush=True)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_runs_the_cleanup_and_leaves_no_child() -> None:
    bench = subprocess.Popen([sys.executable, "-c", BENCH], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    child = 0
    try:
        assert bench.stdout is not None
        child = int(bench.stdout.readline())
        assert _alive(child)
        bench.send_signal(signal.SIGTERM)
        out, _ = bench.communicate(timeout=30)
        assert "cleaned" in out
        assert bench.returncode == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the benchmark's child outlived it"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if child and _alive(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            pytest.fail("the child was left running")
