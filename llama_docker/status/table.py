"""Rows as the user reads them: an aligned text table with its summary lines, or JSON.

Only rendering: every value is already in the rows (parse.py); what this adds is what
compares rows with each other (a llama.cpp that differs within one CPU architecture).
"""

from __future__ import annotations

import json
from dataclasses import replace

from llama_docker.device.exposure import CLOSE_IT, OPEN
from llama_docker.device.fit import GIB, MIB
from llama_docker.status.row import Row, gateway_answers
from llama_docker.status.split import split_line

SHORT = 12
HEADER = ["HOST", "PROFILE", "RUNTIME", "SERVICE", "MODEL", "SHA", "PREVIOUS", "HEALTH",
          "LISTEN", "LAN", "TOK/S", "FREE", "RAM", "LLAMA.CPP", "BACKEND"]
RIGHT = {"TOK/S", "FREE", "RAM"}


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


def version_drift(rows: list[Row]) -> set[str]:
    """Hosts whose llama.cpp differs from another device's of the same CPU architecture."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        if r.arch and r.llama_cpp:
            seen.setdefault(r.arch, set()).add(r.llama_cpp)
    return {r.host for r in rows if r.arch and r.llama_cpp and len(seen[r.arch]) > 1}


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


def _model(row: Row) -> str:
    if row.gateway_only:
        return "(gateway only)"
    return f"(rpc worker of {row.worker_of})" if row.worker_of else row.model or "-"


def _health(row: Row) -> str:
    if row.worker_of:  # no HTTP server: its RPC server on its loopback
        return "rpc up" if row.rpc == "up" else "rpc down"
    return str(row.health) if row.health else "down"


def _cells(row: Row, differs: bool = False) -> list[str]:
    sha = (row.sha256 or "-")[:SHORT] + ("*" if row.drift else "")
    return [
        row.host, row.profile or "-", row.runtime or "-", row.service or "-", _model(row),
        sha, (row.previous_sha256 or "-")[:SHORT], _health(row),
        _listen(row), row.lan or "?",
        f"{row.tokens_per_s:.1f}" if row.tokens_per_s else "-",
        size(row.disk_free_bytes), size(row.ram_bytes),
        (row.llama_cpp or "-").split(":", 1)[-1] + ("!" if differs else ""),  # no epoch
        row.backend or "-",
    ]


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
    lines += [split_line(r.host, r.links) for r in rows if r.links and r.error is None]
    lines += [g for g in map(gateway_line, rows) if g]
    healthy = sum(r.healthy for r in rows)
    lines.append(f"{healthy} of {len(rows)} hosts healthy")
    if any(r.lan == OPEN and r.error is None for r in rows):
        lines.append(f"open: anyone on the LAN can use it, no key asked: {CLOSE_IT}")
    if any(r.drift for r in rows):
        lines.append("* serves a model other than the model knob's (or the lock file's): run "
                     "pyinfra inventory.py deploy.py")
    if differ:
        lines.append("! runs another llama.cpp than other devices of its CPU: run pyinfra "
                     "inventory.py deploy.py (every device then gets the cached image)")
    return "\n".join(lines)


def to_json(rows: list[Row]) -> str:
    return json.dumps([r.to_json() for r in rows], indent=2)
