"""The relay in a run: which hosts need a file, which hold it, and each host's way to it.

While pyinfra prepares the run, each host with `relay` on says which model files it holds
verified (`hold`) and which it needs (`need`), and the server image's archive from the
controller's cache (`join`); an archive made in this run joins at execution. Each needing
host's push callback calls `obtain`, which takes the file from a device that has it
(llama_docker/transfer/relay.py), or from this controller: once per file, or when the host
reaches no peer. A dry run prints the plan (`plan_lines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_docker.device import link as device_link
from llama_docker.device.gateway_routes import address_of
from llama_docker.device.login import login_user
from llama_docker.device.store import Store, images_dir
from llama_docker.transfer import relay_plan
from llama_docker.transfer.link import Peer
from llama_docker.transfer.relay import Relay, copy

from .common import say

if TYPE_CHECKING:
    from collections.abc import Callable

    from llama_docker.transfer.local_model import LocalFile

    from .plan import Plan


@dataclass(frozen=True)
class _Spec:
    """What a host is to its peers, known at prepare time (its connection comes later)."""

    address: str
    port: int  # 0: the port this controller's connection uses
    folder: str
    stores: dict[str, Store]
    aes: bool


LOOPBACK = ("127.0.0.1", "localhost", "::1")
_relays: dict[str, Relay] = {}  # sha256 -> the file's relay in this run
_specs: dict[str, _Spec] = {}  # host name -> its spec


def enlist(plan: Plan, host: Any) -> bool:
    """Note how peers reach this host and where its files go; False when it takes no part
    (`relay` off, a Mac's native server, or an address no other device could reach)."""
    address = address_of(host.name, host.data, plan.cfg)
    if not plan.cfg.relay or plan.target.native or address in LOOPBACK:
        return False
    images = Store(images_dir(plan.target.models_dir), plan.store.hash_cmd, ext="tar")
    _specs[host.name] = _Spec(
        address=address, port=plan.cfg.lan_ssh_port,
        folder=device_link.link_dir(plan.profile, plan.target.home),
        stores={"gguf": plan.store, "tar": images}, aes=plan.aes)
    return True


def _relay(sha: str, ext: str, size: int, name: str) -> Relay:
    return _relays.setdefault(sha, Relay(name=name, sha=sha, ext=ext, size=size))


def hold(plan: Plan, host: Any, local: LocalFile, name: str) -> None:
    """This host holds the model file verified: a source for the others from the start."""
    if not enlist(plan, host):
        return
    relay = _relay(local.sha256, "gguf", local.size, name)
    if host.name not in relay.holders:
        relay.holders.append(host.name)
        relay.sources.append(host.name)


def need(plan: Plan, host: Any, local: LocalFile, name: str) -> bool:
    """This host needs the model file; True when it joins the relay (else it is pushed as
    ever)."""
    if local.path is None or not enlist(plan, host):
        return False
    join(host.name, local.sha256, "gguf", local.size, name)
    return True


def join(host_name: str, sha: str, ext: str, size: int, name: str) -> None:
    """This (enlisted) host needs `<sha>.<ext>`: a receiver of its relay. The server
    image's archive joins at execution, once the first device of its CPU has made it."""
    relay = _relay(sha, ext, size, name)
    if host_name not in relay.receivers:
        relay.receivers.append(host_name)


def joined(host_name: str, sha: str) -> bool:
    relay = _relays.get(sha)
    return relay is not None and host_name in relay.receivers


def _port(host: Any, spec: _Spec) -> int:
    if spec.port:
        return spec.port
    transport = host.connector.client.get_transport()
    try:
        return int(transport.getpeername()[1])
    except (AttributeError, TypeError, OSError, IndexError):
        return int(host.data.get("ssh_port") or 22)


def _peer(host: Any) -> Peer:
    spec = _specs[host.name]
    client = host.connector.client
    return Peer(name=host.name, client=client, user=login_user(host.data, client),
                address=spec.address, port=_port(host, spec), folder=spec.folder,
                stores=spec.stores, aes=spec.aes)


def obtain(host: Any, sha: str, push: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    """The file `sha` (joined) onto this host from a peer, else through `push` (this
    controller's)."""
    relay = _relays[sha]
    inventory = host.state.inventory

    def from_peer(src: str) -> tuple[int, int]:
        sender = _peer(inventory.get_host(src))
        return copy(sender, _peer(host), relay.sha, relay.ext, relay.size, relay.name)

    return relay.obtain(host.name, from_peer, push, lambda line: say(host, line))


def controller_bytes() -> tuple[int, int]:
    """(bytes, devices) the relays' files cost this controller's link: one copy each."""
    copies = [r.size for r in _relays.values()
              if relay_plan.controller_copies(r.holders, r.receivers)]
    return sum(copies), len(copies)


def plan_lines() -> list[str]:
    """Who sends each relayed file to whom, for a dry run's plan."""
    return [line for r in _relays.values()
            for line in relay_plan.plan_lines(r.name, r.holders, r.receivers)]
