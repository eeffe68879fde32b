"""The gateway's routing table, generated from the inventory: model name -> devices.

The one place that says which devices serve which model, so a knob that gives a device
several models plugs in at `served_models` and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_docker.knobs import apikey, config
from llama_docker.knobs.errors import ConfigError, RefusedError


@dataclass(frozen=True)
class Upstream:
    """One device's llama-server, as the gateway reaches it."""

    host: str  # inventory name
    address: str
    port: int
    api_key: str | None  # the device's key (the gateway sends it), None for no key


def served_models(cfg: config.Config) -> list[str]:
    """The model names one device serves: each of its `models` set (router mode), else its
    `model` knob's."""
    return [m.name for m in cfg.models] if cfg.models else [cfg.model.name]


def address_of(name: str, data: Mapping[str, Any], cfg: config.Config) -> str:
    """`lan_address`, else the SSH host name, else the inventory name."""
    return cfg.lan_address or str(data.get("ssh_hostname") or name)


def routes(hosts: Iterable[tuple[str, Mapping[str, Any]]]) -> tuple[
        dict[str, list[Upstream]], dict[str, str]]:
    """(model name -> its devices in inventory order, host -> why it was left out).

    `hosts` are (inventory name, knob data with defaults). A host whose knobs do not load
    is left out with the reason (its own run refuses it with the same line); a gateway-only
    box (`gateway = "only"`) serves nothing and is not a route, nor is a device that another
    host's `split_over` names (it runs only an RPC worker: its head is the model's route).
    """
    table: dict[str, list[Upstream]] = {}
    skipped: dict[str, str] = {}
    hosts = list(hosts)
    workers = {w for _, data in hosts for w in _names(data.get("split_over"))}
    for name, data in hosts:
        if name in workers:
            continue
        try:
            cfg = config.load(data, name)
            key = apikey.resolve(cfg.api_key, Path(cfg.cache_dir).expanduser())
        except (ConfigError, OSError) as exc:
            skipped[name] = str(exc)
            continue
        if cfg.gateway_only:
            continue  # it runs the gateway and serves no model
        up = Upstream(host=name, address=address_of(name, data, cfg), port=cfg.port,
                      api_key=key)
        for model in served_models(cfg):
            table.setdefault(model, []).append(up)
    return table, skipped


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def check(table: Mapping[str, list[Upstream]]) -> None:
    """Refuse a table the gateway cannot serve, naming the model and the devices."""
    if not table:
        raise RefusedError("gateway: no device of the inventory serves a model")
    for model, ups in table.items():
        keys = {u.api_key for u in ups}
        if len(keys) > 1:
            raise RefusedError(
                f"gateway: the devices serving {model} ({', '.join(u.host for u in ups)}) "
                "have different api_key values; give them one key")
        local = [u.host for u in ups if u.address in ("127.0.0.1", "localhost", "::1")]
        if local:
            raise RefusedError(
                f"gateway: {', '.join(local)} is reached at a loopback address, which the "
                "gateway's container cannot use; set lan_address for it")
