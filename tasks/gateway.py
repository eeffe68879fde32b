"""Gateway: on the host whose `gateway` knob is True, one OpenAI-compatible address for the
whole fleet (HAProxy in a container), its routes generated from the inventory; a no-op on
every other host and on a converged one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import files, server

from llama_docker.device import gateway_routes
from llama_docker.device.gateway_config import (
    CONTAINERFILE,
    HEALTH_PATH,
    OWNER,
    UNIT,
    haproxy_config,
    image_tag,
    systemd_unit,
)
from llama_docker.device.health import gateway_wait
from llama_docker.device.image import build_args, build_command
from llama_docker.device.target import gateway_health_url
from llama_docker.device.units import FILES
from llama_docker.knobs import apikey
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import RefusedError

from . import converge
from .common import deploy, notes, say
from .facts import ImageId, NumericOwner

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from .batch import Wanted
    from .plan import Plan


def config_file(tgt: Target) -> str:
    return f"{tgt.config_dir}/gateway.cfg"


def unit_path() -> str:
    return f"/etc/systemd/system/{UNIT}"


def build_dir(tgt: Target) -> str:
    return f"{tgt.build_dir}-gateway"


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    if not tgt.system_units:
        return []
    if not cfg.gateway:  # one switched off is removed: is its unit still there?
        return [(File, {"path": unit_path()})]
    return [(ImageId, {"runtime": tgt.runtime,
                       "tag": image_tag(cfg.image_base, cfg.apt_check_valid_until)}),
            *converge.dir_facts(tgt.config_dir), *converge.file_facts(config_file(tgt)),
            (NumericOwner, {"path": config_file(tgt)}), *converge.file_facts(unit_path()),
            *converge.unit_facts(UNIT, False)]


def inventory_hosts() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every host of the inventory with its knob data (defaults under host and group data)."""
    for h in host.state.inventory:
        data = {k: v for k, v in h.data.dict().items() if v is not None}
        yield h.name, {**DEFAULTS, **data}


def _table() -> dict[str, list[gateway_routes.Upstream]]:
    table, skipped = gateway_routes.routes(inventory_hosts())
    for name, why in sorted(skipped.items()):
        say(host, f"gateway: {name} left out of the routes: {why}")
    gateway_routes.check(table)
    return table


def check(cfg: Config, tgt: Target) -> None:
    """Preflight's part: refuse a gateway host that cannot run it, or routes it cannot serve,
    before anything changes."""
    if not cfg.gateway:
        return
    if not tgt.system_units:
        raise RefusedError(f"gateway: runs on a Debian or Arch device (this host is "
                           f"{tgt.profile})")
    _table()


def _image(plan: Plan) -> tuple[str, bool]:
    t, cfg = plan.target, plan.cfg
    tag = image_tag(cfg.image_base, cfg.apt_check_valid_until)
    if plan.known.get(ImageId, runtime=t.runtime, tag=tag):
        return tag, False
    where = build_dir(t)
    files.directory(name="Gateway build context folder", path=where, mode="755", _sudo=True)
    files.put(name="Gateway build context: Containerfile", src=str(FILES / CONTAINERFILE),
              dest=f"{where}/Containerfile", mode="644", _sudo=True)
    args = build_args(cfg.image_base, cfg.apt_check_valid_until)
    server.shell(name=f"Build {tag} (HAProxy from Debian)",
                 commands=[build_command(t.runtime, args, tag, where)], _sudo=True)
    return tag, True


def _switched_off(plan: Plan) -> None:
    """A host whose `gateway` knob went back to False: its gateway stops, its unit and its
    routes (which hold the keys) go. Its image stays, as cheap to keep as to rebuild."""
    t = plan.target
    if not t.system_units or plan.known.get(File, path=unit_path()) is None:
        return
    converge.removed_unit(why="Gateway switched off", service=UNIT,
                          paths=((unit_path(), "its unit"), (config_file(t), "its routes")),
                          _sudo=True)
    say(host, f"gateway switched off: {UNIT} stopped and removed")


@deploy("Gateway")
def gateway(plan: Plan) -> bool:
    """Return True when the gateway is (re)started in this run."""
    cfg, t, known = plan.cfg, plan.target, plan.known
    if not cfg.gateway:
        _switched_off(plan)
        return False
    table = _table()
    client_key = apikey.resolve(cfg.api_key, Path(cfg.cache_dir).expanduser())
    tag, built = _image(plan)
    converge.directory(known, name=t.config_dir, path=t.config_dir, mode="755", _sudo=True)
    path = config_file(t)
    # The devices' key and the clients' key are in this file: 0400, for the gateway's uid.
    changed = converge.put_text(known, name="Gateway routes (HAProxy, 0400)",
                                text=haproxy_config(table, client_key), dest=path,
                                mode="400", _sudo=True)
    changed |= converge.owner(known, name="Gateway routes owned by the gateway user",
                              path=path, uid_gid=OWNER, force=changed, _sudo=True)
    unit = systemd_unit(runtime=t.runtime, image=tag, port=cfg.gateway_port, bind=cfg.bind,
                        config_file=path)
    unit_changed = converge.put_text(known, name=f"Unit {UNIT}", text=unit,
                                     dest=unit_path(), mode="644", _sudo=True)
    restarted = converge.running(known, name=f"{UNIT} runs now and at boot",
                                 service=UNIT,
                                 restarted=changed or built or unit_changed,
                                 daemon_reload=unit_changed, _sudo=True)
    if restarted:
        server.shell(name=f"Gateway answers {HEALTH_PATH}",
                     commands=[gateway_wait(gateway_health_url(cfg))])
    models = ", ".join(f"{m} ({len(u)})" for m, u in sorted(table.items()))
    line = f"{'gateway only' if cfg.gateway_only else 'gateway'} on port {cfg.gateway_port}: "
    notes[host.name] = line + models
    say(host, notes[host.name])
    return restarted
