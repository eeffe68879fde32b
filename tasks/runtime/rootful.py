"""What every root-run Linux family does after its package manager: point the runtime at a
registry mirror and keep docker running (Debian and Arch share this)."""

from __future__ import annotations

import shlex
from io import StringIO
from typing import TYPE_CHECKING, Any

from pyinfra.operations import files, server

from llama_docker.device import daemon_json
from llama_docker.knobs.errors import RefusedError

from .. import converge
from ..converge import file_facts, unit_facts
from ..facts import TextFile

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from ..batch import Known, Wanted
    from ..plan import Plan


PODMAN_MIRROR = "/etc/containers/registries.conf.d/50-llama-docker-mirror.conf"
DOCKER_CONF = daemon_json.PATH


def registries_conf(mirror: str) -> str:
    """containers-registries.conf(5) drop-in: pull docker.io images through the mirror."""
    return ('[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n'
            f'[[registry.mirror]]\nlocation = "{mirror}"\ninsecure = true\n')


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    if tgt.runtime == "podman":
        return file_facts(PODMAN_MIRROR) if cfg.registry_mirror else []
    # daemon.json is read whatever the knobs: an invalid one is refused before docker is
    # (re)started with it.
    return [(TextFile, {"path": DOCKER_CONF}),
            *unit_facts("docker.service", user_mode=False)]


def docker_conf(known: Known, mirror: str) -> tuple[bool, str | None]:
    """(whether daemon.json exists, its merged text or None when it needs no change).
    Raises RefusedError, naming the file, for a file docker could not read."""
    kind, text = known.get(TextFile, path=DOCKER_CONF)
    if kind == "other":
        raise RefusedError(f"{DOCKER_CONF} is not a regular file that can be read: fix or "
                           "remove it, then run again (it was left as it is)")
    current = text if kind == "file" else None
    if not mirror:
        daemon_json.parse(current)
        return current is not None, None
    return current is not None, daemon_json.with_mirror(current, mirror)


def check(cfg: Config, tgt: Target, known: Known) -> None:
    """Preflight: refuse a daemon.json docker could not read, before anything changes."""
    if tgt.runtime == "docker":
        docker_conf(known, cfg.registry_mirror)


def configure(plan: Plan) -> bool:
    """Mirror configuration and a running docker; True when docker's configuration changed."""
    mirror, known = plan.cfg.registry_mirror, plan.known
    if plan.runtime == "podman":
        if not mirror:
            return False
        return converge.put_text(known, name="Pull docker.io through the registry mirror",
                                 text=registries_conf(mirror), dest=PODMAN_MIRROR, mode="644",
                                 _sudo=True)
    existed, text = docker_conf(known, mirror)
    if text is not None:
        if existed:
            conf, backup = shlex.quote(DOCKER_CONF), shlex.quote(daemon_json.BACKUP)
            server.shell(name=f"Keep the previous daemon.json once as {daemon_json.BACKUP}",
                         commands=[f"[ -e {backup} ] || cp -p {conf} {backup}"], _sudo=True)
        # An existing file keeps its own mode and owner (pyinfra copies into it).
        mode: dict[str, Any] = {} if existed else {"mode": "644"}
        files.put(name="Merge the registry mirror into docker's daemon.json",
                  src=StringIO(text), dest=DOCKER_CONF, _sudo=True, **mode)
    converge.running(known, name="docker runs now and at boot", service="docker.service",
                     restarted=text is not None, _sudo=True)
    return text is not None
