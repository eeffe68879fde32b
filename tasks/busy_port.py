"""Preflight's port check: refuse a host whose port another program already holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_docker.device import listeners
from llama_docker.device.units import CONTAINER
from llama_docker.knobs.errors import RefusedError

from .facts import AgentPid, HostNetwork, PortListeners, PublishedPorts

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from .batch import Known, Wanted


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    """The facts the check reads, for preflight's one batch."""
    container = {"runtime": tgt.runtime, "container": CONTAINER}
    ours: list[Wanted] = ([(AgentPid, {"label": tgt.agent_label})] if tgt.native else
                          [(PublishedPorts, container), (HostNetwork, container)])
    return [(PortListeners, {"port": cfg.port}), *ours]


def check(cfg: Config, tgt: Target, known: Known, user: str) -> None:
    """Raise RefusedError naming the process when someone else listens on the port.

    Without it the server cannot bind, and the health check waits its whole timeout while
    the other program answers (a 404 for every try). Our own server holds the port on a
    converged device: that is not a reason to refuse.
    """
    found = known.get(PortListeners, port=cfg.port)
    host_network = False
    if tgt.native:
        published: set[int] = set()
        agent = known.get(AgentPid, label=tgt.agent_label)
    else:
        published = known.get(PublishedPorts, runtime=tgt.runtime, container=CONTAINER)
        host_network = known.get(HostNetwork, runtime=tgt.runtime, container=CONTAINER)
        agent = None
    # A split's head serves on the host's network: llama-server itself holds the port. So
    # does a head's server still running so after its split_over was dropped (this run
    # restarts it on a published port).
    if cfg.split_over or host_network:
        found = [f for f in found if f.name != "llama-server"]
    other = listeners.foreign(found, cfg.port, cfg.bind, published, agent)
    if other:
        raise RefusedError(listeners.refusal(other, cfg.port, user))
