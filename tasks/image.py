"""Server image: built once per (architecture, build args) on the first device that needs
it, shipped from the controller's cache to the others (tasks/image_once.py); skipped when
the device holds the cached image's ID, or holds the tag while this controller's cache has
no archive of it (another laptop, a cleared cache): a converged device is left alone, and
its image is saved into the cache only if a device that lacks it needs it. With
image_source = "device" each device builds its own, as every device did before the cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.context import ctx_host
from pyinfra.operations import files, python

from llama_docker.device.image import (
    BUILD_FILES,
    build_command,
    gpu_build_args,
    image_tag,
    pinned_build_args,
    snapshot_url,
)
from llama_docker.device.store import images_dir
from llama_docker.device.units import FILES
from llama_docker.transfer.image_archive import DeviceImage, ImageCache
from llama_docker.transfer.image_ship import stage_tag

from . import image_once, relay
from .common import deploy
from .facts import ImageId
from .summary import note_move

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from .batch import Wanted
    from .plan import Plan


def config_build_args(cfg: Config, tgt: Target) -> dict[str, str]:
    """The build args of this device's image: the pins, then the GPU variant."""
    pinned = pinned_build_args(cfg.image_base, cfg.apt_check_valid_until,
                               cfg.llama_cpp_version, cfg.debian_snapshot, cfg.image_rebuild)
    return gpu_build_args(pinned, tgt.gpu.backend)


def server_tag(cfg: Config, tgt: Target) -> str:
    """The content-hash tag of the server image this device runs."""
    return image_tag(config_build_args(cfg, tgt))


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    return [] if tgt.native else [(ImageId, {"runtime": tgt.runtime,
                                             "tag": server_tag(cfg, tgt)})]


def _need(plan: Plan, args: dict[str, str], tag: str) -> image_once.Need:
    t = plan.target
    return image_once.Need(
        tag=tag, arch=plan.arch, runtime=t.runtime, sudo=t.sudo, user=plan.user,
        build_dir=t.build_dir,
        stage_build=build_command(t.runtime, args, stage_tag(tag), t.build_dir),
        images_dir=images_dir(t.models_dir), hash_cmd=plan.store.hash_cmd,
        cache_dir=plan.cfg.cache_dir, aes=plan.aes, env=plan.env)


@deploy("Server image")
def image(plan: Plan) -> tuple[str, bool]:
    """Return the image tag and whether it is built in this run."""
    t = plan.target
    if t.native:
        return "", False  # Homebrew's llama-server runs on the Mac itself: no image
    args = config_build_args(plan.cfg, t)
    tag = image_tag(args)
    own = plan.cfg.image_source == "device"
    cache = ImageCache(Path(plan.cfg.cache_dir).expanduser())
    entry = None if own else cache.lookup(tag, plan.arch)
    have = DeviceImage.parse(plan.known.get(ImageId, runtime=t.runtime, tag=tag))
    if have is not None and (own or (entry is not None and have.holds(entry))):
        return tag, False  # its own build, or the same bits as every other device of its CPU
    need = _need(plan, args, tag)
    if have is not None and entry is None:
        # Converged, and no archive here to compare with: nothing changes on this device (no
        # save, no restart). A device of its CPU that lacks the image gets this one's.
        image_once.holds(ctx_host.get(), need)  # the Host itself, not the context proxy
        return tag, False
    if entry is None and have is None:  # this device may be the one that builds it
        files.directory(name="Build context folder", path=t.build_dir, mode="755",
                        _sudo=t.sudo)
        for name in BUILD_FILES:
            files.put(name=f"Build context: {name}", src=str(FILES / name),
                      dest=f"{t.build_dir}/{name}",
                      mode="755" if name.endswith(".sh") else "644", _sudo=t.sudo)
    pin = ", ".join(f"{k}={v}" for k, v in (("llama.cpp-tools", plan.cfg.llama_cpp_version),
                                            ("apt", snapshot_url(plan.cfg.debian_snapshot)))
                    if v) or "unpinned"
    if own:
        python.call(name=f"Server image {tag}: build on this device ({pin})",
                    function=image_once.build_here, need=need)
        return tag, True
    me = ctx_host.get()  # the Host itself, not the context proxy
    need = replace(need, relay=relay.enlist(plan, me))
    if entry is not None and need.relay:  # the cached archive: a relay's file from the start
        relay.join(me.name, entry.sha256, "tar", entry.size,
                   image_once.archive_name(tag, plan.arch))
    elif entry is not None:
        note_move(host.name, f"server image {tag} ({plan.arch})", entry.size)
    how = (f"ship the cached archive (llama.cpp {entry.version}, made on {entry.made_on})"
           if entry else f"build once for {plan.arch} ({pin}) on the first device, then ship")
    python.call(name=f"Server image {tag}: {how}", function=image_once.ensure, need=need)
    if need.relay:
        python.call(name=f"Remove the archive of {tag} kept for the relay",
                    function=image_once.drop_archives, need=need)
    return tag, True
