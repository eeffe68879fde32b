"""Put a model file on a device over the SSH connection pyinfra already holds.

The file lands as `<sha256>.part`, is resumed from its size on the next try, is hashed on
the device, and only then is renamed to `<sha256>.gguf` with a `<sha256>.ok` marker beside
it. Nothing unverified ever has the final name, so nothing unverified is ever served.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import paramiko
from tqdm import tqdm

from .errors import LlamaDockerError, VerifyError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Store:
    """The content-addressed model store on a device."""

    root: str
    hash_cmd: str = "sha256sum"

    def final(self, sha: str) -> str:
        return f"{self.root}/{sha}.gguf"

    def part(self, sha: str) -> str:
        return f"{self.root}/{sha}.gguf.part"

    def marker(self, sha: str) -> str:
        return f"{self.root}/{sha}.ok"


def _run(client: paramiko.SSHClient, cmd: str, timeout: float = 3600) -> tuple[int, str, str]:
    chan = client.get_transport().open_session()  # type: ignore[union-attr]
    chan.settimeout(timeout)
    chan.exec_command(cmd)
    out = chan.makefile("rb").read().decode(errors="replace")
    err = chan.makefile_stderr("rb").read().decode(errors="replace")
    return chan.recv_exit_status(), out, err


def remote_size(client: paramiko.SSHClient, path: str) -> int:
    code, out, _ = _run(client, f"wc -c < {shlex.quote(path)} 2>/dev/null || echo 0")
    text = out.strip()
    return int(text) if code == 0 and text.isdigit() else 0


def _stream(client: paramiko.SSHClient, local: Path, offset: int, dest: str, bar: tqdm) -> None:
    """Append local[offset:] to dest through one exec channel."""
    chan = client.get_transport().open_session()  # type: ignore[union-attr]
    chan.settimeout(300)  # a stalled link fails the push; the next run resumes it
    chan.exec_command(f"cat >> {shlex.quote(dest)}")
    with open(local, "rb") as f:
        f.seek(offset)
        while chunk := f.read(CHUNK):
            chan.sendall(chunk)
            bar.update(len(chunk))
    chan.shutdown_write()
    code = chan.recv_exit_status()
    if code != 0:
        err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
        raise LlamaDockerError(f"writing {dest} failed ({err or f'exit {code}'})")


def push(client: paramiko.SSHClient, local: Path, sha: str, store: Store, label: str) -> int:
    """Make `<sha>.gguf` exist and be verified on the device; return bytes sent."""
    size = local.stat().st_size
    part = store.part(sha)
    offset = remote_size(client, part)
    if offset > size:  # not a prefix of this file: start over
        _run(client, f"rm -f {shlex.quote(part)}")
        offset = 0
    with tqdm(total=size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
              desc=f"{label} push", leave=False, disable=None, file=sys.stderr) as bar:
        if offset < size:
            _stream(client, local, offset, part, bar)
    code, out, err = _run(client, f"{store.hash_cmd} {shlex.quote(part)}")
    got = out.split()[0] if code == 0 and out else ""
    if got != sha:
        _run(client, f"rm -f {shlex.quote(part)}")
        why = f"hashes {got}" if got else f"could not be hashed ({err.strip()})"
        raise VerifyError(f"{local.name} on the device {why}, expected {sha}: the partial "
                          "file was deleted, re-run to send it again")
    final, marker = shlex.quote(store.final(sha)), shlex.quote(store.marker(sha))
    code, _, err = _run(client, f"chmod 0644 {shlex.quote(part)} && mv -f {shlex.quote(part)} "
                                f"{final} && echo {sha} > {marker}")
    if code != 0:
        raise LlamaDockerError(f"storing {store.final(sha)} failed: {err.strip()}")
    return size - offset
