"""Put a file into a device's store over SSH: the bytes' way there.

The OpenSSH client reading the file itself where it can stand in for pyinfra's connection,
else one paramiko channel of that connection; both run the same device command, whose text
and answers are llama_docker/device/store.py (write the .part, hash, rename, mark, lock).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from tqdm import tqdm

from llama_docker.device import ciphers
from llama_docker.device.store import (
    Store,
    discard_command,
    lock_error,
    received,
    size_command,
    under_lock,
    verified,
    verify_command,
    writer_command,
)
from llama_docker.knobs.errors import LlamaDockerError
from llama_docker.transfer.interrupt import die_with_parent, interrupted, stoppable

CHUNK = 1 << 20
STALL_SECONDS = 300  # no byte accepted for this long: the push fails, the next run resumes


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
                 "-o", "ServerAliveCountMax=4", "-c", ciphers.order(aes),
                 "-o", f"StrictHostKeyChecking={'yes' if self.strict else 'accept-new'}"]
        if self.key:
            argv += ["-i", os.path.expanduser(self.key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(self.known_hosts)}"]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, self.hostname]


def run_remote(client: paramiko.SSHClient, cmd: str, timeout: float = 3600) -> tuple[int, str, str]:
    chan = client.get_transport().open_session()  # type: ignore[union-attr]
    with chan:  # closed now, not when the garbage collector gets to it
        chan.settimeout(timeout)
        chan.exec_command(cmd)
        out = chan.makefile("rb").read().decode(errors="replace")
        err = chan.makefile_stderr("rb").read().decode(errors="replace")
        return chan.recv_exit_status(), out, err


def remote_size(client: paramiko.SSHClient, path: str) -> int:
    code, out, _ = run_remote(client, size_command(path))
    text = out.strip()
    return int(text) if code == 0 and text.isdigit() else 0


def run_locked(client: paramiko.SSHClient, store: Store, sha: str, body: str,
               timeout: float = 3600) -> tuple[int, str, str]:
    """run_remote of `body` under the model's device-side lock; a lock not had raises."""
    code, out, err = run_remote(client, under_lock(store.lock(sha), body), timeout)
    failed = lock_error(code, err, store.lock(sha))
    if failed:
        raise failed
    return code, out, err


def stopped_line(dest: str) -> str:
    """What an interrupted push says: the next run resumes from the bytes in `dest`."""
    return (f"interrupted: the push to {dest} stopped; re-run to resume from the bytes on "
            "the device")


def _stop(proc: subprocess.Popen) -> None:
    """End the ssh child now (an interrupt, a stall): TERM, then KILL, bounded."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=3)


def _stream_openssh(target: SshTarget, aes: bool, local: Path, offset: int, store: Store,
                    sha: str, bar: tqdm) -> bool:
    """Send local[offset:] to the .part with the OpenSSH client reading the file directly;
    True when the device verified and stored it as it arrived (a fresh push).

    Whatever ends this call early (Ctrl-C, SIGTERM, an error) ends the ssh child with it;
    if this process dies outright, the kernel sends the child SIGTERM (Linux).
    """
    dest, lock = store.part(sha), store.lock(sha)
    size = local.stat().st_size
    with open(local, "rb", buffering=0) as f:
        f.seek(offset)
        proc = subprocess.Popen([*target.argv(aes),
                                 under_lock(lock, writer_command(store, sha, offset, size))],
                                stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=die_with_parent())
        done = offset
        with stoppable(proc.terminate):
            try:
                # ssh shares our file offset: reading it shows progress without copying a byte.
                moved_at = time.monotonic()
                while proc.poll() is None:
                    time.sleep(0.2)
                    pos = os.lseek(f.fileno(), 0, os.SEEK_CUR)
                    if pos != done:
                        bar.update(pos - done)
                        done, moved_at = pos, time.monotonic()
                    elif time.monotonic() - moved_at > STALL_SECONDS:
                        _stop(proc)
                bar.update(os.lseek(f.fileno(), 0, os.SEEK_CUR) - done)
            finally:
                _stop(proc)
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if interrupted():
        raise LlamaDockerError(stopped_line(dest))
    failed = lock_error(proc.returncode, err, lock)
    if failed:
        raise failed
    stored = received(proc.returncode, err, offset, local.name, sha)
    if stored is not None:
        return stored
    raise LlamaDockerError(f"ssh push to {dest} failed (exit {proc.returncode}: "
                           f"{err.splitlines()[-1] if err else 'no message'}); re-run to resume")


def _stream(client: paramiko.SSHClient, local: Path, offset: int, store: Store, sha: str,
            bar: tqdm) -> bool:
    """Send local[offset:] to the .part through one paramiko exec channel (no OpenSSH
    client), with the same device command as the OpenSSH path; True when stored. The
    device-side writer holds the lock and ends when the channel closes.

    pyinfra's connection is used as it is: re-keying it to AES-GCM (0.87 of scp's rate
    against 0.7) deadlocked paramiko now and then (its own thread answered a channel close
    during the re-key and waited for the re-key), a risk this fallback path does not need.
    """
    transport = client.get_transport()
    assert transport is not None
    dest = store.part(sha)
    with transport.open_session() as chan, open(local, "rb") as f, stoppable(chan.close):
        chan.settimeout(300)  # a stalled link fails the push; the next run resumes it
        chan.exec_command(under_lock(store.lock(sha),
                                     writer_command(store, sha, offset, local.stat().st_size)))
        f.seek(offset)
        try:
            while (chunk := f.read(CHUNK)) and not interrupted():
                chan.sendall(chunk)
                bar.update(len(chunk))
        except OSError:
            if not (chan.exit_status_ready() or interrupted()):
                raise
            # the device command ended early (the lock is held, the .part moved): its
            # exit status says why
        else:
            chan.shutdown_write()
        if interrupted():
            chan.close()  # the device's writer sees EOF and ends, its lock with it
            raise LlamaDockerError(stopped_line(dest))
        code = chan.recv_exit_status()
        err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
    failed = lock_error(code, err, store.lock(sha))
    if failed:
        raise failed
    stored = received(code, err, offset, local.name, sha)
    if stored is None:
        raise LlamaDockerError(f"writing {dest} failed ({err or f'exit {code}'})")
    return stored


def push(client: paramiko.SSHClient, local: Path, sha: str, store: Store, label: str,
         target: SshTarget | None = None, aes: bool = True) -> tuple[int, int]:
    """Make `<sha>.gguf` exist and be verified on the device; return (bytes sent, resumed at).

    With a `target` the bytes go through the OpenSSH client (faster: 1.2-1.5x scp here, and
    it picks the cipher per CPU); without one, through pyinfra's own paramiko connection.
    """
    size = local.stat().st_size
    part = store.part(sha)
    offset = remote_size(client, part)
    if offset > size:  # not a prefix of this file: start over
        run_locked(client, store, sha, discard_command(part))
        offset = 0
    stored = False
    with tqdm(total=size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
              desc=f"{label} push", leave=False, disable=None, file=sys.stderr) as bar:
        if offset < size and target is not None:
            stored = _stream_openssh(target, aes, local, offset, store, sha, bar)
        elif offset < size:
            stored = _stream(client, local, offset, store, sha, bar)
    if not stored:
        verify_and_store(client, sha, store, local.name)
    return size - offset, offset


def verify_and_store(client: paramiko.SSHClient, sha: str, store: Store, name: str) -> None:
    """Hash the device's `.part`; only a match is stored (verify_command), else it raises.
    One command under the lock, so no writer can add bytes between the hash and the rename."""
    code, out, err = run_locked(client, store, sha, verify_command(store, sha))
    verified(code, out, err, store, sha, name)
