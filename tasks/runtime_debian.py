"""Debian, Raspberry Pi OS, Armbian, Ubuntu: docker.io from apt, as a system service."""

from __future__ import annotations

import io
import json

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, systemd

from .preflight import Plan

PACKAGES = ["docker.io", "curl"]


def daemon_json(mirror: str) -> str:
    """docker's daemon.json for a LAN registry mirror (plain HTTP, as LAN mirrors are)."""
    conf = {"registry-mirrors": [f"http://{mirror}"], "insecure-registries": [mirror]}
    return json.dumps(conf, indent=2, sort_keys=True) + "\n"


def install(plan: Plan) -> bool:
    installed = host.get_fact(DebPackages)
    missing = [p for p in PACKAGES if p not in installed]
    if missing:
        # Refresh the package lists only when something must be installed: a no-op run
        # stays a no-op.
        apt.packages(name="Install docker.io", packages=missing, update=True,
                     no_recommends=True, _sudo=True)
    changed = False
    if plan.cfg.registry_mirror:
        conf = files.put(name="Point docker at the registry mirror",
                         src=io.StringIO(daemon_json(plan.cfg.registry_mirror)),
                         dest="/etc/docker/daemon.json", mode="644", _sudo=True)
        changed = conf.will_change
    systemd.service(name="docker runs now and at boot", service="docker.service",
                    running=True, enabled=True, restarted=changed, _sudo=True)
    return changed
