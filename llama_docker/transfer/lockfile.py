"""The lock file on the controller's disk: read it, write it atomically.

Its rules and format are llama_docker/knobs/lock.py; where it lives (beside the inventory)
and when a run writes it are the steps' (tasks/lock.py).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from llama_docker.knobs.lock import FILENAME, Lock, LockError, dumps, loads

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

    Atomic: a temporary file in the same folder, flushed to disk, renamed over the old one,
    so a reader (or a crash) sees the old lock or the new one, never half of one."""
    text = dumps(lock)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, _mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def _mode(path: Path) -> int:
    """The old file's mode, else what a new file gets under the umask (mkstemp makes 0600)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
