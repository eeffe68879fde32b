"""`python3 -m bench.counted ARGS`: pyinfra ARGS, counting the bytes llama-docker hashes.

The controller hashes in two places (transfer.download while downloading, transfer.hashing
for a local file); both call `hashlib.sha256()`, so wrapping that one name in those two
modules counts every byte they hash, and nothing else (paramiko's own sha256 is not counted).
The total goes to the file named by BENCH_HASH_COUNT when pyinfra exits.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sys
import threading
import types
from pathlib import Path

import pyinfra_cli  # noqa: F401 - gevent's monkey patching must come first, as in `pyinfra`

import llama_docker.transfer.download
import llama_docker.transfer.hashing

_lock = threading.Lock()
_count = {"bytes": 0, "objects": 0}


class _Counting:
    """A sha256 object that adds the length of what it is fed to the total."""

    def __init__(self, data: bytes = b"") -> None:
        self._h = hashlib.sha256()
        with _lock:
            _count["objects"] += 1
        if data:
            self.update(data)

    def update(self, data: bytes) -> None:
        with _lock:
            _count["bytes"] += len(data)
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def digest(self) -> bytes:
        return self._h.digest()


def _write() -> None:
    out = os.environ.get("BENCH_HASH_COUNT")
    if out:
        Path(out).write_text(f"{_count['bytes']} {_count['objects']}\n")


def main() -> None:
    shim = types.SimpleNamespace(sha256=_Counting)
    llama_docker.transfer.download.hashlib = shim  # type: ignore[assignment]
    llama_docker.transfer.hashing.hashlib = shim  # type: ignore[assignment]
    atexit.register(_write)
    from pyinfra_cli.main import main as pyinfra_main

    sys.argv = ["pyinfra", *sys.argv[1:]]
    pyinfra_main()


if __name__ == "__main__":
    main()
