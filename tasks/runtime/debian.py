"""Debian, Raspberry Pi OS, Armbian, Ubuntu: docker.io or podman from apt, run as root; a
docker engine the user installed from another apt source is used as it is."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Which
from pyinfra.operations import apt, server

from llama_docker.device.apt import APT_LOCK_WAIT, update_waiting
from llama_docker.knobs.errors import RefusedError

from ..common import say
from ..facts import PathExists
from . import rootful
from .rootful import configure

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from ..batch import Known, Wanted
    from ..plan import Plan


SNAP_DOCKER = "/snap/bin/docker"  # Ubuntu Server's installer offers docker as a snap


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    return [(DebPackages, {}), (PathExists, {"path": SNAP_DOCKER}), (Which, {"command": "docker"}),
            *rootful.wants(cfg, tgt)]


def check(cfg: Config, tgt: Target, known: Known) -> None:
    """Refuse docker from a snap (where no apt engine is there to use): its confinement
    keeps it from bind-mounting the model store, and docker.io installed beside it would
    compete with it for /run/docker.sock."""
    installed = known.get(DebPackages)
    if (tgt.runtime == "docker" and engine(installed) not in installed
            and known.get(PathExists, path=SNAP_DOCKER)):
        raise RefusedError(f"docker is installed as a snap ({SNAP_DOCKER}), which cannot "
                           f"mount the model store ({tgt.models_dir}): remove it "
                           "(sudo snap remove docker) or set runtime = \"podman\"")
    rootful.check(cfg, tgt, known)


# Docker engines from other apt sources: docker.com's docker-ce, Microsoft's moby-engine.
# Each conflicts with Debian's docker.io, so installing docker.io beside one would have apt
# remove the user's engine (and with it the containerd their containers run on).
OTHER_ENGINES = ("docker-ce", "moby-engine")


def engine(installed: Collection[str]) -> str:
    """The docker package this host uses: the one already installed, else docker.io."""
    return next((p for p in ("docker.io", *OTHER_ENGINES) if p in installed), "docker.io")


def install(plan: Plan) -> bool:
    runtime = plan.runtime
    installed = plan.known.get(DebPackages)
    packages = [engine(installed) if runtime == "docker" else "podman", "curl"]
    if packages[0] in OTHER_ENGINES:
        version = " ".join(sorted(installed[packages[0]]))  # pyinfra gives a set of versions
        say(host, f"docker: {packages[0]} {version} is installed; "
                  "using it (docker.io is not installed beside it)")
    missing = [p for p in packages if p not in installed]
    # Debian's docker.io ships its client as docker-cli of its own from Debian 14 (forky) on,
    # a Recommends only, which --no-install-recommends leaves out.
    cli = packages[0] == "docker.io" and not plan.known.get(Which, command="docker")
    if missing or cli:
        # Refresh the package lists only when something must be installed: a no-op run
        # stays a no-op.
        server.shell(name="Refresh the package lists", commands=[update_waiting()],
                     _sudo=True)
    if missing:
        apt.packages(name=f"Install {runtime}", packages=missing,
                     no_recommends=runtime == "docker", extra_install_args=APT_LOCK_WAIT,
                     _sudo=True)
    if cli:
        server.shell(name="The docker client (docker-cli where docker.io has none)",
                     commands=["command -v docker >/dev/null || DEBIAN_FRONTEND=noninteractive "
                               f"apt-get install -y --no-install-recommends {APT_LOCK_WAIT} "
                               "docker-cli"], _sudo=True)
    return configure(plan)
