"""The relay: devices that hold a verified file pass it on to devices that need it.

One `Relay` per file and run. Each device that needs the file calls `obtain` from its own
greenlet: it takes a free source (a device holding the file verified, one receiver at a
time), else waits while a copy or the controller's first push is under way, else gets the
file from the controller: the first such push seeds the relay, a later one is a fallback
(the device reached no peer, or every source failed). A device that stored the file
becomes a source at once, so the holders double every copy time (relay_plan.py says why a
tree and not a pipeline).

`copy` puts the file on the receiver over a link (transfer/link.py): the receiver's forced
command runs the push's own store command, so a relayed copy is held to the push's rule:
written to the .part, hashed on the device, renamed and marked only when it matches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent.event
import paramiko

from llama_docker.device import link as device_link
from llama_docker.device.store import (
    SHORT,
    discard_command,
    lock_error,
    received,
)
from llama_docker.knobs.errors import LlamaDockerError, VerifyError
from llama_docker.transfer import link
from llama_docker.transfer.interrupt import interrupted
from llama_docker.transfer.link import Peer
from llama_docker.transfer.push import remote_size, run_locked, run_remote, verify_and_store

WAIT_SECONDS = 6 * 3600  # the longest a device waits for a source before the controller


class LinkDown(LlamaDockerError):
    """The sender could not reach the receiver at all (ssh's own failure): no byte moved."""


class SourceFailed(LlamaDockerError):
    """A copy from this source failed; another source (or the controller) is tried."""


def _last(err: str, code: int) -> str:
    return err.strip().splitlines()[-1] if err.strip() else f"exit {code}"


def copy(sender: Peer, receiver: Peer, sha: str, ext: str, size: int, name: str
         ) -> tuple[int, int]:
    """Make `<sha>.<ext>` exist and be verified on the receiver, sent by the sender from
    its own verified copy; return (bytes sent, resumed at). Raises LinkDown, SourceFailed,
    VerifyError (the bytes hash to another sha: the receiver kept nothing) or
    LlamaDockerError (the receiver's store refused: its lock, its disk)."""
    store = receiver.stores[ext]
    part = store.part(sha)
    try:
        link.receive_link(sender, receiver)
    except LlamaDockerError as exc:  # no link (a read-only authorized_keys, no ssh-keygen)
        raise LinkDown(f"no link from {sender.name}: {exc}") from None
    offset = remote_size(receiver.client, part)
    if offset > size:  # not a prefix of this file: start over
        run_locked(receiver.client, store, sha, discard_command(part))
        offset = 0
    stored = False
    if offset < size:
        stored = _send(sender, receiver, sha, ext, size, name, offset)
    if not stored:
        verify_and_store(receiver.client, sha, store, name)
    return size - offset, offset


def _send(sender: Peer, receiver: Peer, sha: str, ext: str, size: int, name: str,
          offset: int) -> bool:
    """Announce the copy on the receiver, run the sender's side, read what happened; True
    when the receiver verified and stored it as it arrived."""
    store = receiver.stores[ext]
    expect = device_link.expect_path(receiver.folder, sha, ext)
    code, out, _ = run_remote(receiver.client, device_link.write_file_command(
        expect, device_link.expect_text(store, sha, offset, size)))
    if code != 0:
        raise LlamaDockerError(f"{receiver.name}: cannot announce {name} for the relay "
                               f"({out.strip() or code})")
    source = sender.stores[ext].final(sha)
    cmd = device_link.send_command(
        source, offset, sha, ext, device_link.key_path(sender.folder),
        link.pinned_hosts(sender, receiver), receiver.user, receiver.address, receiver.port,
        sender.aes and receiver.aes)
    try:
        # A copy on the LAN; the bound only ends one that hangs without end.
        code, _, err = run_remote(sender.client, cmd, timeout=max(600, size / 1e6))
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise SourceFailed(f"the copy from {sender.name} stopped: {exc or 'link lost'}"
                           ) from None
    finally:
        try:
            run_remote(receiver.client, f"rm -f {expect}", timeout=60)
        except (OSError, EOFError, paramiko.SSHException):
            pass
    if code == device_link.SSH_FAILED:
        raise LinkDown(f"{sender.name} cannot reach {receiver.address}:{receiver.port} "
                       f"({_last(err, code)})")
    if code == device_link.NO_SOURCE:
        raise SourceFailed(f"{sender.name} holds no verified {name}")
    if code in (device_link.REFUSED, device_link.UNEXPECTED):
        raise LlamaDockerError(f"{receiver.name} refused the copy: {_last(err, code)}")
    failed = lock_error(code, err, store.lock(sha))
    if failed:
        raise failed
    if code == SHORT:  # the sender stopped: the .part is kept, the next source resumes it
        raise SourceFailed(f"the copy from {sender.name} ended before the last byte")
    stored = received(code, err, offset, name, sha)  # a bad byte raises VerifyError
    if stored is None:
        raise SourceFailed(f"the copy from {sender.name} failed ({_last(err, code)})")
    return stored


@dataclass
class Relay:
    """One file's relay in one run: who holds it, who sends, who waits."""

    name: str
    sha: str
    ext: str
    size: int
    holders: list[str] = field(default_factory=list)  # held it verified before this run
    receivers: list[str] = field(default_factory=list)  # need it in this run
    sources: list[str] = field(default_factory=list)  # hold it verified now, in order
    busy: set[str] = field(default_factory=set)
    bad: set[str] = field(default_factory=set)  # sent bytes that hashed to another sha
    seeding: bool = False
    active: int = 0
    changed: gevent.event.Event = field(default_factory=gevent.event.Event)

    def __post_init__(self) -> None:
        self.sources = list(self.holders)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = gevent.event.Event()

    def _free(self, me: str, tried: set[str]) -> tuple[list[str], list[str]]:
        candidates = [s for s in self.sources if s != me and s not in tried | self.bad]
        return candidates, [s for s in candidates if s not in self.busy]

    def obtain(self, me: str, from_peer: Callable[[str], tuple[int, int]],
               from_controller: Callable[[], tuple[bool, str]],
               say: Callable[[str], None]) -> tuple[bool, str]:
        """Get the file onto `me`: (stored, the line that says how)."""
        tried: set[str] = set()
        unreachable: list[str] = []
        failed: list[str] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while not interrupted():
            candidates, free = self._free(me, tried)
            if free:
                src = free[0]
                self.busy.add(src)
                self.active += 1
                try:
                    sent, offset = from_peer(src)
                except LinkDown as exc:  # the next source may be reachable, or none is
                    unreachable.append(str(exc))
                    tried.add(src)
                    continue
                except VerifyError as exc:
                    self.bad.add(src)
                    tried.add(src)
                    failed.append(f"{src}'s copy did not verify")
                    say(f"refused the copy from {src}: {exc}; trying another source")
                    continue
                except LlamaDockerError as exc:
                    tried.add(src)
                    failed.append(f"the copy from {src} failed")
                    say(f"the copy from {src} failed: {exc}; trying another source")
                    continue
                finally:
                    self.busy.discard(src)
                    self.active -= 1
                    self._notify()
                self.sources.append(me)
                self._notify()
                resumed = f", resumed from byte {offset}" if offset else ""
                return True, (f"received {sent} bytes of {self.name} from {src} over the "
                              f"device link{resumed}; sha256 verified")
            # Wait while a copy may still make a source this device has not tried: a
            # device that reaches no peer waits for the others, so the controller's link
            # carries its copy after theirs, and only then.
            underway = self.active > 0 or self.seeding
            if (candidates or underway) and time.monotonic() < deadline:
                self.changed.wait(timeout=1)
                continue
            return self._from_controller(unreachable, failed, from_controller, me)
        return False, f"interrupted: the relay of {self.name} stopped; re-run to resume"

    def _from_controller(self, unreachable: list[str], failed: list[str],
                         from_controller: Callable[[], tuple[bool, str]], me: str
                         ) -> tuple[bool, str]:
        """The controller's push: the relay's seed when no device holds a good copy (the
        others wait for it), else a fallback for a device no peer could serve."""
        first = not self.seeding and not [s for s in self.sources if s not in self.bad]
        self.seeding |= first
        try:
            ok, line = from_controller()
        finally:
            if first:
                self.seeding = False
            self._notify()
        if ok:
            self.sources.append(me)
            self._notify()
        if ok and unreachable:
            line += f" (from this controller: no peer could be reached: {unreachable[0]})"
        elif ok and failed:
            line += f" (from this controller: no peer could send it: {failed[-1]})"
        return ok, line
