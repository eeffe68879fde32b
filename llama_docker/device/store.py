"""The device's content-addressed store, and the text of every command that writes to it.

A file lands as `<sha256>.<ext>.part`, is resumed from its size on the next try, is hashed
on the device, and only then is renamed to `<sha256>.<ext>` with a `<sha256>.ok` marker
beside it. Nothing unverified ever has the final name, so nothing unverified is ever served.
The links (`current.gguf`, ...) name what is served; a prune never deletes a linked file.

A fresh write (no .part on the device) is hashed as it is written: `tee` puts the bytes in
the .part and hands the same bytes to the hash, so the file needs no second read. A resumed
one hashes the whole .part after the last byte: its first bytes came in an earlier run.

Here is what is said to the device and what its answers mean; how the bytes get there (the
OpenSSH client or paramiko) is llama_docker/transfer/push.py.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import socket
from dataclasses import dataclass

from llama_docker.knobs.errors import LlamaDockerError, VerifyError

MODEL_FILE = re.compile(r"^[0-9a-f]{64}\.gguf$")
# the last two: a set's preset (device/router_preset.py)
LINKS = ("current.gguf", "previous.gguf", "current-mmproj.gguf", "previous-mmproj.gguf",
         "current-set.ini", "previous-set.ini")
BUSY = 75   # exit status of a device command that found the lock held by another process
MOVED = 76  # exit status of a write that found the .part not at the size this deploy read
NOLOCK = 77  # exit status of a device command that could not create the lock file at all
MISMATCH = 78  # exit status of a fresh push whose bytes hash to another sha (.part deleted)
SHORT = 79  # exit status of a fresh push that ended before the last byte (.part kept)


@dataclass(frozen=True)
class Store:
    """A content-addressed store on a device: the models, and the same rules for the server
    image's archive (ext "tar") and the web UI's tarball (ext "tar.gz")."""

    root: str
    hash_cmd: str = "sha256sum"
    ext: str = "gguf"

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


# --- which files a run keeps, and the links that name what is served


def images_dir(models_dir: str) -> str:
    """The server image archives' store, beside the model store:
    `/var/lib/llama-docker/images` for the default one."""
    return posixpath.join(posixpath.dirname(models_dir.rstrip("/")) or "/", "images")


def after_switch(newest_first: list[str], links: dict[str, str], serve: dict[str, str]
                 ) -> tuple[list[str], dict[str, str]]:
    """The store as a run leaves it: each served file the newest, and each `current*` link
    moved to it, its old target kept by the matching `previous*` link.

    + serve: link name -> file it will point at, e.g. {"current.gguf": "<sha>.gguf"}
    """
    files = list(newest_first)
    after = dict(links)
    for link, name in serve.items():
        files = [name] + [n for n in files if n != name]
        old = after.get(link)
        if old != name:
            if old:
                after[link.replace("current", "previous", 1)] = old
            after[link] = name
    return files, after


def to_prune(newest_first: list[str], linked: set[str], keep: int) -> list[str]:
    """Stored files to delete: never a linked one; beyond those, keep the `keep` newest."""
    stored = [n for n in newest_first if MODEL_FILE.match(n)]
    kept = [n for n in stored if n in linked]
    for name in stored:
        if len(kept) >= keep:
            break
        if name not in kept:
            kept.append(name)
    return [n for n in stored if n not in kept]


def link_commands(root: str, link: str, target: str, folder: bool = False) -> str:
    """Make `root/link` point at `target` atomically: a new link renamed over the old one.

    Plain `mv -f` (GNU and BSD alike; macOS has no `-T`) renames over a link to a file.
    A link to a `folder` needs GNU's `mv -T` (only systemd devices have such links): without
    it mv would follow the old link and move the new one into the folder it points at.
    """
    tmp = shlex.quote(f"{root}/.{link}.tmp")
    mv = "mv -fT" if folder else "mv -f"
    return f"ln -sfn {shlex.quote(target)} {tmp} && {mv} {tmp} {shlex.quote(root + '/' + link)}"


def forget_command(store: Store, sha: str) -> str:
    """Delete a stored file and its marker (a pruned model, a loaded image archive)."""
    return f"rm -f {shlex.quote(store.final(sha))} {shlex.quote(store.marker(sha))}"


# --- the lock: one writer per file


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


# --- writing a file: its size, the bytes, the verify-then-rename


def size_command(path: str) -> str:
    """The size of a file on the device in bytes; 0 when there is none."""
    return f"wc -c < {shlex.quote(path)} 2>/dev/null || echo 0"


def discard_command(path: str) -> str:
    """Delete a .part that cannot be resumed (longer than the file it should be a prefix of)."""
    return f"rm -f {shlex.quote(path)}"


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


def mismatch_error(name: str, said: str, sha: str) -> VerifyError:
    """The refusal of a file whose bytes on the device are not the expected ones."""
    return VerifyError(f"{name} on the device {said}, expected {sha}: the partial "
                       "file was deleted, re-run to send it again")


def received(code: int, err: str, offset: int, name: str, sha: str) -> bool | None:
    """What writer_command's exit status says: True stored (a fresh push verified as it
    arrived), False written but not verified yet, None for a failure the caller reports."""
    fresh = hashed_on_arrival(offset)
    if fresh and code == MISMATCH:
        said = next((line for line in err.splitlines() if line.startswith("hashes ")),
                    "hashes nothing")
        raise mismatch_error(name, said, sha)
    if code == 0:
        return fresh
    if fresh and code == SHORT:
        return False
    return None


def verify_command(store: Store, sha: str) -> str:
    """Hash the device's `.part`; only a match gets the final name and the `.ok` marker.
    Run under the lock, so no writer can add bytes between the hash and the rename."""
    part, marker = shlex.quote(store.part(sha)), shlex.quote(store.marker(sha))
    return (f"if [ -f {marker} ] && [ ! -e {part} ]; then echo stored; exit 0; fi; "
            f"out=$({store.hash_command(store.part(sha))}) || "
            f"{{ rm -f {part}; echo unhashable; exit 0; }}; "
            f'set -- $out; if [ "$1" = {sha} ]; then {store_command(store, sha)}; '
            f'else rm -f {part}; echo "hashes $1"; fi')


def verified(code: int, out: str, err: str, store: Store, sha: str, name: str) -> None:
    """Raise unless verify_command's answer says the file is stored."""
    said = out.strip().splitlines()[-1] if out.strip() else ""
    if code == 0 and said == "stored":
        return
    if said.startswith(("hashes", "unhashable")):
        why = said if said.startswith("hashes") else f"could not be hashed ({err.strip()})"
        raise mismatch_error(name, why, sha)
    raise LlamaDockerError(f"storing {store.final(sha)} failed: {err.strip() or code}")
