"""Direct mode: the device downloads the model itself (for devices far from the controller),
with the curl loop of device/download.py, then the same verify-then-store rule as a push."""

from __future__ import annotations

import paramiko

from llama_docker.device.download import download_script
from llama_docker.device.store import Store
from llama_docker.knobs.errors import FetchError
from llama_docker.transfer.push import remote_size, run_locked, verify_and_store


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
