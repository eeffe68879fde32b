"""Debian, Raspberry Pi OS, Armbian, Ubuntu: docker.io or podman from apt, run as root."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt

from . import rootful
from .rootful import configure

if TYPE_CHECKING:
    from llama_docker.config import Config
    from llama_docker.target import Target

    from ..batch import Wanted
    from ..plan import Plan


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    return [(DebPackages, {}), *rootful.wants(cfg, tgt)]


def install(plan: Plan) -> bool:
    runtime = plan.runtime
    packages = ["docker.io" if runtime == "docker" else "podman", "curl"]
    installed = plan.known.get(DebPackages)
    missing = [p for p in packages if p not in installed]
    if missing:
        # Refresh the package lists only when something must be installed: a no-op run
        # stays a no-op.
        apt.packages(name=f"Install {runtime}", packages=missing, update=True,
                     no_recommends=runtime == "docker", _sudo=True)
    return configure(plan)
