"""One table at the end of every run: each host, what became of it, and why.

Every host of the inventory gets a line, those pyinfra never reached included. A dry run's
table is the plan: the steps each host would run and the bytes that would move, printed by
us because pyinfra shows no plan under `-y`.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pyinfra
from pyinfra import state
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_state

from llama_docker.device import diagnose
from llama_docker.device.fit import gib
from llama_docker.transfer import local_model as controller

from . import relay, unreachable
from .common import errors, is_dry, notes, refused

_registered = False
_interrupted = False  # Ctrl-C reached pyinfra: hosts not done say so, and the exit code too
INTERRUPTED_EXIT = 130  # what shells report for a command ended by SIGINT
# Why pyinfra could not connect to a host: it logs the reason and keeps no record of it.
_unreachable: dict[str, str] = {}
# host name -> [(what, bytes)]: the model bytes each host's steps move.
_moves: dict[str, list[tuple[str, int]]] = {}
_HOST_LINE = re.compile(r"^\[(?P<host>[^\]]+)\]\s+(?P<msg>.+)$")
# The packaged deploy's own name, before every step's: the summary names the step.
_OUR_DEPLOY = re.compile(r"^llama-docker( \w+)? \| ")


class _ConnectErrors(logging.Handler):
    """Keeps the first error line pyinfra logs for each host (a failed connection's reason)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            found = _HOST_LINE.match(diagnose.plain(record.getMessage()))
            if found:
                _unreachable.setdefault(found["host"], found["msg"])


def note_move(host_name: str, what: str, size: int) -> None:
    """Record model bytes a step of this host moves (pushes, device downloads)."""
    _moves.setdefault(host_name, []).append((what, size))


def _unreachable_reason(name: str) -> str:
    why = _unreachable.get(name, "")
    found = re.match(r"Could not connect \((.*)\)$", why)
    return f"could not connect: {found[1]}" if found else (why or "could not connect")


def _op_name(op_hash: str) -> str:
    return " / ".join(sorted(_OUR_DEPLOY.sub("", n) for n in state.op_meta[op_hash].names))


def _failed_step(host) -> str:  # noqa: ANN001 - a pyinfra Host
    """The failed operation's name and the line of its output that names the cause."""
    for op_hash in state.get_op_order():
        data = state.ops[host].get(op_hash)
        meta = data.operation_meta if data else None
        if meta is None or not meta.is_complete() or meta.did_succeed():
            continue
        step = _op_name(op_hash)
        output = getattr(meta, "_combined_output", None)
        return diagnose.explain(step, output.output_lines if output else [])
    return "an operation failed (see above)"


def _steps(host) -> list[str]:  # noqa: ANN001 - a pyinfra Host
    """The operations a dry run planned for this host that would change something."""
    names = []
    for op_hash in state.get_op_order():
        data = state.ops[host].get(op_hash)
        if data is None or data.operation_meta._maybe_is_change is False:
            continue  # without -y pyinfra has checked it: nothing to do there
        names.append(_op_name(op_hash))
    return names


def _rows() -> list[tuple[str, str, str, list[str]]]:
    rows: list[tuple[str, str, str, list[str]]] = []
    for host in state.inventory:
        name = host.name
        if not state.is_host_in_limit(host):
            continue
        if host not in state.activated_hosts and _interrupted and name not in _unreachable:
            rows.append((name, "INTERRUPTED", "stopped by Ctrl-C while connecting", []))
        elif host not in state.activated_hosts:
            rows.append((name, *unreachable.row(host, _unreachable_reason(name)), []))
        elif _interrupted and name not in refused:
            rows.append((name, "INTERRUPTED", errors.get(name) or _interrupted_detail(), []))
        elif name in errors:
            rows.append((name, "REFUSED" if name in refused else "FAILED", errors[name], []))
        elif host in state.failed_hosts or state.get_results_for_host(host).error_ops:
            rows.append((name, "FAILED", _failed_step(host), []))
        elif state.current_stage < StateStage.Execute and not is_dry():
            # A deploy file that raised, or a confirmation answered no: nothing ran anywhere.
            rows.append((name, "NOT RUN", "the run stopped before changing anything "
                                          "(see above)", []))
        elif is_dry():
            steps = _steps(host)
            rows.append((name, f"{len(steps)} steps" if steps else "up to date", "", steps))
        else:
            rows.append((name, "ok", notes.get(name, ""), []))
    return rows


def _interrupted_detail() -> str:
    if state.current_stage < StateStage.Execute:
        return "stopped by Ctrl-C before changing anything"
    return "stopped by Ctrl-C; the next run goes on from where this one stopped"


def _moves_line() -> str:
    """`download X once; push N to M devices`: what a dry run's plan moves over the wire."""
    parts = [f"download {name} ({gib(size)}) once to this controller"
             for name, size in controller.planned.values()]
    pushes = [size for moves in _moves.values() for _, size in moves]
    relayed, seeds = relay.controller_bytes()  # each relayed file once, the devices pass it on
    if pushes or relayed:
        pushes.append(relayed)
        devices = sum(1 for moves in _moves.values() if moves) + seeds
        parts.append(f"push {gib(sum(pushes))} to {devices} device"
                     + ("s" if devices > 1 else ""))
    return "; ".join(parts)


def _print() -> None:
    if ctx_state.isset() and state.initialised:  # else pyinfra stopped before the inventory
        _print_rows()
    if _interrupted:
        # pyinfra exits 0 after Ctrl-C: a script running the deploy must see it did not finish.
        sys.stdout.flush()
        os._exit(INTERRUPTED_EXIT)


def _print_rows() -> None:
    rows = _rows()
    if not rows:
        return
    width = max(len(r[0]) for r in rows)
    dry = " (--dry: nothing was changed)" if is_dry() else ""
    out = ["", f"--> llama-docker summary{dry}:"]
    for name, result, detail, steps in rows:
        out.append(f"    {name:<{width}}  {result:<11}  {detail}".rstrip())
        out += [f"    {'':<{width}}    - {step}" for step in steps]
    moves = _moves_line() if is_dry() else ""
    if moves:
        out.append(f"    would move: {moves}")
    if is_dry():
        out += [f"    would {line}" for line in relay.plan_lines()]
    print("\n".join(out), file=sys.stderr, flush=True)


def _noting_interrupt(before: Callable[[int, FrameType | None], Any] | int | None
                      ) -> Callable[[int, FrameType | None], Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        global _interrupted
        _interrupted = True
        if callable(before):
            return before(signum, frame)  # pyinfra's own: its message, then exit
        raise KeyboardInterrupt
    return handler


def print_summary_at_exit() -> None:
    """Register (once per run, whatever the host count) the summary printer.

    Called from config.py, which pyinfra loads before it connects, the summary also names
    the hosts it could not reach; deploy files call it too, for runs from another folder."""
    global _registered
    if pyinfra.is_cli and not _registered:  # not when tests run deploy.py through the API
        _registered = True
        logging.getLogger("pyinfra").addHandler(_ConnectErrors())
        atexit.register(_print)
        try:
            signal.signal(signal.SIGINT, _noting_interrupt(signal.getsignal(signal.SIGINT)))
        except ValueError:  # not the main thread: the signal is not ours to watch
            pass
