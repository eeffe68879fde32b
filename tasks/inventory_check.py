"""Every host's knobs checked before pyinfra connects, reachable or not.

pyinfra's own arguments are read by pyinfra's own parser (its click command, callbacks off),
so the inventory, `--limit`, `--exclude`, `--data` and `--group-data` mean here exactly what
they mean to the run that follows; the inventory and its group data are loaded the way
pyinfra_cli loads them (llama_docker/status/cli.py does the same).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import click
from pyinfra.api import Config, Host, Inventory, State
from pyinfra.context import ctx_config, ctx_state
from pyinfra_cli.cli import cli as pyinfra_cli
from pyinfra_cli.inventory import make_inventory
from pyinfra_cli.util import parse_cli_arg

from .unreachable import knob_lines


def pyinfra_params(args: Sequence[str]) -> dict[str, Any] | None:
    """pyinfra's parameters for these arguments, or None when pyinfra would refuse them (it
    then says why itself)."""
    try:
        ctx = pyinfra_cli.make_context("pyinfra", list(args), resilient_parsing=True)
    except click.ClickException:
        return None
    return dict(ctx.params)


def _matches(inventory: Inventory, patterns: Sequence[str]) -> list[Host]:
    """pyinfra's --limit/--exclude: a group's name, or a glob of host names."""
    found: list[Host] = []
    for pattern in patterns:
        group = inventory.get_group(pattern, None)
        found += group if group is not None else [
            h for h in inventory if fnmatch(h.name, pattern)]
    return found


def hosts(params: dict[str, Any]) -> list[Host]:
    """The hosts the run will try to reach, with their data, nothing contacted."""
    where = Path(params.get("chdir") or os.getcwd()).resolve()
    override = {}
    for arg in params.get("data") or ():
        key, _, value = arg.partition("=")
        override[key] = parse_cli_arg(value)
    if str(where) not in sys.path:  # as pyinfra: an inventory may import modules beside it
        sys.path.append(str(where))
    inventory_arg = params["inventory"]
    if (where / inventory_arg).exists():
        inventory_arg = str(where / inventory_arg)
    # group_data files run with a state and config in context, as in pyinfra's CLI
    with ctx_state.use(State()), ctx_config.use(Config()):
        inventory = make_inventory(inventory_arg, override_data=override, cwd=str(where),
                                   group_data_directories=params.get("group_data") or ())
    limit = set(_matches(inventory, params["limit"])) if params.get("limit") else None
    excluded = set(_matches(inventory, params.get("exclude") or ()))
    return [h for h in inventory if (limit is None or h in limit) and h not in excluded]


def knob_errors(params: dict[str, Any]) -> list[str]:
    """One line per bad knob of every host of the run (`raspi: knob port=99999 is ...`)."""
    return [line for h in hosts(params) for line in knob_lines(h)]
