"""Start, probe and stop local processes by pid (never by name)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_ports() -> tuple[int, int]:
    """The range the kernel picks local ports of outgoing connections from."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port_pair(offset: int = 10000, low: int = 20000) -> int:
    """A port P with P and P + ``offset`` both free (a Redis Cluster node listens
    on its port and its bus port, 10000 above). Both below the ephemeral range
    when it leaves room: a port checked free there can be taken by any outgoing
    connection before the node binds it."""
    import random

    first, _ = ephemeral_ports()
    high = first - 1 - offset if first - 1 - offset > low + 100 else 65535 - offset
    for _ in range(200):
        port = random.randint(low, high)
        if all(_bindable(p) for p in (port, port + offset)):
            return port
    raise OSError("no free pair of ports found")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


@contextlib.contextmanager
def stop_signals_unwind() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP end the program the way Ctrl-C does: as
    an exception (``SystemExit``, status 128 + the signal), so ``except`` and
    ``finally`` blocks run and stop what was started. Python's default for
    these signals ends the process on the spot, leaving detached children
    running with no state file to find them by. A signal that is ignored
    (``nohup``) stays ignored. Only the main thread can set handlers; elsewhere
    this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    # A signal ignored on purpose (`nohup` ignores SIGHUP) stays ignored.
    wanted = [
        s for s in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN
    ]
    previous = {sig: signal.signal(sig, unwind) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class DetachedPopen(subprocess.Popen[bytes]):
    """A child that deliberately outlives this object.

    It is stopped later by pid (from the state file), so the usual "still
    running" warning on garbage collection does not apply.
    """

    def __del__(self) -> None:
        return


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> DetachedPopen:
    """Start ``argv`` detached in its own session, stdout/stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return DetachedPopen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            user=user,
            cwd=cwd,
            start_new_session=True,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, *, expect: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> bool:
    """Stop ``pid`` if its command line still contains ``expect``.

    Sends ``sig``, waits up to ``timeout`` seconds, then SIGKILLs it. Returns
    ``True`` when a process was stopped. A pid that was reused by some other
    program is left alone.
    """
    if not alive(pid) or expect not in cmdline(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        _reap(pid)
        if not alive(pid):
            break
        time.sleep(0.05)
    return True


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""
