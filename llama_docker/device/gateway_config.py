"""The gateway's files: HAProxy's configuration, its unit and its image tag, rendered from
the routing table (llama_docker/device/gateway_routes.py). Pure text in, pure text out.

HAProxy rather than LiteLLM's proxy: see README, One address for the fleet.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from llama_docker.device.gateway_routes import Upstream
from llama_docker.device.image import build_args
from llama_docker.device.units import FILES, TEMPLATES

CONTAINER = "llama-gateway"
UNIT = f"{CONTAINER}.service"  # the systemd unit that runs the container
CONTAINERFILE = "gateway.Containerfile"
REPO = "llama-docker/gateway"
OWNER = "10002:0"  # the gateway image's non-root user, group root: reads the 0400 config
MEMORY_MIB = 128  # HAProxy needs a few MiB; the cap keeps a runaway from hurting the device
HEALTH_PATH = "/gateway/health"


@dataclass(frozen=True)
class _Server:
    name: str
    address: str


@dataclass(frozen=True)
class _Backend:
    name: str
    model: str
    comment: str
    key: str
    servers: tuple[_Server, ...]


def quote(value: str) -> str:
    """One HAProxy word: strong single quotes, a quote itself escaped outside them."""
    return "'" + value.replace("'", "'\\''") + "'"


def _log_format(value: str) -> str:
    """Text for a log-format argument (set-header, lf-string), where % starts a sample."""
    return value.replace("%", "%%")


def _address(up: Upstream) -> str:
    return f"ipv6@{up.address}:{up.port}" if ":" in up.address else f"{up.address}:{up.port}"


def _server_name(host: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", host)[:60] or "device"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def haproxy_config(table: Mapping[str, list[Upstream]], client_key: str | None) -> str:
    """HAProxy's whole configuration: one backend per model, its devices balanced.

    `client_key`: the key clients must send (the gateway host's `api_key`), or None.
    """
    backends = []
    health: dict[str, dict[str, str]] = {}
    for i, model in enumerate(sorted(table)):
        taken: set[str] = set()
        servers = tuple(_Server(_server_name(u.host, taken), _address(u)) for u in table[model])
        key = table[model][0].api_key
        name = f"model_{i}"
        backends.append(_Backend(
            name=name, model=quote(model), comment=f"model {model!r}".replace("\n", " "),
            key=quote(_log_format(f"Bearer {key}")) if key else "", servers=servers))
        health[model] = {u.host: f"@@{name}/{s.name}@@"
                         for u, s in zip(table[model], servers, strict=True)}
    # Each device's state, filled in by HAProxy per request: 1 up, 0 down.
    text = _log_format(json.dumps({"models": health}, sort_keys=True))
    text = re.sub(r'"@@([^@]+)@@"', r"%[srv_is_up(\1)]", text)
    models = {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "llama-docker"}
                                         for m in sorted(table)]}
    return TEMPLATES.get_template("haproxy.cfg.j2").render(
        backends=backends, health=quote(text), models_json=quote(json.dumps(models)),
        any_down=" or ".join(f"gw_health {b.name}_down" for b in backends),
        client_key=quote(f"Bearer {client_key}") if client_key else "")


def systemd_unit(*, runtime: str, image: str, port: int, bind: str, config_file: str) -> str:
    """The unit that runs the gateway's container, restarted by systemd."""
    return TEMPLATES.get_template("llama-gateway.service.j2").render(
        runtime=runtime, image=image, port=port, bind=bind, config_file=config_file,
        container=CONTAINER, memory_mib=MEMORY_MIB)


def image_tag(base: str, check_valid_until: bool) -> str:
    """`llama-docker/gateway:<12 hex>`: a changed Containerfile or build arg, a new tag."""
    args = build_args(base, check_valid_until)
    h = hashlib.sha256(CONTAINERFILE.encode() + b"\0" + (FILES / CONTAINERFILE).read_bytes())
    for key in sorted(args):
        h.update(f"\0{key}={args[key]}".encode())
    return f"{REPO}:{h.hexdigest()[:12]}"
