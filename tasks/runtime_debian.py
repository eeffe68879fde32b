"""Debian, Raspberry Pi OS, Armbian, Ubuntu: docker.io or podman from apt, run as root."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt

from .preflight import Plan
from .runtime_rootful import configure


def install(plan: Plan) -> bool:
    runtime = plan.runtime
    packages = ["docker.io" if runtime == "docker" else "podman", "curl"]
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p not in installed]
    if missing:
        # Refresh the package lists only when something must be installed: a no-op run
        # stays a no-op.
        apt.packages(name=f"Install {runtime}", packages=missing, update=True,
                     no_recommends=runtime == "docker", _sudo=True)
    return configure(plan)
