"""The server image made once per (architecture, build args) and shipped to the others.

Every device that needs the image runs the same operation. Under one controller-side lock
per image, the first device to get there finds the cache empty and makes the archive: it
saves the image from a device of the run that already holds the tag (one tasks/image.py
left alone, converged), or builds it, and its archive goes into the controller's cache.
Every other device then gets that archive through the models' resumable, verified push,
hashed on the device before `load`, and checked by image ID after it. The build runs on a
device, never on the controller: a laptop has no docker of its own to count on, nor one that
builds for a Pi's CPU, and a device has the runtime and the registry mirror the build needs.
"""

from __future__ import annotations

import shlex
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gevent.lock import Semaphore

from llama_docker.device import diagnose
from llama_docker.device.login import root_command
from llama_docker.device.progress import Ticker
from llama_docker.device.store import Store, forget_command
from llama_docker.knobs.errors import LlamaDockerError, VerifyError
from llama_docker.transfer.hashing import verify_once
from llama_docker.transfer.image_archive import CachedImage, DeviceImage, ImageCache
from llama_docker.transfer.image_ship import (
    build_script,
    inspect_command,
    load_command,
    save_to,
    save_via_ssh,
)
from llama_docker.transfer.progress import ByteProgress
from llama_docker.transfer.push import SshTarget, push

from . import relay
from .common import host_sudo_password, run_as, say, say_error
from .progress import run_shown

# One maker per image: (cache, tag, arch) -> lock. pyinfra runs a host's operation in a
# greenlet, so the others wait here while the first builds.
_locks: defaultdict[tuple[str, str, str], Semaphore] = defaultdict(Semaphore)
# Devices of this run that hold the tag while the cache has no archive of it, by (cache,
# tag, arch), with what it takes to save from them (noted while the run is planned).
_holders: defaultdict[tuple[str, str, str], list[tuple[Any, Need]]] = defaultdict(list)


@dataclass(frozen=True)
class Need:
    """What one device needs to make or receive the image (decided at prepare time)."""

    tag: str
    arch: str
    runtime: str
    sudo: bool
    user: str
    build_dir: str
    stage_build: str  # the build command of the first stage (build_script finishes it)
    images_dir: str  # where the pushed archive lands on the device
    hash_cmd: str
    cache_dir: str
    aes: bool
    env: dict[str, str] = field(default_factory=dict)
    relay: bool = False  # enlisted in the relay (tasks/relay.py): the archive may come from a peer


def archive_name(tag: str, arch: str) -> str:
    """What the run calls an image's archive: `server-0774c39c4fc3-arm64.tar`."""
    return f"{tag.rsplit('/', 1)[-1].replace(':', '-')}-{arch}.tar"


# Archives received in this run and kept for the relay's other receivers, by host name:
# removed by drop_archives, the step after every device's image step.
_kept: defaultdict[str, list[tuple[Store, str]]] = defaultdict(list)


def holds(host, need: Need) -> None:  # noqa: ANN001 - a pyinfra Host
    """Note a device that holds the image although the cache has no archive of it: a device
    that lacks it is then given this one's image (saved once into the cache), not a build."""
    _holders[(need.cache_dir, need.tag, need.arch)].append((host, need))


def _short(image_id: str) -> str:
    return image_id[:12]


def _run(host, need: Need, command: str, timeout: int = 600,  # noqa: ANN001
         shown: Ticker | None = None) -> str | None:
    """Run a device command as the runtime's user; None, or the line of its output that
    names the cause (apt's `E:` line rather than the builder's exit code), with the knob or
    command that fixes it where one does (llama_docker/device/diagnose.py). `shown`: a long
    command, its progress said at least every 30 s while it runs (tasks/progress.py)."""
    if shown is not None:
        ok, lines = run_shown(host, command, need.sudo, shown, need.env, timeout)
    else:
        ok, out = run_as(host, command, need.sudo, _env=need.env, _timeout=timeout,
                         print_output=False)
        lines = out.stdout_lines + out.stderr_lines
    if ok:
        return None
    why, fix = diagnose.cause(lines) or "no message", diagnose.hint(lines)
    return f"{why} ({fix})" if fix else why


def device_image(host, need: Need) -> DeviceImage | None:  # noqa: ANN001
    """The tag's image as the device's runtime describes it; None when absent."""
    ok, out = run_as(host, inspect_command(need.runtime, need.tag), need.sudo, _env=need.env,
                     _timeout=60, print_output=False)
    return DeviceImage.parse(out.stdout_lines[0] if ok and out.stdout_lines else None)


def _env_prefix(env: dict[str, str]) -> str:
    return "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " \
        if env else ""


def _build(host, need: Need, why: str) -> tuple[DeviceImage, float]:  # noqa: ANN001
    """Build the image on this device (`why`: the rest of the line said first, after `on this
    device`); the image and the seconds it took. Raises when the build fails or leaves no
    image."""
    say(host, f"building {need.tag} for {need.arch} on this device{why}")
    t = time.monotonic()
    err = _run(host, need, build_script(need.runtime, need.stage_build, need.tag,
                                        need.build_dir), timeout=3600,
               shown=Ticker(f"building {need.tag} for {need.arch}"))
    if err:
        raise LlamaDockerError(f"building {need.tag} failed: {err}")
    have = device_image(host, need)
    if have is None:
        raise LlamaDockerError(_absent_after_build(host, need))
    return have, time.monotonic() - t


# docker's containerd image store does not fetch a pulled base's layer whose snapshot a
# loaded image already made (from an archive of uncompressed layers): the base, and every
# image built on it, then lacks content, and inspecting its layers fails.
UNREADABLE_BUILD = ("{tag} was built, but {runtime} cannot read its layers (its containerd "
                    "image store lacks the base image's layer, which it did not fetch because "
                    "a loaded image already had it): run `sudo systemctl stop llama-docker && "
                    "sudo docker image prune -a -f` on the device, then run again")


def _absent_after_build(host, need: Need) -> str:  # noqa: ANN001
    """Why a build left no readable image: none at all, or one without its content."""
    tag = shlex.quote(need.tag)
    ok, out = run_as(host, f"{need.runtime} image inspect --format '{{{{.Id}}}}' {tag} "
                           "2>/dev/null || true", need.sudo, _env=need.env, _timeout=60,
                     print_output=False)
    if ok and out.stdout_lines and out.stdout_lines[0].strip():
        return UNREADABLE_BUILD.format(tag=need.tag, runtime=need.runtime)
    return f"{need.tag} is not on the device after its build"


def _holder(host, need: Need) -> tuple[Any, Need, DeviceImage] | None:  # noqa: ANN001
    """Another device of the run that holds the image now (asked again: it may have gone)."""
    for other, other_need in _holders.get((need.cache_dir, need.tag, need.arch), []):
        if other is host:
            continue
        try:
            have = device_image(other, other_need)
        except Exception as exc:  # noqa: BLE001 - a device gone since: build here instead
            say(host, f"{other.name} holds {need.tag} but cannot be asked for it ({exc})")
            continue
        if have is not None:
            return other, other_need, have
    return None


def _make(host, need: Need, cache: ImageCache) -> tuple[CachedImage, bool]:  # noqa: ANN001
    """The archive, into the cache; and whether this device holds its image already."""
    have = device_image(host, need)
    made, took, source, source_need = "saved", "", host, need
    if have is None:
        found = _holder(host, need)
        if found is not None:
            source, source_need, have = found
        else:
            have, secs = _build(host, need, f", the first {need.arch} device to need it "
                                            "(once; the others get its archive)")
            made, took = "built", f" in {secs:.1f} s"
    try:
        entry, sha, saved = _save(source, source_need, have, cache)
    except LlamaDockerError as exc:
        if source is host:
            raise
        say(host, f"saving {need.tag} from {source.name} failed ({exc}); building it here")
        have, secs = _build(host, need, " instead")
        made, took, source = "built", f" in {secs:.1f} s", host
        entry, sha, saved = _save(host, need, have, cache)
    where = "on this device" if source is host else f"on {source.name}, which holds it,"
    say(host, f"{made} {need.tag} {where}{took} ({need.arch}, llama.cpp "
              f"{have.version or 'unknown'}, image {_short(entry.image_id)}); its archive "
              f"({entry.size} bytes, sha256 {_short(sha)}, saved in {saved:.1f} s) is in the "
              f"controller's cache for every other {need.arch} device")
    return entry, source is host


def _save(host, need: Need, have: DeviceImage, cache: ImageCache  # noqa: ANN001
          ) -> tuple[CachedImage, str, float]:
    """`save` the image on this device into the cache: (entry, archive sha256, seconds)."""
    save = _env_prefix(need.env) + f"{need.runtime} save {shlex.quote(need.tag)}"
    cmd, stdin = (root_command(save, host_sudo_password(host)) if need.sudo
                  else (save, None))
    part = cache.part(need.tag, need.arch)
    t = time.monotonic()
    target = SshTarget.from_data(host.name, host.data)
    with ByteProgress(f"{host.name} image save", f"saving {need.tag} into the controller's "
                      "cache", lambda line: say(host, line)) as shown:
        sha = (save_via_ssh(target.argv(need.aes), cmd, stdin, part, shown) if target
               else save_to(host.connector.client, cmd, stdin, part, shown))
    saved = time.monotonic() - t
    entry = cache.add(need.tag, need.arch, part, sha, host.name)
    if not have.holds(entry):
        cache.forget(need.tag, need.arch)
        raise LlamaDockerError(f"the saved archive holds image {entry.image_id}, the device "
                               f"has {have.image_id}")
    return entry, sha, saved


def _receive(host, need: Need, entry: CachedImage, cache: ImageCache) -> None:  # noqa: ANN001
    try:  # a cache damaged since it was written is never sent (hashed once per change)
        verify_once(Path(entry.path), entry.sha256, cache.root / "verified")
    except VerifyError:
        cache.forget(need.tag, need.arch)
        raise LlamaDockerError(f"the cached archive {entry.path} is damaged (its sha256 is "
                               "not the one recorded): deleted; re-run to make it "
                               "again") from None
    d = shlex.quote(need.images_dir)
    err = _run(host, need, f"mkdir -p {d} && chown {shlex.quote(need.user)} {d}"
               if need.sudo else f"mkdir -p {d}")
    if err:
        raise LlamaDockerError(f"cannot create {need.images_dir} on the device: {err}")
    store = Store(need.images_dir, need.hash_cmd, ext="tar")
    transport = host.connector.client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)
    t = time.monotonic()
    if need.relay:  # from a device of the run that has it, else pushed once from here
        relay.join(host.name, entry.sha256, "tar", entry.size,
                   archive_name(need.tag, need.arch))
        ok, how = relay.obtain(host, entry.sha256, lambda: _push_archive(host, need, entry,
                                                                          store))
    else:
        ok, how = _push_archive(host, need, entry, store)
    if not ok:
        raise LlamaDockerError(how)
    pushed, t = time.monotonic() - t, time.monotonic()
    # Only a verified file has the final name: nothing else is ever loaded.
    err = _run(host, need, load_command(need.runtime, store.final(entry.sha256),
                                           entry.image_id, need.tag), 1800,
               Ticker(f"loading {need.tag} from its archive"))
    loaded = time.monotonic() - t
    if err:
        raise LlamaDockerError(f"{need.runtime} load of {store.final(entry.sha256)} failed: "
                               f"{err}; the running server is untouched")
    have = device_image(host, need)
    if have is None or not have.holds(entry):
        got = f"image {have.image_id}" if have else "absent"
        raise LlamaDockerError(f"after the load {need.tag} is {got}, expected image "
                               f"{entry.image_id}; the running server is untouched")
    if need.relay:  # a source for the others until every device's image step is done
        _kept[host.name].append((store, entry.sha256))
    else:
        _run(host, need, forget_command(store, entry.sha256))
    say(host, f"loaded {need.tag} (llama.cpp {have.version or 'unknown'}, image "
              f"{_short(entry.image_id)} as made on {entry.made_on}): {how}; the image "
              f"checked by ID after the load (archive in {pushed:.1f} s, load {loaded:.1f} s)")


def _push_archive(host, need: Need, entry: CachedImage, store: Store  # noqa: ANN001
                  ) -> tuple[bool, str]:
    """The archive pushed from the controller's cache: (stored, the line that says how)."""
    target = SshTarget.from_data(host.name, host.data)
    try:
        sent, offset = push(host.connector.client, Path(entry.path), entry.sha256, store,
                            f"{host.name} image", target, need.aes)
    except LlamaDockerError as exc:
        return False, str(exc)
    via = "ssh" if target else "paramiko"
    resumed = f", resumed from byte {offset}" if offset else ""
    return True, (f"sent {sent} bytes of its archive via {via}{resumed}; sha256 verified "
                  "before the load")


def drop_archives(state, host, need: Need) -> bool:  # noqa: ANN001 - pyinfra's callback shape
    """The archives this device kept for its peers, removed once every device's image step
    has ended (pyinfra runs a step on all hosts before the next)."""
    for store, sha in _kept.pop(host.name, []):
        err = _run(host, need, forget_command(store, sha))
        if err:
            say(host, f"could not remove the archive kept for the relay, {store.final(sha)} "
                      f"({err})")
    return True


def build_here(state, host, need: Need) -> bool:  # noqa: ANN001 - pyinfra's callback shape
    """image_source = "device": this device builds its own image; nothing is saved or
    shipped, so devices built on other days may hold other llama.cpp versions."""
    try:
        have, secs = _build(host, need, " (image_source = device: every device "
                                        "builds its own)")
    except LlamaDockerError as exc:
        say_error(host, str(exc))
        return False
    say(host, f"built {need.tag} on this device in {secs:.1f} s "
              f"({need.arch}, llama.cpp {have.version or 'unknown'}, image "
              f"{_short(have.image_id)})")
    return True


def ensure(state, host, need: Need) -> bool:  # noqa: ANN001 - pyinfra's callback shape
    """The image on this device, the same bits as on every other of its architecture."""
    cache = ImageCache(Path(need.cache_dir))
    try:
        with _locks[(str(cache.root), need.tag, need.arch)]:
            entry = cache.lookup(need.tag, need.arch)
            if entry is None:
                entry, here = _make(host, need, cache)
                if here:
                    return True
        have = device_image(host, need)
        if have is not None and have.holds(entry):
            return True
        _receive(host, need, entry, cache)
    except LlamaDockerError as exc:
        say_error(host, str(exc))
        return False
    return True
