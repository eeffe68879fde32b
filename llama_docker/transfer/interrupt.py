"""Ctrl-C and SIGTERM during a transfer, and a controller that dies outright.

pyinfra answers SIGINT by raising SystemExit in its main greenlet, then waits for a free
slot in its greenlet pool to disconnect: a push still running in that slot kept the
process (and its ssh child) alive until the last byte. While a transfer runs, the signals
first stop it (the ssh child terminated, or the paramiko loop told to stop), then do what
they did before. A SIGKILLed controller cannot run anything: on Linux its ssh child gets
SIGTERM from the kernel (PR_SET_PDEATHSIG). Either way the device's writer sees EOF and
its lock goes with it (llama_docker/device/store.py under_lock).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

PR_SET_PDEATHSIG = 1
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_stops: list[Callable[[], None]] = []
_saved: dict[int, Any] = {}
_caught: list[int] = []


def interrupted() -> bool:
    """True once SIGINT or SIGTERM arrived during a transfer."""
    return bool(_caught)


def _on_signal(signum: int, frame: Any) -> None:
    _caught.append(signum)
    for stop in list(_stops):
        stop()
    before = _saved.get(signum, signal.SIG_DFL)
    if callable(before):
        before(signum, frame)  # pyinfra's own: "Exiting upon user request!" and exit
    elif before == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def stoppable(stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM call `stop` before their usual action."""
    if not _stops:
        _caught.clear()
        for sig in SIGNALS:
            try:
                _saved[sig] = signal.signal(sig, _on_signal)
            except ValueError:  # not the main thread: signals are not ours to take
                break
    _stops.append(stop)
    try:
        yield
    finally:
        _stops.remove(stop)
        if not _stops:
            for signum, before in list(_saved.items()):
                signal.signal(signum, before)
            _saved.clear()


def die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel send the child SIGTERM when this process dies, even
    by SIGKILL (Linux); None elsewhere (macOS has no such call: the device side still
    stops once the connection closes)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, not in the child
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
