"""Put a model file on a device over the SSH connection pyinfra already holds.

The file lands as `<sha256>.part`, is resumed from its size on the next try, is hashed on
the device, and only then is renamed to `<sha256>.gguf` with a `<sha256>.ok` marker beside
it. Nothing unverified ever has the final name, so nothing unverified is ever served.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from tqdm import tqdm

from .errors import LlamaDockerError, VerifyError

CHUNK = 1 << 20
STALL_SECONDS = 300  # no byte accepted for this long: the push fails, the next run resumes
# AES-GCM is the fastest OpenSSH cipher where both ends have AES instructions; ChaCha20 is
# faster on CPUs without them (a Raspberry Pi 4, for one).
AES_FIRST = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"
CHACHA_FIRST = "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes128-ctr"


@dataclass(frozen=True)
class SshTarget:
    """The OpenSSH client's view of a device: the same user, key and pinned known_hosts
    that pyinfra uses, so a push through `ssh` trusts exactly what pyinfra trusts.

    As in pyinfra's own `ssh` command line (its rsync), only what host data sets becomes a
    flag; everything else (port, user, key, known_hosts of an alias) comes from the same
    ssh config file pyinfra read (`-F` when `ssh_config_file` is set).
    """

    hostname: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    strict: bool = True
    config_file: str | None = None

    @classmethod
    def from_data(cls, name: str, data: Mapping[str, Any]) -> SshTarget | None:
        """None when OpenSSH cannot stand in for pyinfra's connection (no client, password)."""
        if shutil.which("ssh") is None or data.get("ssh_password"):
            return None
        strict = str(data.get("ssh_strict_host_key_checking", "yes")).lower() != "no"
        port = data.get("ssh_port")
        return cls(hostname=data.get("ssh_hostname") or name, port=int(port) if port else None,
                   user=data.get("ssh_user"), key=data.get("ssh_key"),
                   known_hosts=data.get("ssh_known_hosts_file"), strict=strict,
                   config_file=data.get("ssh_config_file"))

    def argv(self, aes: bool) -> list[str]:
        argv = ["ssh"]
        if self.config_file:
            argv += ["-F", os.path.expanduser(self.config_file)]
        if self.port:
            argv += ["-p", str(self.port)]
        argv += ["-o", "BatchMode=yes", "-o", "ServerAliveInterval=15",
                 "-o", "ServerAliveCountMax=4", "-c", AES_FIRST if aes else CHACHA_FIRST,
                 "-o", f"StrictHostKeyChecking={'yes' if self.strict else 'accept-new'}"]
        if self.key:
            argv += ["-i", os.path.expanduser(self.key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(self.known_hosts)}"]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, self.hostname]


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

    def hash_command(self, path: str) -> str:
        """sha256 of a file on the device, in coreutils' output format. OpenSSL's digest uses
        the CPU's SHA instructions where coreutils' does not (1.2x scp's rate against 0.6
        with sha256sum, docs/BENCHMARKS.md); sha256sum stands in where openssl is absent."""
        q = shlex.quote(path)
        if self.hash_cmd != "sha256sum":
            return f"{self.hash_cmd} {q}"
        return f"openssl dgst -sha256 -r {q} 2>/dev/null || sha256sum {q}"

    def lock(self, sha: str) -> str:
        return f"{self.root}/.{sha}.lock"


def run_remote(client: paramiko.SSHClient, cmd: str, timeout: float = 3600) -> tuple[int, str, str]:
    chan = client.get_transport().open_session()  # type: ignore[union-attr]
    with chan:  # closed now, not when the garbage collector gets to it
        chan.settimeout(timeout)
        chan.exec_command(cmd)
        out = chan.makefile("rb").read().decode(errors="replace")
        err = chan.makefile_stderr("rb").read().decode(errors="replace")
        return chan.recv_exit_status(), out, err


def remote_size(client: paramiko.SSHClient, path: str) -> int:
    code, out, _ = run_remote(client, f"wc -c < {shlex.quote(path)} 2>/dev/null || echo 0")
    text = out.strip()
    return int(text) if code == 0 and text.isdigit() else 0


def _stream_openssh(target: SshTarget, aes: bool, local: Path, offset: int, dest: str,
                    bar: tqdm) -> None:
    """Append local[offset:] to dest with the OpenSSH client reading the file directly."""
    with open(local, "rb", buffering=0) as f:
        f.seek(offset)
        proc = subprocess.Popen([*target.argv(aes), f"cat >> {shlex.quote(dest)}"], stdin=f,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # ssh shares our file offset: reading it shows progress without copying a byte.
        done, moved_at = offset, time.monotonic()
        while proc.poll() is None:
            time.sleep(0.2)
            pos = os.lseek(f.fileno(), 0, os.SEEK_CUR)
            if pos != done:
                bar.update(pos - done)
                done, moved_at = pos, time.monotonic()
            elif time.monotonic() - moved_at > STALL_SECONDS:
                proc.kill()
        bar.update(os.lseek(f.fileno(), 0, os.SEEK_CUR) - done)
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if proc.returncode != 0:
        raise LlamaDockerError(f"ssh push to {dest} failed (exit {proc.returncode}: "
                               f"{err.splitlines()[-1] if err else 'no message'}); "
                               "re-run to resume")


def _stream(client: paramiko.SSHClient, local: Path, offset: int, dest: str, bar: tqdm) -> None:
    """Append local[offset:] to dest through one paramiko exec channel (no OpenSSH client).

    pyinfra's connection is used as it is: re-keying it to AES-GCM (0.87 of scp's rate
    against 0.7) deadlocked paramiko now and then (its own thread answered a channel close
    during the re-key and waited for the re-key), a risk this fallback path does not need.
    """
    transport = client.get_transport()
    assert transport is not None
    with transport.open_session() as chan, open(local, "rb") as f:
        chan.settimeout(300)  # a stalled link fails the push; the next run resumes it
        chan.exec_command(f"cat >> {shlex.quote(dest)}")
        f.seek(offset)
        while chunk := f.read(CHUNK):
            chan.sendall(chunk)
            bar.update(len(chunk))
        chan.shutdown_write()
        code = chan.recv_exit_status()
        err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
    if code != 0:
        raise LlamaDockerError(f"writing {dest} failed ({err or f'exit {code}'})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_command(lock: str, me: str) -> str:
    """mkdir the lock (atomic) and say `acquired`, `held <owner>` when it exists, or
    `failed <mkdir's message>` when it cannot be made (a store the user cannot write)."""
    q = shlex.quote(lock)
    return (f"if err=$(mkdir {q} 2>&1); then echo {shlex.quote(me)} > {q}/owner && "
            f"echo acquired; elif [ -d {q} ]; then echo held $(cat {q}/owner 2>/dev/null); "
            'else echo "failed $err"; fi')


def lock_failure(lock: str, answer: str) -> str | None:
    """The one-line error for a lock that could not be created, None when it was or is held."""
    word, _, rest = answer.strip().partition(" ")
    if word in ("acquired", "held"):
        return None
    why = rest.rsplit(": ", 1)[-1].strip() if rest.strip() else (answer.strip() or "no answer")
    return f"cannot create the lock {lock} on the device: {why}"


def acquire(client: paramiko.SSHClient, lock: str) -> None:
    """Take the device-side lock for one file (mkdir is atomic), or say who holds it.

    A lock left by a dead deploy from this same controller is taken over; one held by
    another controller is left alone, with the command to clear it if that deploy died.
    A lock that cannot be created at all (permissions, a missing store) is said as such.
    """
    me = f"{socket.gethostname()} {os.getpid()}"
    q = shlex.quote(lock)
    for _ in range(2):
        _, out, _ = run_remote(client, lock_command(lock, me))
        failed = lock_failure(lock, out)
        if failed:
            raise LlamaDockerError(failed)
        if out.strip() == "acquired":
            return
        owner = out.strip().split()[1:]
        if len(owner) == 2 and owner[0] == socket.gethostname() and owner[1].isdigit() \
                and not _pid_alive(int(owner[1])):
            run_remote(client, f"rm -rf {q}")  # our own earlier deploy died holding it
            continue
        who = " ".join(owner) or "an unknown deploy"
        raise LlamaDockerError(f"another deploy ({who}) is writing this model on the device; "
                               f"wait for it, or if it died: ssh in and rm -r {lock}")
    raise LlamaDockerError(f"could not take the lock {lock} on the device")


def push(client: paramiko.SSHClient, local: Path, sha: str, store: Store, label: str,
         target: SshTarget | None = None, aes: bool = True) -> tuple[int, int]:
    """Make `<sha>.gguf` exist and be verified on the device; return (bytes sent, resumed at).

    With a `target` the bytes go through the OpenSSH client (faster: 1.2-1.5x scp here, and
    it picks the cipher per CPU); without one, through pyinfra's own paramiko connection.
    """
    with locked(client, store, sha):
        return _push_locked(client, local, sha, store, label, target, aes)


def _push_locked(client: paramiko.SSHClient, local: Path, sha: str, store: Store, label: str,
                 target: SshTarget | None, aes: bool) -> tuple[int, int]:
    size = local.stat().st_size
    part = store.part(sha)
    offset = remote_size(client, part)
    if offset > size:  # not a prefix of this file: start over
        run_remote(client, f"rm -f {shlex.quote(part)}")
        offset = 0
    with tqdm(total=size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
              desc=f"{label} push", leave=False, disable=None, file=sys.stderr) as bar:
        if offset < size and target is not None:
            _stream_openssh(target, aes, local, offset, part, bar)
        elif offset < size:
            _stream(client, local, offset, part, bar)
    verify_and_store(client, sha, store, local.name)
    return size - offset, offset


def verify_and_store(client: paramiko.SSHClient, sha: str, store: Store, name: str) -> None:
    """Hash the device's `.part`; only a match gets the final name and the `.ok` marker."""
    part = store.part(sha)
    code, out, err = run_remote(client, store.hash_command(part))
    got = out.split()[0] if code == 0 and out else ""
    if got != sha:
        run_remote(client, f"rm -f {shlex.quote(part)}")
        why = f"hashes {got}" if got else f"could not be hashed ({err.strip()})"
        raise VerifyError(f"{name} on the device {why}, expected {sha}: the partial "
                          "file was deleted, re-run to send it again")
    # Read-only once verified, so a stray write fails. The store itself belongs to the SSH
    # user (pushes need no sudo); owning it by root would not keep out a user with sudo.
    final, marker = shlex.quote(store.final(sha)), shlex.quote(store.marker(sha))
    code, _, err = run_remote(client, f"chmod 0444 {shlex.quote(part)} && mv -f "
                                      f"{shlex.quote(part)} {final} && rm -f {marker} && "
                                      f"echo {sha} > {marker} && chmod 0444 {marker}")
    if code != 0:
        raise LlamaDockerError(f"storing {store.final(sha)} failed: {err.strip()}")


@contextlib.contextmanager
def locked(client: paramiko.SSHClient, store: Store, sha: str) -> Iterator[None]:
    """The device-side lock for one file, released whatever happens."""
    acquire(client, store.lock(sha))
    try:
        yield
    finally:
        run_remote(client, f"rm -rf {shlex.quote(store.lock(sha))}")
