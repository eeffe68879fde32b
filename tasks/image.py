"""Server image: pushed build context, built on the device, skipped when the tag exists."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.operations import files, server

from llama_docker.image import BUILD_FILES, build_args, gpu_build_args, image_tag
from llama_docker.units import FILES

from .facts import ImageId

if TYPE_CHECKING:
    from llama_docker.config import Config
    from llama_docker.target import Target

    from .batch import Wanted
    from .plan import Plan


def build_command(runtime: str, args: dict[str, str], tag: str, context: str) -> str:
    flags = " ".join(f"--build-arg {k}={shlex.quote(v)}" for k, v in sorted(args.items()))
    # docker 20.10's legacy builder is what Debian ships; BuildKit is not assumed.
    env = "DOCKER_BUILDKIT=0 " if runtime == "docker" else ""
    return (f"{env}{runtime} build {flags} -t {tag} -f {context}/Containerfile "
            f"{shlex.quote(context)}")


def _args(cfg: Config, tgt: Target) -> dict[str, str]:
    return gpu_build_args(build_args(cfg.image_base, cfg.apt_check_valid_until), tgt.gpu.backend)


def _tag(cfg: Config, tgt: Target) -> str:
    return image_tag(_args(cfg, tgt))


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    return [] if tgt.runtime == "native" else [(ImageId, {"runtime": tgt.runtime,
                                                          "tag": _tag(cfg, tgt)})]


@deploy("Server image")
def image(plan: Plan) -> tuple[str, bool]:
    """Return the image tag and whether it is built in this run."""
    t = plan.target
    if t.runtime == "native":
        return "", False  # Homebrew's llama-server runs on the Mac itself: no image
    args = _args(plan.cfg, t)
    tag = image_tag(args)
    env = plan.env  # macOS: Homebrew's docker and colima's context; {} elsewhere
    if plan.known.get(ImageId, runtime=t.runtime, tag=tag):
        return tag, False
    files.directory(name="Build context folder", path=t.build_dir, mode="755", _sudo=t.sudo)
    for name in BUILD_FILES:
        files.put(name=f"Build context: {name}", src=str(FILES / name),
                  dest=f"{t.build_dir}/{name}", mode="755" if name.endswith(".sh") else "644",
                  _sudo=t.sudo)
    server.shell(name=f"Build {tag} (llama-server from Debian's llama.cpp)",
                 commands=[build_command(t.runtime, args, tag, t.build_dir)], _sudo=t.sudo,
                 _env=env)
    return tag, True
