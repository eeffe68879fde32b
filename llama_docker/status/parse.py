"""What a device's answers mean: its printed `key=value` lines read into a `Row`.

Also the rows of hosts that could not be asked (knobs that do not load, an OS the deploy
refuses, an SSH error), each with one short reason, so the table has a line for every host.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from llama_docker.device import webui
from llama_docker.device.profile import ARCHES, detect
from llama_docker.device.target import Target, choose
from llama_docker.knobs.config import Config
from llama_docker.knobs.errors import ConfigError, RefusedError
from llama_docker.status.gpu import backend
from llama_docker.status.models import router_models, summary
from llama_docker.status.row import Row
from llama_docker.status.split import links_from

_SHA_LINK = re.compile(r"^([0-9a-f]{64})\.gguf$")


def parse(lines: Iterable[str]) -> dict[str, str]:
    """The script's output as a dict; the completion keeps every line after its key."""
    out: dict[str, str] = {}
    lines = list(lines)
    for i, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "completion":
            out[key] = "\n".join([value, *lines[i + 1:]])
            break
        out[key] = value.strip().strip('"') if key.startswith("os_") else value.strip()
    return out


def target_of(cfg: Config, facts: Mapping[str, str], user: str) -> Target:
    """The deploy's own choice of runtime, unit manager and paths for this device."""
    meta = {k[3:]: v for k, v in facts.items() if k.startswith("os_")}
    kind = detect(facts.get("kernel", ""), meta)
    home = facts.get("home") or f"/home/{user}"
    return choose(kind, cfg.runtime, cfg.models_dir, home, cfg.service_name)


def tokens_per_second(completion: str | None) -> float | None:
    """timings.predicted_per_second of a /completion answer; None when there is none."""
    if not completion:
        return None
    try:
        tps = json.loads(completion)["timings"]["predicted_per_second"]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(tps, bool) or not isinstance(tps, (int, float)) or not math.isfinite(tps):
        return None
    return float(tps) if tps > 0 else None


def gateway_from(cfg: Config, facts: Mapping[str, str]) -> dict[str, Any] | None:
    """The gateway's part of its host's row; None on every other host."""
    if not cfg.gateway:
        return None
    try:
        page = json.loads(facts.get("gateway") or "null")
    except ValueError:
        page = None
    models = page.get("models") if isinstance(page, dict) else None
    return {"port": cfg.gateway_port, "service": facts.get("gateway_service") or "unknown",
            "health": _int(facts.get("gateway_health")) or 0,
            "models": models if isinstance(models, dict) else {}}


def _sha(link: str | None) -> str | None:
    m = _SHA_LINK.match(link or "")
    return m.group(1) if m else None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def row_from(host: str, cfg: Config, t: Target, facts: Mapping[str, str],
             worker_of: str = "") -> Row:
    """A reachable host's row from its knobs, its target and what its script printed;
    `worker_of`: the head whose split_over names this host (it runs only an RPC worker)."""
    if cfg.gateway_only:
        return _gateway_box_row(host, cfg, t, facts)
    if worker_of:
        return _worker_row(host, cfg, t, facts, worker_of)
    free = _int(facts.get("disk_free_kib"))
    serves, device = backend(t, facts)
    row = Row(
        host=host, reachable=True, profile=t.profile, runtime=t.runtime,
        service=facts.get("service") or "unknown", model=cfg.model.name,
        model_sha256=cfg.model.file.sha256, sha256=_sha(facts.get("current")),
        previous_sha256=_sha(facts.get("previous")), health=_int(facts.get("health")) or 0,
        port=cfg.port, bind=cfg.bind,
        api_key={"on": True, "off": False}.get(facts.get("api_key", "")),
        tokens_per_s=tokens_per_second(facts.get("completion")),
        disk_free_bytes=free * 1024 if free is not None else None, ram_bytes=_ram(facts),
        backend=serves, gpu_device=device, arch=_arch(facts),
        llama_cpp=facts.get("llama_cpp") or None,
    )
    kind, version = webui.served(facts.get("webui_link", ""), facts.get("webui_args", ""))
    row = replace(row, webui=kind, webui_version=version, gateway=gateway_from(cfg, facts),
                  links=links_from(cfg, facts))
    return replace(row, **_set_fields(cfg, facts)) if cfg.models else row


def workers_of(split_overs: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """Each RPC worker's head, from (host, its split_over knob) pairs as the deploy reads
    them: a worker named by two heads keeps the first (the deploy refuses both)."""
    found: dict[str, str] = {}
    for head, value in split_overs:
        for worker in value if isinstance(value, (list, tuple)) else ():
            found.setdefault(str(worker), head)
    return found


def _worker_row(host: str, cfg: Config, t: Target, facts: Mapping[str, str],
                head: str) -> Row:
    free = _int(facts.get("disk_free_kib"))
    return Row(host=host, reachable=True, profile=t.profile, runtime=t.runtime,
               service=facts.get("service") or "unknown", port=cfg.rpc_port,
               bind="127.0.0.1", disk_free_bytes=free * 1024 if free is not None else None,
               ram_bytes=_ram(facts), arch=_arch(facts),
               llama_cpp=facts.get("llama_cpp") or None, worker_of=head,
               rpc=facts.get("rpc") or "down")


def _gateway_box_row(host: str, cfg: Config, t: Target, facts: Mapping[str, str]) -> Row:
    gw = gateway_from(cfg, facts)
    assert gw is not None
    return Row(host=host, reachable=True, profile=t.profile, runtime=t.runtime,
               service=gw["service"], health=gw["health"], port=cfg.gateway_port,
               bind=cfg.bind, ram_bytes=_ram(facts), arch=_arch(facts), gateway=gw,
               gateway_only=True,
               api_key=bool(cfg.api_key))  # the gateway's clients' key is its host's knob


def _ram(facts: Mapping[str, str]) -> int | None:
    """Bytes of RAM: Linux's MemTotal (KiB), else macOS's hw.memsize (bytes)."""
    ram_kib = _int(facts.get("ram_kib"))
    return ram_kib * 1024 if ram_kib is not None else _int(facts.get("ram_bytes"))


def _arch(facts: Mapping[str, str]) -> str | None:
    """Debian's name for the CPU `uname -m` printed (amd64, arm64), else what it printed."""
    return ARCHES.get(facts.get("arch", ""), facts.get("arch") or None)


def _set_fields(cfg: Config, facts: Mapping[str, str]) -> dict[str, Any]:
    """A set's row: the model cell counts them, each model's sha256 is in `models`."""
    models = router_models(facts.get("models"))
    return {"model": summary(models, len(cfg.models)), "model_sha256": None, "sha256": None,
            "previous_sha256": None, "models": models}


def refused_row(host: str, facts: Mapping[str, str], exc: RefusedError) -> Row:
    """A device the deploy would refuse (an unsupported OS): reached, named, not asked more."""
    meta = {k[3:]: v for k, v in facts.items() if k.startswith("os_")}
    return Row(host=host, reachable=True, profile=meta.get("ID") or facts.get("kernel"),
               error=str(exc).split(" (", 1)[0].split(";", 1)[0][:60])


def config_row(host: str, exc: ConfigError) -> Row:
    """A host whose knobs do not load: not asked, the knob named."""
    value = repr(exc.value)
    value = value if len(value) <= 30 else value[:27] + "..."
    return Row(host=host, reachable=None, error=f"knob {exc.knob}={value} is invalid")


def connect_reason(message: str) -> str:
    """pyinfra's connect error (several lines of paramiko detail) as one short phrase."""
    text = message.lower()
    for needle, phrase in (
        ("does not match", "host key changed"),
        ("no host key", "host key not in known_hosts"),
        ("authentication", "ssh login refused (key or user)"),
        ("refused", "connection refused"),
        # paramiko's NoValidConnectionsError: every address refused or unreachable
        ("unable to connect to port", "connection refused or host down"),
        ("timed out", "connection timed out"),
        ("no route", "no route to host"),
        ("unreachable", "network unreachable"),
        ("resolve", "name does not resolve"),
        ("private key", "ssh key unreadable"),
        ("eof", "connection closed during login"),
    ):
        if needle in text:
            return phrase
    first = message.strip().splitlines()[0] if message.strip() else "could not connect"
    return first[:60]
