"""What every root-run Linux family does after its package manager: point the runtime at a
registry mirror and keep docker running (Debian and Arch share this)."""

from __future__ import annotations

import io
import json

from pyinfra.operations import files, systemd

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


def configure(plan: Plan) -> bool:
    """Mirror configuration and a running docker; True when docker's configuration changed."""
    mirror = plan.cfg.registry_mirror
    if plan.runtime == "podman":
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
