"""Server image: pushed build context, built on the device, skipped when the tag exists."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from llama_docker.image import BUILD_FILES, build_args, image_tag
from llama_docker.units import FILES

from .facts import ImageId
from .preflight import Plan

CONTEXT = "/opt/llama-docker/build"


@deploy("Server image")
def image(plan: Plan) -> tuple[str, bool]:
    """Return the image tag and whether it is built in this run."""
    args = build_args(plan.cfg.image_base, plan.cfg.apt_check_valid_until)
    tag = image_tag(args)
    runtime = "docker"
    if host.get_fact(ImageId, runtime=runtime, tag=tag, _sudo=True):
        return tag, False
    files.directory(name="Build context folder", path=CONTEXT, mode="755", _sudo=True)
    for name in BUILD_FILES:
        files.put(name=f"Build context: {name}", src=str(FILES / name),
                  dest=f"{CONTEXT}/{name}", mode="755" if name.endswith(".sh") else "644",
                  _sudo=True)
    flags = " ".join(f"--build-arg {k}={shlex.quote(v)}" for k, v in sorted(args.items()))
    server.shell(
        name=f"Build {tag} (llama-server from Debian's llama.cpp)",
        commands=[f"DOCKER_BUILDKIT=0 {runtime} build --pull=false {flags} -t {tag} "
                  f"-f {CONTEXT}/Containerfile {CONTEXT}"],
        _sudo=True,
    )
    return tag, True
