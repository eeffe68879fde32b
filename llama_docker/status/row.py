"""One host's status row: what parse.py reads a device's answers into and table.py renders.

Its own module so the parser and the renderers share it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from llama_docker.device.exposure import lan_access
from llama_docker.status.split import links_up


@dataclass
class Row:
    """One host's line of the table (and one object of the JSON list)."""

    host: str
    reachable: bool | None  # None: not tried (its knobs do not load)
    error: str | None = None  # one short phrase when the host could not be asked
    profile: str | None = None
    runtime: str | None = None
    service: str | None = None  # `systemctl [--user] is-active`; launchd: active/inactive
    model: str | None = None  # the model knob's name
    model_sha256: str | None = None  # the knob's sha256, else the lock's (None: neither)
    sha256: str | None = None  # what current.gguf links to on the device
    previous_sha256: str | None = None
    health: int | None = None  # HTTP status of /health on the device; 0 when none
    port: int | None = None
    bind: str | None = None
    api_key: bool | None = None  # the key file exists; None when sudo could not look
    tokens_per_s: float | None = None
    disk_free_bytes: int | None = None
    ram_bytes: int | None = None
    # Several models (router mode): each {name, sha256, state, failed}; None with one model.
    models: list[dict[str, Any]] | None = None
    webui: str | None = None  # the UI on the port: "llama.cpp", "simplechat" or "none"
    webui_version: str | None = None  # the llama.cpp UI's folder, e.g. "llama-b11669"
    backend: str | None = None  # cpu | vulkan | metal, from the server's log (status/gpu.py)
    gpu_device: str | None = None  # the Vulkan device that serves, e.g. `Vulkan0: llvmpipe ...`
    arch: str | None = None  # Debian's name for the CPU (amd64, arm64)
    llama_cpp: str | None = None  # the llama.cpp version the running server's image records
    # The fleet gateway on this host (gateway knob): {"port", "service", "health" (HTTP status
    # of its page, 0 when none), "models": {model: {device: 1 up | 0 down}}}; None without.
    gateway: dict[str, Any] | None = None
    # A gateway-only box (gateway = "only"): no model server; service, health and port are
    # the gateway's.
    gateway_only: bool = False
    # A split model's head: each worker {worker, port, link (its unit's state), rpc (up or
    # down: whether an RPC server answers through the link), layers}; None on no head.
    links: list[dict[str, Any]] | None = None
    worker_of: str | None = None  # an RPC worker: its head (service is its RPC unit's state)
    rpc: str | None = None  # an RPC worker: "up" when its server listens on its loopback

    @property
    def healthy(self) -> bool:
        """Serving: the unit runs, /health says 200 and a short generation produced tokens;
        on the gateway's host also the gateway answers its health page."""
        if not self.reachable or self.error is not None:
            return False
        if self.gateway_only:
            return self.gateway is not None and gateway_answers(self.gateway)
        if self.worker_of:
            return self.service == "active" and self.rpc == "up"
        return bool(self.service == "active" and self.health == 200 and bool(self.tokens_per_s)
                    and (self.gateway is None or gateway_answers(self.gateway))
                    and links_up(self.links))

    @property
    def lan(self) -> str | None:
        """Who can use the API: `open` (the whole LAN, no key), `key`, `local only`."""
        return lan_access(self.bind, self.api_key)

    @property
    def drift(self) -> bool:
        """The device serves a file other than the one the model knob pins."""
        return bool(self.model_sha256 and self.sha256 and self.model_sha256 != self.sha256)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "healthy": self.healthy, "lan": self.lan}


def gateway_answers(gw: Mapping[str, Any]) -> bool:
    """The gateway's unit runs and its page answered: 200, or 503 while a model has no device
    up (the devices' own rows say why)."""
    return gw.get("service") == "active" and gw.get("health") in (200, 503)
