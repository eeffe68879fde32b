"""Direct mode: the device downloads the model itself (for devices far from the controller).

curl before 8.17 throws a partial file away when its own `--retry` retries with `-C -`, so
the retry loop is ours: bounded, resuming from the bytes on disk, and the same
verify-then-store rule as a push afterwards.
"""

from __future__ import annotations

import shlex

import paramiko

from llama_docker.device.store import Store
from llama_docker.knobs.errors import FetchError
from llama_docker.transfer.push import remote_size, run_locked, verify_and_store

ATTEMPTS = 10


def download_script(url: str, part: str, size: int | None) -> str:
    """A bounded `curl -C -` loop: 2xx or a full `.part` ends it, 4xx (but 416) fails it,
    a server that cannot resume (exit 33) restarts the file, anything else is retried."""
    u, p = shlex.quote(url), shlex.quote(part)
    full = f'[ "$(wc -c < {p} 2>/dev/null || echo 0)" -ge {size} ] && exit 0; ' if size else ""
    return (
        f"i=0; while [ $i -lt {ATTEMPTS} ]; do {full}"
        f"code=$(curl -sS -f -L --connect-timeout 15 --speed-limit 1024 --speed-time 60 "
        f"-C - -o {p} -w '%{{http_code}}' {u}); rc=$?; "
        '[ $rc = 0 ] && exit 0; '
        f'[ $rc = 33 ] && rm -f {p}; '
        'case "$code" in 416) exit 0 ;; 4??) echo "HTTP $code" >&2; exit 22 ;; esac; '
        'i=$((i+1)); sleep $((i < 5 ? i : 5)); done; '
        f'echo "gave up after {ATTEMPTS} attempts" >&2; exit 75'
    )


def fetch_on_device(client: paramiko.SSHClient, url: str, sha: str, size: int | None,
                    store: Store, name: str) -> tuple[int, int]:
    """Download into the device's store and verify it there; return (bytes now on the
    device that were not before, offset resumed from)."""
    part = store.part(sha)
    offset = remote_size(client, part)
    # curl inherits the lock: a download left running by a dead deploy keeps it.
    code, _, err = run_locked(client, store, sha, download_script(url, part, size))
    if code != 0:
        kept = remote_size(client, part)
        raise FetchError(f"the device could not download {url}: {err.strip() or code}; "
                         f"{kept} bytes kept, re-run to resume")
    got = remote_size(client, part)
    verify_and_store(client, sha, store, name)
    return got - offset, offset
