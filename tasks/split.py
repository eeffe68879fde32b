"""A model split over several devices (the `split_over` knob on the head): llama.cpp's RPC.

The head runs llama-server as ever, with `--rpc` naming one loopback port per worker; each
port is an SSH local forward (a unit on the head) to the worker's RPC server, bound to the
worker's own loopback. The forward's key is made on the head, and each worker authorizes it
for that one forward only (llama_docker/device/link.py forward_options, made by
llama_docker/transfer/link.py, the relay's link); the worker's host key is pinned on the
head from the controller's own verified connection. Preflight splits the layers by each
device's free memory (llama_docker/device/split.py). The model is pushed to the head only:
the workers get their tensors over the links.
"""

from __future__ import annotations

import ipaddress
import shlex
from typing import TYPE_CHECKING, Any

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import python, server

from llama_docker.device import fit, link, rpc_units, split
from llama_docker.device.gateway_routes import address_of
from llama_docker.device.login import login_user
from llama_docker.knobs import config
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import ConfigError, RefusedError
from llama_docker.transfer import link as transfer_link
from llama_docker.transfer.link import Peer

from . import converge
from .common import say
from .service import SERVER_OWNER
from .split_facts import FreeMemory, LinkKeys, SplitState, TextOf
from .split_plan import Rpc, WorkerLink

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.transfer.local_model import LocalFile

    from .batch import Wanted
    from .plan import Plan

WORKER_STEPS = ("runtime", "image", "split")  # what a worker runs of a deploy


def _data(h: Any) -> dict[str, Any]:
    """Another host's knobs as its own run loads them (its data over the defaults)."""
    return {**DEFAULTS, **{k: v for k, v in h.data.dict().items() if v is not None}}


def _split_over(h: Any) -> tuple[str, ...]:
    value = h.data.get("split_over")
    return tuple(value) if isinstance(value, (list, tuple)) else ()


def heads_of(name: str) -> list[str]:
    """The inventory's hosts whose split_over names `name`."""
    return [h.name for h in host.state.inventory if name in _split_over(h)]


def check(cfg: config.Config, tgt: Target) -> str:
    """Refuse a split that cannot be (one line naming this host's knob or its head's);
    return the head this host is a worker of, or ""."""
    heads = heads_of(host.name)
    if len(heads) > 1:
        raise RefusedError(f"split_over of {' and '.join(heads)} both name {host.name}: a "
                           "worker serves one head at a time; keep it in one split_over")
    if heads and cfg.gateway_only:
        raise RefusedError(f"split_over of {heads[0]} names {host.name}, a gateway-only box: "
                           "it runs no model and no RPC worker; name another device")
    if heads and tgt.launchd:
        raise RefusedError(f"split_over of {heads[0]} names {host.name}, a Mac: an RPC worker "
                           "runs only under systemd (Linux, SteamOS); name another device")
    if heads and cfg.split_over:
        raise RefusedError(f"split_over: {host.name} is a worker of {heads[0]}, so it cannot "
                           "split a model of its own; drop it from one of the two")
    if not cfg.split_over:
        return heads[0] if heads else ""
    names = {h.name for h in host.state.inventory}
    for w in cfg.split_over:
        if w == host.name:
            raise RefusedError(f"split_over names {w}, this host itself: list the others")
        if w not in names:
            raise RefusedError(f"split_over names {w!r}, which is not in the inventory")
        if _split_over(host.state.inventory.get_host(w)):
            raise RefusedError(f"split_over names {w}, which splits a model of its own: a "
                               "worker cannot be a head")
    why = ("several models (models)" if cfg.models else "a gateway-only box"
           if cfg.gateway_only else "macOS" if tgt.is_macos else
           "model_source = 'direct' (the split is made from the model file's header)"
           if cfg.model_source == "direct" else "")
    if why:
        raise RefusedError(f"split_over is not for {why}; set split_over = [] here")
    return ""


def _free(h: Any) -> split.Member:
    free = h.get_fact(FreeMemory)
    if free is None:
        raise RefusedError(f"split_over: cannot read free memory on {h.name}")
    return split.Member(h.name, free.bytes, free.bound)


def _ssh_port(h: Any, wcfg: config.Config) -> int:
    if wcfg.lan_ssh_port:
        return wcfg.lan_ssh_port
    try:
        return int(h.connector.client.get_transport().getpeername()[1])
    except (AttributeError, TypeError, OSError, IndexError):
        return int(h.data.get("ssh_port") or 22)


def _worker(cfg: config.Config, index: int, name: str) -> tuple[WorkerLink, split.Member]:
    state = host.state
    h: Any = state.inventory.get_host(name)
    if h not in state.activated_hosts or getattr(h.connector, "client", None) is None:
        raise RefusedError(f"split_over: {name} is not connected in this run (left out by "
                           "--limit, or unreachable): the split needs every worker")
    try:
        wcfg = config.load(_data(h), name)
    except ConfigError as exc:
        raise RefusedError(f"split_over: {name}'s knobs do not load: {exc}") from None
    transport = h.connector.client.get_transport()
    key = transport.get_remote_server_key()
    found = WorkerLink(
        name=name, address=address_of(name, h.data, wcfg), ssh_port=_ssh_port(h, wcfg),
        login=login_user(h.data, h.connector.client), remote_port=wcfg.rpc_port,
        local_port=split.forward_port(cfg.rpc_port, index),
        host_key=(key.get_name(), key.get_base64()))
    return found, _free(h)


def prepare_head(cfg: config.Config, model: LocalFile, extra_bytes: int, unit_path: str
                 ) -> Rpc:
    """The head's split: each worker's link and the server's arguments, fitted by free
    memory (the split the head's unit has now kept while it still fits); RefusedError with
    the numbers when the devices together are not enough."""
    if model.shape is None:
        raise RefusedError("split_over: the model's layer count is unknown (its header was "
                           "not read); the split needs it")
    pairs = [_worker(cfg, i, w) for i, w in enumerate(cfg.split_over)]
    members = [_free(host), *(m for _, m in pairs)]
    weights = model.size + extra_bytes
    kv = fit.kv_cache_bytes(model.shape, cfg.ctx_size, model.size)
    ports = [w.local_port for w, _ in pairs]
    previous = split.previous_layers(host.get_fact(TextOf, path=unit_path), ports,
                                     model.shape.n_layer)
    done = split.split_layers(cfg.model.name, weights, kv, model.shape.n_layer,
                              cfg.ram_margin_mib, members, previous)
    if isinstance(done, str):
        raise RefusedError(done)
    say(host, done.line())
    links = tuple(w for w, _ in pairs)
    return Rpc(workers=links, server_args=split.server_args(done, [w.local_port for w in links]),
               head_address=address_of(host.name, _data(host), cfg))


# --- the step ------------------------------------------------------------------------------

def _unit_dir(t: Target) -> str:
    return t.unit_path.rsplit("/", 1)[0]


def _unit_path(t: Target, name: str) -> str:
    return f"{_unit_dir(t)}/{name}"


def wants(cfg: config.Config, t: Target) -> list[Wanted]:
    if t.launchd:
        return []
    worker = rpc_units.worker_unit_name(t.service)
    found: list[Wanted] = [(SplitState, _state_args(t)), (File, {"path": _unit_path(t, worker)})]
    if not cfg.split_over:  # a worker's own unit facts are asked when its step runs
        return found
    return [*found, *converge.file_facts(_unit_path(t, worker)),
            *converge.unit_facts(worker, t.rootless), (File, {"path": t.unit_path})]


def _state_args(t: Target) -> dict[str, str]:
    folder = rpc_units.rpc_link_dir(t.profile, t.home)
    return {"folder": _unit_dir(t), "pattern": rpc_units.link_unit_glob(t.service),
            "pub": link.key_path(folder) + ".pub", "keys": f"{t.home}/.ssh/authorized_keys"}


def step(plan: Plan, tag: str) -> None:
    """A head's links, a worker's RPC server; and what a host no longer in a split left."""
    t = plan.target
    if t.launchd:
        return
    rpc = plan.rpc
    if rpc.is_worker:
        _serve_worker(plan, tag, rpc.worker_of)
    else:
        _no_worker(plan)
    _links(plan, rpc)


def _op(plan: Plan) -> dict[str, Any]:
    t = plan.target
    return {"_sudo": t.sudo, "_env": t.unit_env(plan.uid)}


def _serve_worker(plan: Plan, tag: str, head: str) -> None:
    t, known = plan.target, plan.known
    cache = rpc_units.cache_dir(t.models_dir)
    converge.directory(known, name=f"RPC tensor cache {cache}", path=cache,
                       mode="755" if t.sudo else "700", _sudo=t.sudo)
    if t.sudo:  # the worker runs as the image's uid, which has no name on the device
        converge.owner(known, name="RPC tensor cache owned by the worker's user", path=cache,
                       uid_gid=SERVER_OWNER, _sudo=True)
    name = rpc_units.worker_unit_name(t.service)
    unit = rpc_units.worker_unit(runtime=t.runtime, image=tag, head=head,
                                 port=plan.cfg.rpc_port, threads=plan.threads, cache=cache,
                                 rootless=t.rootless)
    changed = converge.put_text(known, name=f"Unit {name}", text=unit,
                                dest=_unit_path(t, name), mode="644", _sudo=t.sudo)
    converge.running(known, name=f"{name} (RPC worker for {head}) runs now and at boot",
                     service=name, restarted=changed, daemon_reload=changed,
                     user_mode=t.rootless, **_op(plan))
    _keep_keys(plan, head)
    if known.get(File, path=t.unit_path):  # it served a model of its own before: no more
        converge.removed_unit(why="RPC worker only", service=t.unit_name,
                              paths=((t.unit_path, t.unit_name),), user_mode=t.rootless,
                              **_op(plan))
        say(host, f"rpc worker for {head}: {t.unit_name} stopped and removed (its models "
                  f"stay in {t.models_dir})")


def _keep_keys(plan: Plan, head: str | None) -> None:
    """Only `head`'s forward key stays authorized here (None: no head's)."""
    keep = f"{link.MARK}:{rpc_units.link_name(head)}" if head else None
    others = [k for k in plan.known.get(SplitState, **_state_args(plan.target))["key"]
              if k.split()[-1].endswith(":rpc") and k.split()[-1] != keep]
    if others:
        server.shell(name="Remove the RPC link keys of heads this device no longer serves",
                     commands=[rpc_units.unauthorize_others_command(head)])


def _no_worker(plan: Plan) -> None:
    t = plan.target
    name = rpc_units.worker_unit_name(t.service)
    path = _unit_path(t, name)
    if plan.known.get(File, path=path):
        converge.removed_unit(why="No longer an RPC worker", service=name,
                              paths=((path, name),), user_mode=t.rootless, **_op(plan))
    _keep_keys(plan, None)


def _key_dir(plan: Plan) -> str:
    return rpc_units.rpc_link_dir(plan.profile, plan.target.home)


def _links(plan: Plan, rpc: Rpc) -> None:
    """Each worker's link: key, authorization and pinned host key (made only when one of them
    is not as it should be), then its unit; links to workers no longer listed go."""
    t, known = plan.target, plan.known
    wanted = {rpc_units.link_unit_name(t.service, w.name) for w in rpc.workers}
    state = known.get(SplitState, **_state_args(t))
    for name in sorted(set(state["unit"]) - wanted):
        converge.removed_unit(why="Link no longer in split_over", service=name,
                              paths=((_unit_path(t, name), name),), user_mode=t.rootless,
                              **_op(plan))
    folder = _key_dir(plan)
    if not rpc.is_head:
        if state["pub"]:
            server.shell(name="Remove the RPC link key (no split_over here)",
                         commands=[f"rm -rf {shlex.quote(folder)}"])
        return
    pub_text = state["pub"][0] if state["pub"] else ""
    for w in rpc.workers:
        known_hosts = link.known_hosts_path(folder, f"{w.address}_{w.ssh_port}")
        if not _link_in_place(rpc, w, pub_text, known_hosts):
            python.call(name=f"RPC link to {w.name}: key here, allowed there for "
                             f"127.0.0.1:{w.remote_port} only, its host key pinned",
                        function=_make_link, worker=w, head_address=rpc.head_address,
                        folder=folder)
        name = rpc_units.link_unit_name(t.service, w.name)
        unit = rpc_units.link_unit(
            worker=w.name, local_port=w.local_port, remote_port=w.remote_port,
            key=link.key_path(folder), known_hosts=known_hosts, login=w.login,
            address=w.address, ssh_port=w.ssh_port, user=plan.user if t.sudo else None)
        changed = converge.put_text(known, name=f"Unit {name}", text=unit,
                                    dest=_unit_path(t, name), mode="644", _sudo=t.sudo)
        converge.running(known, name=f"{name} (link to {w.name}) runs now and at boot",
                         service=name, restarted=changed, daemon_reload=changed,
                         user_mode=t.rootless, **_op(plan))


def _link_in_place(rpc: Rpc, w: WorkerLink, pub_text: str, known_hosts: str) -> bool:
    if not pub_text:
        return False
    try:
        pub = link.public_key(pub_text, host.name)
    except Exception:  # noqa: BLE001 - a damaged key is remade
        return False
    line = link.authorized_line(link.forward_options(w.remote_port, _ip(rpc.head_address)),
                                pub, rpc_units.link_name(host.name))
    worker = host.state.inventory.get_host(w.name)
    pinned = link.known_hosts_line(w.address, w.ssh_port, *w.host_key)
    return (line in worker.get_fact(LinkKeys)
            and host.get_fact(TextOf, path=known_hosts).strip() == pinned)


def _ip(address: str) -> str | None:
    """The address when it is an IP literal (what a key's `from=` can name), as Peer.ip."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _make_link(state: Any, host: Any, worker: WorkerLink, head_address: str,
               folder: str) -> None:
    client = host.connector.client
    head = Peer(name=rpc_units.link_name(host.name), client=client,
                user=login_user(host.data, client), address=head_address, port=0,
                folder=folder)
    other = state.inventory.get_host(worker.name)
    wclient = other.connector.client
    receiver = Peer(name=worker.name, client=wclient, user=worker.login,
                    address=worker.address, port=worker.ssh_port, folder="")
    transfer_link.forward_link(head, receiver, worker.remote_port)
