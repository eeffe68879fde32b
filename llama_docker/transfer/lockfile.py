"""The lock file on the controller's disk: read it, write it atomically.

Its rules and format are llama_docker/knobs/lock.py; where it lives (beside the inventory)
and when a run writes it are the steps' (tasks/lock.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from llama_docker.knobs.lock import FILENAME, Lock, LockError, dumps, loads
from llama_docker.transfer.atomic import write_atomically

ENV = "LLAMA_DOCKER_LOCK"  # names the lock file, wherever the inventory is


def locate(inventory: str | None, cwd: str) -> Path:
    """Where a run's lock is: `LLAMA_DOCKER_LOCK`, else beside the inventory file, else (an
    inventory of host names, or none) in the folder the run was started in."""
    named = os.environ.get(ENV)
    if named:
        return Path(os.path.abspath(os.path.expanduser(named)))
    if inventory and Path(inventory).is_file():
        return Path(os.path.abspath(inventory)).parent / FILENAME
    return Path(os.path.abspath(cwd)) / FILENAME


def read(path: Path) -> Lock:
    """The lock at `path`; an empty one when there is no file. A file that is not a lock
    raises LockError in one line naming it (and is never written over)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Lock()
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"{path}: cannot be read ({exc}); it is left as it is") from None
    try:
        return loads(text)
    except LockError as exc:
        raise LockError(f"{path} is not a lock file llama-docker can read: {exc}. It is left "
                        "as it is: fix it, or move it away to resolve every entry "
                        "anew") from None


def write(path: Path, lock: Lock) -> bool:
    """Write `lock` to `path` unless it already holds the same text; True when written.

    Atomic (transfer/atomic.py): a reader, or a crash, sees the old lock or the new one."""
    text = dumps(lock)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_atomically(path, text.encode("utf-8"))
    return True

