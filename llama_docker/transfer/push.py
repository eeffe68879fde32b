"""Put a model file on a device over the SSH connection pyinfra already holds.

The file lands as `<sha256>.part`, is resumed from its size on the next try, is hashed on
the device, and only then is renamed to `<sha256>.gguf` with a `<sha256>.ok` marker beside
it. Nothing unverified ever has the final name, so nothing unverified is ever served.

A fresh push (no .part on the device) is hashed as it is written: `tee` puts the bytes in
the .part and hands the same bytes to the hash, so the file needs no second read. A resumed
push hashes the whole .part after the last byte: its first bytes came in an earlier run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from tqdm import tqdm

from llama_docker.knobs.errors import LlamaDockerError, VerifyError
from llama_docker.transfer.interrupt import die_with_parent, interrupted, stoppable

CHUNK = 1 << 20
BUSY = 75   # exit status of a device command that found the lock held by another process
MOVED = 76  # exit status of a write that found the .part not at the size this deploy read
NOLOCK = 77  # exit status of a device command that could not create the lock file at all
MISMATCH = 78  # exit status of a fresh push whose bytes hash to another sha (.part deleted)
SHORT = 79  # exit status of a fresh push that ended before the last byte (.part kept)
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
    ext: str = "gguf"  # "tar": the server image's archive rides the same push

    def final(self, sha: str) -> str:
        return f"{self.root}/{sha}.{self.ext}"

    def part(self, sha: str) -> str:
        return f"{self.root}/{sha}.{self.ext}.part"

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

    def stdin_hash_command(self) -> str:
        """The same hash of its stdin (the tool chosen before it reads a byte: a failed
        openssl could not hand the bytes it took to sha256sum)."""
        if self.hash_cmd != "sha256sum":
            return self.hash_cmd
        return ("if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r; "
                "else sha256sum; fi")

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


def owner() -> str:
    """Who holds a lock, as another deploy's refusal names it."""
    return f"{socket.gethostname()} {os.getpid()}"


def under_lock(lock: str, body: str) -> str:
    """A device command that runs `body` holding the model's lock, or exits BUSY.

    The lock is flock(2) on fd 9, which every process `body` starts inherits: it lives
    exactly as long as the processes that write the file. A deploy that dies (Ctrl-C,
    SIGKILL, a dropped link) leaves no lock behind once its writer has seen EOF, and a
    writer that is still running keeps it, so a dead owner is never "taken over" while its
    bytes still arrive. flock(1) is util-linux's; macOS has perl's flock instead. The file
    is removed on the way out; `-ef` catches a lock taken on a file just removed.
    """
    q = shlex.quote(lock)
    script = (
        f'msg=$(touch {q} 2>&1) || {{ echo "nolock ${{msg##*: }}" >&2; exit {NOLOCK}; }}; '
        f"exec 9>>{q} || exit {NOLOCK}; "
        "if command -v flock >/dev/null 2>&1; then flock -n 9; else perl -MFcntl=:flock "
        "-e 'open(my $f, \">>&=\", 9) or exit 1; flock($f, LOCK_EX | LOCK_NB) or exit 1'; fi "
        f"&& [ {q} -ef /dev/fd/9 ] || {{ echo \"busy $(cat {q} 2>/dev/null)\" >&2; "
        f"exit {BUSY}; }}; echo {shlex.quote(owner())} > {q}; trap 'rm -f {q}' EXIT; {body}"
    )
    return f"sh -c {shlex.quote(script)}"


def busy_error(err: str, lock: str) -> LlamaDockerError:
    """The refusal when another process holds the lock, naming its deploy."""
    who = next((line.split(None, 1)[1] for line in err.splitlines()
                if line.startswith("busy ") and len(line.split()) > 1), "an unknown deploy")
    return LlamaDockerError(f"another deploy ({who}) is writing this model on the device "
                            f"({lock}); wait for it: the lock goes with its last writer")


def lock_failure(lock: str, err: str) -> str | None:
    """The one-line error for a lock file that could not be created at all (a store this
    user cannot write): not another deploy's lock. None when err says no such thing."""
    for line in err.splitlines():
        if line.startswith("nolock"):
            why = line.removeprefix("nolock").strip() or "it could not be created"
            return f"cannot create the lock {lock} on the device: {why}"
    return None


def lock_error(code: int, err: str, lock: str) -> LlamaDockerError | None:
    """What a device command's exit status says about the lock, if anything."""
    if code == BUSY:
        return busy_error(err, lock)
    if code == NOLOCK:
        return LlamaDockerError(lock_failure(lock, err)
                                or f"cannot create the lock {lock} on the device")
    return None


def run_locked(client: paramiko.SSHClient, store: Store, sha: str, body: str,
               timeout: float = 3600) -> tuple[int, str, str]:
    """run_remote of `body` under the model's device-side lock; a lock not had raises."""
    code, out, err = run_remote(client, under_lock(store.lock(sha), body), timeout)
    failed = lock_error(code, err, store.lock(sha))
    if failed:
        raise failed
    return code, out, err


def append_command(part: str, offset: int) -> str:
    """Append stdin to `part`, but only if it still holds exactly `offset` bytes: another
    deploy may have written it since this one read its size."""
    return f"{_at_offset(part, offset)}; cat >> {shlex.quote(part)}"


def _at_offset(part: str, offset: int) -> str:
    q = shlex.quote(part)
    return (f'[ "$( [ -e {q} ] && wc -c < {q} || echo 0)" -eq {offset} ] || '
            f"{{ echo 'the .part changed since its size was read' >&2; exit {MOVED}; }}")


def _durable(*paths: str) -> str:
    """Wait until `paths` are on the disk (`sync FILE`: coreutils and BusyBox; a `sync` of
    everything where the tool takes no names)."""
    return f"{{ sync {' '.join(paths)} 2>/dev/null || sync; }}"


def store_command(store: Store, sha: str) -> str:
    """Give a verified .part its final name and the `.ok` marker; prints `stored`.

    The bytes reach the disk before the name does, and the name and the marker before
    `stored`: a power cut right after a push (a Pi unplugged once the run ends) can never
    leave a marked file whose bytes were still in the page cache, which later runs would
    trust. Read-only once verified, so a stray write fails. The store belongs to the SSH
    user (pushes need no sudo); owning it by root would not stop a user with sudo."""
    part, final, marker, root = (shlex.quote(p) for p in (
        store.part(sha), store.final(sha), store.marker(sha), store.root))
    return (f"{_durable(part)} && chmod 0444 {part} && mv -f {part} {final} && "
            f"rm -f {marker} && echo {sha} > {marker} && chmod 0444 {marker} && "
            f"{_durable(marker, root)} && echo stored")


def receive_command(store: Store, sha: str, size: int) -> str:
    """A fresh push's device side: write stdin to an empty .part and hash the same bytes
    on their way (`tee` into the hash), then store the file if they hash to `sha`.

    The hash sees what tee wrote: a write that failed makes tee exit non-zero, and the
    push fails with the .part kept as the prefix it is. Exits SHORT when stdin ended
    before `size` bytes (the sender stopped: the .part is kept for the next run, which
    hashes it whole), MISMATCH with `hashes <sha>` on stderr when all bytes arrived and
    hash to another sha (the .part is deleted, nothing is stored), 0 once stored.
    """
    q = shlex.quote(store.part(sha))
    return (f"{_at_offset(store.part(sha), 0)}; "
            f'r=$( {{ {{ tee {q}; echo "tee=$?" >&3; }} | {{ {store.stdin_hash_command()}; }}; }} '
            "3>&1 ); set -f; t=; h=; "
            # the status and the digest come back in either order; the digest is the word
            # of 64 characters (openssl's `<hex> *stdin`, sha256sum's `<hex>  -`)
            'for w in $r; do case $w in tee=*) t=${w#tee=};; *) [ ${#w} -eq 64 ] && h=$w;; '
            'esac; done; [ "$t" = 0 ] || exit "${t:-1}"; '
            f'[ "$(wc -c < {q})" -ge {size} ] || exit {SHORT}; '
            f'if [ "$h" = {sha} ]; then {store_command(store, sha)} >/dev/null; exit; fi; '
            f'rm -f {q}; echo "hashes ${{h:-nothing}}" >&2; exit {MISMATCH}')


def stopped_line(dest: str) -> str:
    """What an interrupted push says: the next run resumes from the bytes in `dest`."""
    return (f"interrupted: the push to {dest} stopped; re-run to resume from the bytes on "
            "the device")


def mismatch_error(name: str, said: str, sha: str) -> VerifyError:
    """The refusal of a file whose bytes on the device are not the expected ones."""
    return VerifyError(f"{name} on the device {said}, expected {sha}: the partial "
                       "file was deleted, re-run to send it again")


def _received(code: int, err: str, fresh: bool, name: str, sha: str) -> bool | None:
    """What the device's writer said: True stored (a fresh push verified as it arrived),
    False written but not verified yet, None for a failure the caller reports."""
    if fresh and code == MISMATCH:
        said = next((line for line in err.splitlines() if line.startswith("hashes ")),
                    "hashes nothing")
        raise mismatch_error(name, said, sha)
    if code == 0:
        return fresh
    if fresh and code == SHORT:
        return False
    return None


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


def hashed_on_arrival(offset: int) -> bool:
    """Whether the device hashes the bytes as they arrive: only when they are the whole file
    (a resumed .part's first bytes came in an earlier run, so it is hashed after the last)."""
    return offset == 0


def writer_command(store: Store, sha: str, offset: int, size: int) -> str:
    """The device command that receives local[offset:]: written and hashed at once
    (receive_command), or appended to the .part (hashed after the last byte)."""
    if hashed_on_arrival(offset):
        return receive_command(store, sha, size)
    return append_command(store.part(sha), offset)


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
    stored = _received(proc.returncode, err, hashed_on_arrival(offset), local.name, sha)
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
    stored = _received(code, err, hashed_on_arrival(offset), local.name, sha)
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
        run_locked(client, store, sha, f"rm -f {shlex.quote(part)}")
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
    """Hash the device's `.part`; only a match gets the final name and the `.ok` marker.
    One command under the lock, so no writer can add bytes between the hash and the rename."""
    part, marker = shlex.quote(store.part(sha)), shlex.quote(store.marker(sha))
    body = (f"if [ -f {marker} ] && [ ! -e {part} ]; then echo stored; exit 0; fi; "
            f"out=$({store.hash_command(store.part(sha))}) || "
            f"{{ rm -f {part}; echo unhashable; exit 0; }}; "
            f'set -- $out; if [ "$1" = {sha} ]; then {store_command(store, sha)}; '
            f'else rm -f {part}; echo "hashes $1"; fi')
    code, out, err = run_locked(client, store, sha, body)
    said = out.strip().splitlines()[-1] if out.strip() else ""
    if code == 0 and said == "stored":
        return
    if said.startswith(("hashes", "unhashable")):
        why = said if said.startswith("hashes") else f"could not be hashed ({err.strip()})"
        raise mismatch_error(name, why, sha)
    raise LlamaDockerError(f"storing {store.final(sha)} failed: {err.strip() or code}")
