"""Many facts in one SSH round trip.

pyinfra runs one command per fact, and a no-op run is nothing but facts: 40 of them cost
~2.5 s of round trips on a LAN. Preflight reads everything the steps will check in two
batches (who the device is, then what it holds); the steps ask `Known` and only call a
stock operation when the batch says something differs (tasks/converge.py). A fact the batch
did not read, or that failed in it, is asked for on its own: slower, never wrong.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.api.command import StringCommand

T = TypeVar("T")
Wanted = tuple[type[FactBase], dict[str, Any]]
MARK = "@@llama-docker-fact"


def _shell(command: Any) -> str:
    return command.get_raw_value() if isinstance(command, StringCommand) else str(command)


def key(cls: type[FactBase], kwargs: dict[str, Any]) -> tuple[str, str]:
    return cls.__name__, repr(sorted(kwargs.items()))


class Batch(FactBase):
    """The facts' own commands, each in a subshell, their outputs told apart by a marker line
    with the exit status; each output goes through that fact's own `process`."""

    def command(self, facts: tuple[Wanted, ...]) -> str:
        self.facts = [(cls(), kwargs) for cls, kwargs in facts]
        parts = []
        for i, (fact, kwargs) in enumerate(self.facts):
            cmd = _shell(fact.command(**kwargs))
            need = fact.requires_command(**kwargs)
            if need:
                cmd = (f"if command -v {need} >/dev/null 2>&1; then ( {cmd} ); "
                       f"else echo {MARK} {i} missing; fi")
            parts.append(f"echo {MARK} {i} start; ( {cmd} ); echo {MARK} {i} $?")
        return "\n".join(parts)

    def process(self, output: list[str]) -> dict[tuple[str, str], Any]:
        got: dict[tuple[str, str], Any] = {}
        lines: list[str] = []
        for line in output:
            text, mark, rest = line.partition(MARK)
            if text or not mark:  # output without a final newline runs into the marker
                lines.append(text)
            if not mark:
                continue
            index, what = rest.split()[:2]
            fact, kwargs = self.facts[int(index)]
            if what == "start":
                lines = []
            elif what == "missing":
                got[key(type(fact), kwargs)] = fact.default()
            elif what == "0" and key(type(fact), kwargs) not in got:
                got[key(type(fact), kwargs)] = fact.process(lines) if lines else fact.default()
        return got

    @staticmethod
    def default() -> dict:
        return {}


class Known:
    """Facts read by a batch, asked for like `host.get_fact`."""

    def __init__(self, values: dict[tuple[str, str], Any], read_at: float = 0.0,
                 **run_args: Any) -> None:
        self.values = values
        self.read_at = read_at  # the controller's clock mid round trip (to compare clocks)
        self.run_args = run_args  # the batch's _sudo/_env: a fallback asks the same way

    def get(self, cls: type[FactBase[T]], **kwargs: Any) -> T:
        found = self.values.get(key(cls, kwargs), self)
        if found is not self:
            return found
        return host.get_fact(cls, **kwargs, **self.run_args)


def gather(wanted: list[Wanted], **run_args: Any) -> Known:
    """Read `wanted` facts in one command (run with `run_args`, e.g. _sudo and _env)."""
    unique = list({key(cls, kw): (cls, kw) for cls, kw in wanted}.values())
    before = time.time()
    values = host.get_fact(Batch, facts=tuple(unique), **run_args) if unique else {}
    return Known(values, (before + time.time()) / 2, **run_args)
