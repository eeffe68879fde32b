"""fetch() the way a deploy runs it: in a process that imported pyinfra's CLI, whose gevent
has patched threading. The sha256 and the flushes must still run on OS threads of their own
(a patched `threading.Thread` is a greenlet that takes turns with the download)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
import pyinfra_cli  # noqa: F401 - gevent.monkey.patch_all(), as in `pyinfra ... deploy.py`
import hashlib, json, os, random, threading
from pathlib import Path
from gevent import monkey
import llama_docker.transfer.download as download
from tests.lab.fault_server import FaultServer

data = random.Random(5).randbytes((40 << 20) + 123)  # past WRITEBACK: the flushes run too
seen = {"hash": set(), "sync": set()}
real_sha256, real_sync = hashlib.sha256, os.fdatasync


class Spy:
    def __init__(self):
        self.h = real_sha256()

    def update(self, b):
        seen["hash"].add(threading.get_native_id())
        self.h.update(b)

    def hexdigest(self):
        return self.h.hexdigest()


def sync(fd):
    seen["sync"].add(threading.get_native_id())
    real_sync(fd)


download.hashlib = type("H", (), {"sha256": staticmethod(Spy)})
os.fdatasync = sync
with FaultServer({"/m.gguf": data}) as srv:
    got = download.fetch(srv.url("/m.gguf"), Path(sys.argv[1]) / "m.gguf",
                         real_sha256(data).hexdigest(), progress=False)
main = threading.get_native_id()
print(json.dumps({"patched": monkey.is_module_patched("threading"), "size": got.size,
                  "hash": sorted(seen["hash"]) != [] and main not in seen["hash"],
                  "sync": sorted(seen["sync"]) != [] and main not in seen["sync"]}))
"""


def test_the_hash_and_the_flushes_run_on_os_threads_inside_pyinfra(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"patched": True, "size": (40 << 20) + 123, "hash": True, "sync": True}, got
