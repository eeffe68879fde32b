"""One table at the end of a run: every host, whether it made it, and why not."""

from __future__ import annotations

import atexit
import sys

import pyinfra
from pyinfra import state

from .common import errors

_registered = False


def _row(host) -> tuple[str, str, str]:  # noqa: ANN001 - a pyinfra Host
    results = state.get_results_for_host(host)
    if host in state.failed_hosts or results.error_ops:
        if results.ops == 0 and host.name not in errors:
            return host.name, "UNREACHABLE", "could not connect (see above)"
        return host.name, "FAILED", errors.get(host.name, "an operation failed (see above)")
    return host.name, "ok", ""


def _print() -> None:
    rows = [_row(h) for h in state.inventory]
    width = max(len(r[0]) for r in rows)
    dry = " (--dry: nothing was changed)" if "--dry" in sys.argv else ""
    out = ["", f"--> llama-docker summary{dry}:"]
    out += [f"    {name:<{width}}  {result:<11}  {detail}".rstrip() for name, result, detail
            in rows]
    print("\n".join(out), file=sys.stderr, flush=True)


def print_summary_at_exit() -> None:
    """Register (once per run, whatever the host count) the summary printer."""
    global _registered
    if pyinfra.is_cli and not _registered:  # not when tests run deploy.py through the API
        _registered = True
        atexit.register(_print)
