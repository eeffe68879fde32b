"""Arch Linux and Manjaro (a Pinebook Pro's usual OS): docker or podman from pacman, run as
root; the server is the same systemd system unit as on Debian."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.pacman import PacmanPackages
from pyinfra.operations import pacman

from .preflight import Plan
from .runtime_rootful import configure


def install(plan: Plan) -> bool:
    runtime = plan.runtime
    installed = host.get_fact(PacmanPackages)
    missing = [p for p in (runtime, "curl") if p not in installed]
    if missing:
        # No `pacman -Sy`: Arch supports no partial upgrades, so this installs from the
        # package lists the device has (README: `sudo pacman -Syu` first if they are stale).
        pacman.packages(name=f"Install {runtime}", packages=missing, _sudo=True)
    return configure(plan)
