"""The status of a model split over several devices (the `split_over` knob).

On the head: each worker's link (its unit, and whether an RPC server answers through the
forward) and the layers the head's unit sends it. On a worker: its RPC unit and whether its
server listens on its loopback. The shell lines beside probe.py's, what they print read into
the row's fields, and the table's one line per head.

Whether an RPC server answers is asked without sending it a byte (its protocol has no
harmless request): a connection to the head's end of the forward stays open while the
worker's server holds the other end (it waits for a command, or, busy with the head's own
connection, leaves ours in its queue), and is closed at once when nothing listens there
(ssh's forward is refused on the worker) or the link is down (nothing listens on the head).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from llama_docker.device import rpc_units
from llama_docker.device.split import LOOPBACK, forward_port
from llama_docker.device.target import Target
from llama_docker.knobs.config import Config

PROBE_SECONDS = 2  # how long a connection through the forward must stay open to count as up


def _active(t: Target, uid: int, unit: str) -> str:
    env = f"XDG_RUNTIME_DIR=/run/user/{uid} " if t.user_units else ""
    return f"$({env}{t.systemctl} is-active {shlex.quote(unit)} 2>/dev/null)"


def _answers(port: int) -> str:
    """Shell printing `up` when a connection to the head's loopback `port` stays open."""
    inner = (f"exec 3<>/dev/tcp/{LOOPBACK}/{port} || exit 1; "
             f"read -t {PROBE_SECONDS} -u 3 _; [ $? -gt 128 ]")
    return (f"timeout {PROBE_SECONDS + 2} bash -c {shlex.quote(inner)} 2>/dev/null "
            "&& echo up || echo down")


def head_lines(cfg: Config, t: Target, uid: int) -> list[str]:
    """The head's status lines: `link_<n>=<unit state> <up|down>` per worker (asked side by
    side), and `split_args=` the unit's own --tensor-split."""
    jobs = []
    for i, worker in enumerate(cfg.split_over):
        unit = rpc_units.link_unit_name(t.service, worker)
        answers = _answers(forward_port(cfg.rpc_port, i))
        jobs.append(f'(echo "link_{i}={_active(t, uid, unit)} $({answers})") &')
    unit_path = shlex.quote(t.unit_path)
    return [" ".join([*jobs, "wait"]),
            f"echo \"split_args=$(grep -oE -- '--tensor-split [0-9,]+' {unit_path} "
            "2>/dev/null | head -n 1)\""]


def worker_script(cfg: Config, t: Target, uid: int, extra: list[str]) -> str:
    """A worker's whole status script: its RPC unit, its server listening on its own
    loopback (the kernel's table, no connection made), then `extra` (machine lines)."""
    port_hex = f"{cfg.rpc_port:04X}"
    unit = rpc_units.worker_unit_name(t.service)
    listening = (f"awk '$2 == \"0100007F:{port_hex}\" && $4 == \"0A\" {{f = 1}} "
                 "END {print (f ? \"up\" : \"down\")}' /proc/net/tcp 2>/dev/null")
    return "; ".join([f'echo "service={_active(t, uid, unit)}"',
                      f'echo "rpc=$({listening})"', *extra, "exit 0"])


_LINK = re.compile(r"^(\S*)\s+(up|down)$")


def links_from(cfg: Config, facts: Mapping[str, str]) -> list[dict[str, Any]] | None:
    """Each worker of a head: name, the link unit's state, whether an RPC server answers
    through it, and the layers the head sends it (None when unknown); None on no head."""
    if not cfg.split_over:
        return None
    shares = (facts.get("split_args") or "").removeprefix("--tensor-split").strip().split(",")
    out = []
    for i, worker in enumerate(cfg.split_over):
        m = _LINK.match((facts.get(f"link_{i}") or "").strip())
        layers = shares[i] if i < len(shares) and shares[i].isdigit() else None
        out.append({"worker": worker, "port": forward_port(cfg.rpc_port, i),
                    "link": (m.group(1) or "unknown") if m else "unknown",
                    "rpc": m.group(2) if m else "down",
                    "layers": int(layers) if layers else None})
    return out


def down_reason(link: Mapping[str, Any]) -> str | None:
    """Why a worker does not serve its head, in a few words; None when it does."""
    if link.get("rpc") == "up":
        return None
    if link.get("link") != "active":
        return f"link {link.get('link') or 'unknown'}"
    return "no RPC server answers through the link"


def links_up(links: list[dict[str, Any]] | None) -> bool:
    return all(down_reason(lk) is None for lk in links or [])


def split_line(host: str, links: list[dict[str, Any]]) -> str:
    """`split on pi1: 10 layers on pi2 (up), 12 on pi3 (down: link activating)`."""
    parts = []
    for i, lk in enumerate(links):
        n = lk.get("layers")
        what = (f"{n} layers on " if i == 0 else f"{n} on ") if n is not None else ""
        why = down_reason(lk)
        parts.append(f"{what}{lk['worker']} ({'up' if why is None else 'down: ' + why})")
    return f"split on {host}: {', '.join(parts)}"
