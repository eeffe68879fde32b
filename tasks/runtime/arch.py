"""Arch Linux and Manjaro (a Pinebook Pro's usual OS): docker or podman from pacman, run as
root; the server is the same systemd system unit as on Debian."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra.facts.pacman import PacmanPackages
from pyinfra.operations import pacman

from . import rootful
from .rootful import configure

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from ..batch import Wanted
    from ..plan import Plan


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    return [(PacmanPackages, {}), *rootful.wants(cfg, tgt)]


def install(plan: Plan) -> bool:
    runtime = plan.runtime
    installed = plan.known.get(PacmanPackages)
    missing = [p for p in (runtime, "curl") if p not in installed]
    if missing:
        # No `pacman -Sy`: Arch supports no partial upgrades, so this installs from the
        # package lists the device has (README: `sudo pacman -Syu` first if they are stale).
        pacman.packages(name=f"Install {runtime}", packages=missing, _sudo=True)
    return configure(plan)
