"""The fleet status table: what each device serves, and whether it answers.

Pure logic, so it is tested without a network: the two shell scripts a device runs (facts
to pick its target as the deploy does, then the status commands, each one bounded), reading
their `key=value` answers into a `Row`, and rendering rows as an aligned text table or as
JSON. Connecting to the devices is status.py's job (repo root).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from llama_docker.device import webui
from llama_docker.device.exposure import CLOSE_IT, OPEN, lan_access
from llama_docker.device.fit import GIB, MIB
from llama_docker.device.gateway_config import HEALTH_PATH as GATEWAY_HEALTH
from llama_docker.device.gateway_config import UNIT as GATEWAY_UNIT
from llama_docker.device.image import VERSION_LABEL
from llama_docker.device.profile import ARCHES, detect
from llama_docker.device.target import Target, choose
from llama_docker.device.units import CONTAINER
from llama_docker.knobs.apikey import paths
from llama_docker.knobs.config import Config
from llama_docker.knobs.errors import ConfigError, RefusedError
from llama_docker.status.gpu import backend, probe
from llama_docker.status.models import models_line, router_models, summary

PROMPT = {"prompt": "Hello", "n_predict": 16, "temperature": 0, "ignore_eos": True}
HEALTH_MAX_TIME = 5
COMPLETION_MAX_TIME = 30
# Bounds the whole script: each curl is bounded, the other commands are local and quick.
SCRIPT_TIMEOUT = HEALTH_MAX_TIME + COMPLETION_MAX_TIME + 25
SHORT = 12
_SHA_LINK = re.compile(r"^([0-9a-f]{64})\.gguf$")


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
    model_sha256: str | None = None  # the knob's pinned sha256 (None for unpinned presets)
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
    backend: str | None = None  # cpu | vulkan | metal, from the server's log (gpu_status.py)
    gpu_device: str | None = None  # the Vulkan device that serves, e.g. `Vulkan0: llvmpipe ...`
    arch: str | None = None  # Debian's name for the CPU (amd64, arm64)
    llama_cpp: str | None = None  # the llama.cpp version the running server's image records
    # The fleet gateway on this host (gateway knob): {"port", "service", "health" (HTTP status
    # of its page, 0 when none), "models": {model: {device: 1 up | 0 down}}}; None without.
    gateway: dict[str, Any] | None = None
    # A gateway-only box (gateway = "only"): no model server; service, health and port are
    # the gateway's.
    gateway_only: bool = False

    @property
    def healthy(self) -> bool:
        """Serving: the unit runs, /health says 200 and a short generation produced tokens;
        on the gateway's host also the gateway answers its health page."""
        if not self.reachable or self.error is not None:
            return False
        if self.gateway_only:
            return self.gateway is not None and gateway_answers(self.gateway)
        return bool(self.service == "active" and self.health == 200 and bool(self.tokens_per_s)
                    and (self.gateway is None or gateway_answers(self.gateway)))

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


def device_url(bind: str, port: int) -> str:
    """Where the server answers on the device itself (the wildcard binds answer on loopback)."""
    addr = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"


def _shell_path(path: str) -> str:
    """A quoted path for sh; a leading ~ still means the SSH user's home."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + shlex.quote(path[1:]) if path != "~" else '"$HOME"'
    return shlex.quote(path)


# First round trip: enough to pick the device's target exactly as the deploy does.
FACTS_SCRIPT = "; ".join([
    'echo "kernel=$(uname -s)"',
    "grep -E '^(ID|ID_LIKE|PRETTY_NAME)=' /etc/os-release 2>/dev/null | sed 's/^/os_/'",
    'echo "home=$HOME"',
    'echo "uid=$(id -u)"',
    "exit 0",
])


def target_of(cfg: Config, facts: Mapping[str, str], user: str) -> Target:
    """The deploy's own choice of runtime, unit manager and paths for this device."""
    meta = {k[3:]: v for k, v in facts.items() if k.startswith("os_")}
    kind = detect(facts.get("kernel", ""), meta)
    home = facts.get("home") or f"/home/{user}"
    return choose(kind, cfg.runtime, cfg.models_dir, home, cfg.service_name)


def _service_state(t: Target, unit: str, uid: int) -> str:
    """A command printing active/inactive/failed/... for the unit, whatever manages it."""
    if t.manager == "launchd":
        label = shlex.quote(t.unit_path.rsplit("/", 1)[-1].removesuffix(".plist"))
        return (f"if launchctl list {label} 2>/dev/null | grep -q '\"PID\"'; then "
                "echo service=active; else echo service=inactive; fi")
    user = f"XDG_RUNTIME_DIR=/run/user/{uid} systemctl --user" if t.manager == "systemd-user" \
        else "systemctl"
    return f'echo "service=$({user} is-active {shlex.quote(unit)} 2>/dev/null)"'


def script(cfg: Config, t: Target, uid: int) -> str:
    """The device's side of a status row: prints key=value lines, always exits 0.

    A rootful device's key files are root's: sudo is asked with -n only (never a prompt).
    The completion goes last because its JSON is the one value that is not a short token.
    """
    url = device_url(cfg.bind, cfg.port)
    key_file, header = (shlex.quote(f) for f in paths(t.config_dir))
    # Several models: the completion names the first (a router answers none without).
    body = shlex.quote(json.dumps({**PROMPT, **({"model": cfg.models[0].name}
                                                 if cfg.models else {})}))
    curl = (f"curl -s --max-time {COMPLETION_MAX_TIME} -H 'Content-Type: application/json' "
            f"-d {body}")
    as_root = "sudo -n " if t.sudo else ""
    if cfg.gateway_only:  # no server, no model store: the machine and its gateway
        return "; ".join([
            "echo \"ram_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)\"",
            'echo "arch=$(uname -m)"', *gateway_lines(cfg), "exit 0"])
    return "; ".join([
        f"d={_shell_path(t.models_dir)}",
        _service_state(t, f"{cfg.service_name}.service", uid),
        'echo "current=$(readlink "$d/current.gguf" 2>/dev/null)"',
        'echo "previous=$(readlink "$d/previous.gguf" 2>/dev/null)"',
        *webui_lines(t),
        'p="$d"; while [ ! -e "$p" ]; do p=$(dirname "$p"); done',
        "echo \"disk_free_kib=$(df -Pk \"$p\" 2>/dev/null | awk 'NR==2 {print $4}')\"",
        "echo \"ram_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)\"",
        'echo "ram_bytes=$(sysctl -n hw.memsize 2>/dev/null)"',
        *image_lines(t),
        f"if {'sudo -n true 2>/dev/null' if t.sudo else 'true'}; then s=yes; else s=no; fi",
        f"k=unknown; [ $s = yes ] && {{ {as_root}test -f {key_file} && k=on || k=off; }}",
        'echo "api_key=$k"',
        probe(t, uid),
        f"h=$(curl -s -o /dev/null --max-time {HEALTH_MAX_TIME} -w '%{{http_code}}' "
        f"{url}/health 2>/dev/null)",
        'echo "health=$h"',
        *([models_line(url, header, as_root, COMPLETION_MAX_TIME)] if cfg.models else []),
        *(gateway_lines(cfg) if cfg.gateway else []),
        f'if [ "$h" = 200 ]; then if [ $s = yes ] && {as_root}test -f {header}; then '
        f"c=$({as_root}{curl} -H @{header} {url}/completion 2>/dev/null); "
        f"else c=$({curl} {url}/completion 2>/dev/null); fi; "
        "printf 'completion=%s\\n' \"$c\" | tr -d '\\r'; fi",
        "exit 0",
    ])


def gateway_lines(cfg: Config) -> list[str]:
    """The gateway's unit state, then its health page: the HTTP status and the JSON (one
    line, as HAProxy writes it)."""
    url = shlex.quote(device_url(cfg.bind, cfg.gateway_port) + GATEWAY_HEALTH)
    return [
        f'echo "gateway_service=$(systemctl is-active {GATEWAY_UNIT} 2>/dev/null)"',
        f"g=$(curl -s --max-time {HEALTH_MAX_TIME} -w '\\n%{{http_code}}' {url} 2>/dev/null)",
        'printf \'gateway_health=%s\\n\' "$(printf \'%s\\n\' "$g" | tail -n 1)"',
        'printf \'gateway=%s\\n\' "$(printf \'%s\\n\' "$g" | sed \'$d\' | tr -d \'\\r\\n\')"',
    ]


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


def gateway_line(row: Row) -> str | None:
    """`gateway on nas (*:4000): tiny-a 1 of 2 up (raspi down), tiny-b 1 of 1 up`."""
    gw = row.gateway
    if gw is None:
        return None
    where = f"gateway on {row.host} ({_listen(replace(row, port=gw.get('port')))})"
    if not gateway_answers(gw):
        return f"{where}: not answering (unit {gw.get('service') or 'unknown'})"
    parts = []
    for model, devices in sorted(gw.get("models", {}).items()):
        down = sorted(h for h, up in devices.items() if up != 1)
        parts.append(f"{model} {len(devices) - len(down)} of {len(devices)} up"
                     + (f" ({', '.join(down)} down)" if down else ""))
    return f"{where}: {', '.join(parts) or 'no routes'}"


def image_lines(t: Target) -> list[str]:
    """The CPU, and the llama.cpp version label of the server container's image."""
    lines = ['echo "arch=$(uname -m)"']
    if t.runtime in ("docker", "podman"):
        fmt = shlex.quote(f'{{{{index .Config.Labels "{VERSION_LABEL}"}}}}')
        root = "sudo -n " if t.sudo else ""
        lines.append(f'echo "llama_cpp=$({root}{t.runtime} inspect --format {fmt} '
                     f'{CONTAINER} 2>/dev/null)"')
    return lines


def version_drift(rows: list[Row]) -> set[str]:
    """Hosts whose llama.cpp differs from another device's of the same CPU architecture."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        if r.arch and r.llama_cpp:
            seen.setdefault(r.arch, set()).add(r.llama_cpp)
    return {r.host for r in rows if r.arch and r.llama_cpp and len(seen[r.arch]) > 1}


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


def _sha(link: str | None) -> str | None:
    m = _SHA_LINK.match(link or "")
    return m.group(1) if m else None


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def row_from(host: str, cfg: Config, t: Target, facts: Mapping[str, str]) -> Row:
    """A reachable host's row from its knobs, its target and what its script printed."""
    if cfg.gateway_only:
        return _gateway_box_row(host, cfg, t, facts)
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
    row = replace(row, webui=kind, webui_version=version, gateway=gateway_from(cfg, facts))
    return replace(row, **_set_fields(cfg, facts)) if cfg.models else row


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


def webui_lines(t: Target) -> list[str]:
    """Status script lines: the UI link and the unit's UI arguments (what the server got)."""
    unit = shlex.quote(t.unit_path)
    return [f'echo "webui_link=$(readlink "$d/{webui.STORE}/current" 2>/dev/null)"',
            f"echo \"webui_args=$(grep -oE -- '--no-webui|--path [^ ]+' {unit} 2>/dev/null "
            "| tr '\\n' ' ')\""]


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


def size(n: int | None) -> str:
    """Compact binary sizes, as df -h prints them: 512M, 7.6G, 40G."""
    if n is None:
        return "-"
    if n >= 10 * GIB:
        return f"{n / GIB:.0f}G"
    return f"{n / GIB:.1f}G" if n >= GIB else f"{n / MIB:.0f}M"


def _listen(row: Row) -> str:
    """bind:port as ss(8) shows it: `*:8080` for every interface (the default)."""
    if row.port is None:
        return "-"
    if row.bind in ("0.0.0.0", "::"):
        return f"*:{row.port}"
    return f"[{row.bind}]:{row.port}" if row.bind and ":" in row.bind else f"{row.bind}:{row.port}"


def _cells(row: Row, differs: bool = False) -> list[str]:
    sha = (row.sha256 or "-")[:SHORT] + ("*" if row.drift else "")
    return [
        row.host, row.profile or "-", row.runtime or "-", row.service or "-",
        "(gateway only)" if row.gateway_only else row.model or "-",
        sha, (row.previous_sha256 or "-")[:SHORT], str(row.health) if row.health else "down",
        _listen(row), row.lan or "?",
        f"{row.tokens_per_s:.1f}" if row.tokens_per_s else "-",
        size(row.disk_free_bytes), size(row.ram_bytes),
        (row.llama_cpp or "-").split(":", 1)[-1] + ("!" if differs else ""),  # no epoch
        row.backend or "-",
    ]


HEADER = ["HOST", "PROFILE", "RUNTIME", "SERVICE", "MODEL", "SHA", "PREVIOUS", "HEALTH",
          "LISTEN", "LAN", "TOK/S", "FREE", "RAM", "LLAMA.CPP", "BACKEND"]
RIGHT = {"TOK/S", "FREE", "RAM"}


def table(rows: list[Row]) -> str:
    """Aligned plain text: a header, one line per host, a one-line summary.

    A host that could not be asked gets its reason after its name instead of empty cells.
    """
    differ = version_drift(rows)
    body = [_cells(r, r.host in differ) if r.error is None else None for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in body if c]) for i, h in enumerate(HEADER)]
    # Hosts that could not be asked still set the width of the first column.
    widths[0] = max([widths[0]] + [len(r.host) for r in rows])

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if h in RIGHT else c.ljust(w)
               for h, c, w in zip(HEADER, cells, widths, strict=True)]
        return "  ".join(out).rstrip()

    lines = [line(HEADER)]
    for row, cells in zip(rows, body, strict=True):
        if cells is None:
            what = {None: "not asked: ", False: "unreachable: ", True: ""}[row.reachable]
            lines.append(f"{row.host.ljust(widths[0])}  {what}{row.error}")
        else:
            lines.append(line(cells))
    lines += [g for g in map(gateway_line, rows) if g]
    healthy = sum(r.healthy for r in rows)
    lines.append(f"{healthy} of {len(rows)} hosts healthy")
    if any(r.lan == OPEN and r.error is None for r in rows):
        lines.append(f"open: anyone on the LAN can use it, no key asked: {CLOSE_IT}")
    if any(r.drift for r in rows):
        lines.append("* serves a model other than the model knob's: run pyinfra inventory.py "
                     "deploy.py")
    if differ:
        lines.append("! runs another llama.cpp than other devices of its CPU: run pyinfra "
                     "inventory.py deploy.py (every device then gets the cached image)")
    return "\n".join(lines)


def to_json(rows: list[Row]) -> str:
    return json.dumps([r.to_json() for r in rows], indent=2)


def from_json(items: list[dict[str, Any]]) -> list[Row]:
    """Rows back from `--json` output (for scripts and tests that read it)."""
    names = {f.name for f in fields(Row)}
    return [Row(**{k: v for k, v in item.items() if k in names}) for item in items]
