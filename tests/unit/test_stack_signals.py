"""stack.procs.stop_signals_unwind, in a child Python so real signals are sent."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, signal
from stack.procs import stop_signals_unwind
if {ignore_hup}:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
try:
    with stop_signals_unwind():
        try:
            os.kill(os.getpid(), signal.{sig})
            print("not interrupted", flush=True)
        finally:
            print("cleanup ran", flush=True)
except SystemExit as exc:
    print(f"exit {{exc.code}}", flush=True)
print("after: SIGTERM default" if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
      else "after: SIGTERM still handled", flush=True)
"""


def _run(sig: str, *, ignore_hup: bool = False) -> list[str]:
    code = CHILD.format(sig=sig, ignore_hup=ignore_hup)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n")[:-1]


def test_sigterm_and_sighup_unwind_through_finally_and_the_handlers_are_restored() -> None:
    assert _run("SIGTERM") == ["cleanup ran", "exit 143", "after: SIGTERM default"]
    assert _run("SIGHUP") == ["cleanup ran", "exit 129", "after: SIGTERM default"]


def test_a_sighup_ignored_by_nohup_stays_ignored() -> None:
    assert _run("SIGHUP", ignore_hup=True) == [
        "not interrupted",
        "cleanup ran",
        "after: SIGTERM default",
    ]
