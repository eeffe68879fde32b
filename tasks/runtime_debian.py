"""Debian, Raspberry Pi OS, Armbian, Ubuntu: docker.io or podman from apt, run as root."""

from __future__ import annotations

import io
import json

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, systemd

from .preflight import Plan

PODMAN_MIRROR = "/etc/containers/registries.conf.d/50-llama-docker-mirror.conf"


def daemon_json(mirror: str) -> str:
    """docker's daemon.json for a LAN registry mirror (plain HTTP, as LAN mirrors are)."""
    conf = {"registry-mirrors": [f"http://{mirror}"], "insecure-registries": [mirror]}
    return json.dumps(conf, indent=2, sort_keys=True) + "\n"


def registries_conf(mirror: str) -> str:
    """containers-registries.conf(5) drop-in: pull docker.io images through the mirror."""
    return ('[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
            f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n')


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
