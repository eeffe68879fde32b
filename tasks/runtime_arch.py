"""Arch Linux and Manjaro (a Pinebook Pro's usual OS): docker or podman from pacman, run as
root; the server is the same systemd system unit as on Debian."""

from __future__ import annotations

import io

from pyinfra import host
from pyinfra.facts.pacman import PacmanPackages
from pyinfra.operations import files, pacman, systemd

from .preflight import Plan
from .runtime_debian import PODMAN_MIRROR, daemon_json, registries_conf


def install(plan: Plan) -> bool:
    runtime = plan.runtime
    installed = host.get_fact(PacmanPackages)
    missing = [p for p in (runtime, "curl") if p not in installed]
    if missing:
        # No `pacman -Sy`: Arch supports no partial upgrades, so this installs from the
        # package lists the device has (README: `sudo pacman -Syu` first if they are stale).
        pacman.packages(name=f"Install {runtime}", packages=missing, _sudo=True)
    mirror = plan.cfg.registry_mirror
    if runtime == "podman":
        if not mirror:
            return False
        return files.put(name="Pull docker.io through the registry mirror",
                         src=io.StringIO(registries_conf(mirror)), dest=PODMAN_MIRROR,
                         mode="644", _sudo=True).will_change
    changed = False
    if mirror:
        changed = files.put(name="Point docker at the registry mirror",
                            src=io.StringIO(daemon_json(mirror)),
                            dest="/etc/docker/daemon.json", mode="644", _sudo=True).will_change
    systemd.service(name="docker runs now and at boot", service="docker.service",
                    running=True, enabled=True, restarted=changed, _sudo=True)
    return changed
