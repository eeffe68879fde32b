"""Small, bounded wrappers around the commands the lab drives."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str], *, check: bool = True, capture: bool = False, timeout: float = 900,
    input: str | None = None,
) -> subprocess.CompletedProcess:
    """Run a command; on failure raise with its stderr so the cause is on one screen."""
    proc = subprocess.run(
        list(cmd), text=True, capture_output=capture, timeout=timeout, input=input,
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or "").strip()[-2000:] if capture else ""
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}: {detail}")
    return proc


def docker(*args: str, check: bool = True, capture: bool = False, timeout: float = 900,
           input: str | None = None) -> subprocess.CompletedProcess:
    return run(["docker", *args], check=check, capture=capture, timeout=timeout, input=input)


def out(*args: str) -> str:
    return docker(*args, capture=True).stdout.strip()


def wait_for(what: str, probe: Callable[[], bool], *, seconds: float, every: float = 0.5) -> None:
    """Poll `probe` until it is true; bounded in time, names what it waited for."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except Exception:  # noqa: BLE001 - a probe that errors is simply not ready
            pass
        time.sleep(every)
    raise TimeoutError(f"lab: {what} not ready after {seconds:.0f}s")
