"""What every root-run Linux family does after its package manager: point the runtime at a
registry mirror and keep docker running (Debian and Arch share this)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import converge
from .converge import file_facts, unit_facts

if TYPE_CHECKING:
    from llama_docker.config import Config
    from llama_docker.target import Target

    from .batch import Wanted
    from .preflight import Plan


PODMAN_MIRROR = "/etc/containers/registries.conf.d/50-llama-docker-mirror.conf"
DOCKER_CONF = "/etc/docker/daemon.json"


def daemon_json(mirror: str) -> str:
    """docker's daemon.json for a LAN registry mirror (plain HTTP, as LAN mirrors are)."""
    conf = {"registry-mirrors": [f"http://{mirror}"], "insecure-registries": [mirror]}
    return json.dumps(conf, indent=2, sort_keys=True) + "\n"


def registries_conf(mirror: str) -> str:
    """containers-registries.conf(5) drop-in: pull docker.io images through the mirror."""
    return ('[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
            f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n')


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    mirror = file_facts(PODMAN_MIRROR if tgt.runtime == "podman" else DOCKER_CONF)
    docker = unit_facts("docker.service", user_mode=False) if tgt.runtime == "docker" else []
    return (mirror if cfg.registry_mirror else []) + docker


def configure(plan: Plan) -> bool:
    """Mirror configuration and a running docker; True when docker's configuration changed."""
    mirror, known = plan.cfg.registry_mirror, plan.known
    if plan.runtime == "podman":
        if not mirror:
            return False
        return converge.put_text(known, name="Pull docker.io through the registry mirror",
                                 text=registries_conf(mirror), dest=PODMAN_MIRROR, mode="644",
                                 _sudo=True)
    changed = False
    if mirror:
        changed = converge.put_text(known, name="Point docker at the registry mirror",
                                    text=daemon_json(mirror), dest=DOCKER_CONF, mode="644",
                                    _sudo=True)
    converge.running(known, name="docker runs now and at boot", service="docker.service",
                     restarted=changed, _sudo=True)
    return changed
