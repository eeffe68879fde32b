"""What the status command asks a device: the text of its two shell scripts.

First the facts that pick the device's target exactly as the deploy does, then the status
script, each command in it bounded, printing `key=value` lines that parse.py reads. Pure text,
tested by running it here against stub commands; connecting is cli.py's job.
"""

from __future__ import annotations

import json
import shlex

from llama_docker.device import webui
from llama_docker.device.gateway_config import UNIT as GATEWAY_UNIT
from llama_docker.device.image import VERSION_LABEL
from llama_docker.device.probes import free_kib
from llama_docker.device.rpc_units import WORKER_CONTAINER
from llama_docker.device.target import Target, gateway_health_url, server_url
from llama_docker.device.units import CONTAINER
from llama_docker.knobs.apikey import paths
from llama_docker.knobs.config import Config
from llama_docker.status.gpu import probe as gpu_probe
from llama_docker.status.models import models_line
from llama_docker.status.split import head_lines, worker_script

PROMPT = {"prompt": "Hello", "n_predict": 16, "temperature": 0, "ignore_eos": True}
HEALTH_MAX_TIME = 5
COMPLETION_MAX_TIME = 30
# Bounds the whole script: each curl is bounded, the other commands are local and quick.
SCRIPT_TIMEOUT = HEALTH_MAX_TIME + COMPLETION_MAX_TIME + 25
_STORE = '"$d"'  # the model store's folder: the script's first line sets $d


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


def _service_state(t: Target, uid: int) -> str:
    """A command printing active/inactive/failed/... for the server's unit, whatever
    manages it."""
    if t.launchd:
        return (f"if launchctl list {shlex.quote(t.agent_label)} 2>/dev/null | grep -q "
                "'\"PID\"'; then echo service=active; else echo service=inactive; fi")
    env = f"XDG_RUNTIME_DIR=/run/user/{uid} " if t.user_units else ""
    return f'echo "service=$({env}{t.systemctl} is-active {shlex.quote(t.unit_name)} 2>/dev/null)"'


def script(cfg: Config, t: Target, uid: int, worker_of: str = "") -> str:
    """The device's side of a status row: prints key=value lines, always exits 0.
    `worker_of`: this host is an RPC worker of that head (no server of its own).

    A rootful device's key files are root's: sudo is asked with -n only (never a prompt).
    The completion goes last because its JSON is the one value that is not a short token.
    """
    url = server_url(cfg)
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
    if worker_of:
        return worker_script(cfg, t, uid, [
            f"d={_shell_path(t.models_dir)}", f'echo "disk_free_kib=$({free_kib(_STORE)})"',
            "echo \"ram_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)\"",
            *image_lines(t, WORKER_CONTAINER)])
    return "; ".join([
        f"d={_shell_path(t.models_dir)}",
        _service_state(t, uid),
        'echo "current=$(readlink "$d/current.gguf" 2>/dev/null)"',
        'echo "previous=$(readlink "$d/previous.gguf" 2>/dev/null)"',
        *webui_lines(t),
        f'echo "disk_free_kib=$({free_kib(_STORE)})"',  # the deploy's own FreeBytes text
        "echo \"ram_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null)\"",
        'echo "ram_bytes=$(sysctl -n hw.memsize 2>/dev/null)"',
        *image_lines(t),
        f"if {'sudo -n true 2>/dev/null' if t.sudo else 'true'}; then s=yes; else s=no; fi",
        f"k=unknown; [ $s = yes ] && {{ {as_root}test -f {key_file} && k=on || k=off; }}",
        'echo "api_key=$k"',
        gpu_probe(t, uid),
        f"h=$(curl -s -o /dev/null --max-time {HEALTH_MAX_TIME} -w '%{{http_code}}' "
        f"{url}/health 2>/dev/null)",
        'echo "health=$h"',
        *(head_lines(cfg, t, uid) if cfg.split_over else []),
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
    url = shlex.quote(gateway_health_url(cfg))
    return [
        f'echo "gateway_service=$(systemctl is-active {GATEWAY_UNIT} 2>/dev/null)"',
        f"g=$(curl -s --max-time {HEALTH_MAX_TIME} -w '\\n%{{http_code}}' {url} 2>/dev/null)",
        'printf \'gateway_health=%s\\n\' "$(printf \'%s\\n\' "$g" | tail -n 1)"',
        'printf \'gateway=%s\\n\' "$(printf \'%s\\n\' "$g" | sed \'$d\' | tr -d \'\\r\\n\')"',
    ]


def image_lines(t: Target, container: str = CONTAINER) -> list[str]:
    """The CPU, and the llama.cpp version label of the server container's image."""
    lines = ['echo "arch=$(uname -m)"']
    if not t.native:  # a container: docker or podman
        fmt = shlex.quote(f'{{{{index .Config.Labels "{VERSION_LABEL}"}}}}')
        root = "sudo -n " if t.sudo else ""
        lines.append(f'echo "llama_cpp=$({root}{t.runtime} inspect --format {fmt} '
                     f'{container} 2>/dev/null)"')
    return lines


def webui_lines(t: Target) -> list[str]:
    """Status script lines: the UI link and the unit's UI arguments (what the server got)."""
    unit = shlex.quote(t.unit_path)
    return [f'echo "webui_link=$(readlink "$d/{webui.STORE}/current" 2>/dev/null)"',
            f"echo \"webui_args=$(grep -oE -- '--no-webui|--path [^ ]+' {unit} 2>/dev/null "
            "| tr '\\n' ' ')\""]
