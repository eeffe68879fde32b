"""One status table for every device: `llama-docker-status inventory.py [--json]` (in a
checkout also `python3 status.py inventory.py`).

Not a pyinfra deploy file: pyinfra runs a deploy file once per host, and one table needs every
host's row at once. So this loads the inventory and group_data exactly as the pyinfra CLI does
(pyinfra_cli's make_inventory: group_data beside the inventory and in the current folder;
the package's defaults under them), connects to all hosts
in parallel with pyinfra's API and runs two bounded scripts on each. Exit code 0 when every
host is healthy, 1 otherwise, 2 when the inventory cannot be read.
"""

# ruff: noqa: E402 - gevent must patch sockets before paramiko and pyinfra import them.
from gevent import monkey

monkey.patch_all()

import argparse
import logging
import os
import sys
from pathlib import Path

import gevent
from pyinfra.api import Config, Host, Inventory, State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_config, ctx_inventory, ctx_state
from pyinfra_cli.inventory import make_inventory

from llama_docker.device.login import login_user
from llama_docker.knobs import config
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import ConfigError, LlamaDockerError, RefusedError
from llama_docker.knobs.lock import Lock, pinned_config
from llama_docker.status import parse, probe, table
from llama_docker.status.row import Row
from llama_docker.transfer import lockfile

# Connect (10 s) + login, then the scripts' own bounds: a hung host cannot hold the table.
HOST_TIMEOUT = 30 + 2 * probe.SCRIPT_TIMEOUT


def load(inventory_file: str) -> State:
    """The inventory with its group data, as `pyinfra inventory_file deploy.py` sees it."""
    if not Path(inventory_file).is_file():
        raise PyinfraError(f"no inventory file {inventory_file}")
    state = State()  # group_data files run with a state in context, as in the CLI
    ctx_state.set(state)
    cfg = Config()
    ctx_config.set(cfg)
    inventory: Inventory = make_inventory(inventory_file, cwd=os.getcwd())
    ctx_inventory.set(inventory)
    state.init(inventory, cfg)
    return state


def _run(host: Host, command: str) -> dict[str, str]:
    ok, out = host.run_shell_command(command=command, _timeout=probe.SCRIPT_TIMEOUT)
    if not ok:
        raise LlamaDockerError("status commands failed: " + " ".join(out.stderr_lines)[:40])
    return parse.parse(out.stdout_lines)


def _ask(host: Host, cfg: config.Config, worker_of: str) -> Row:
    """Two round trips: facts to pick the device's target, then the bounded status script."""
    host.connect(show_errors=False, raise_exceptions=True)
    facts = _run(host, probe.FACTS_SCRIPT)
    try:
        user = login_user(host.data.dict(), getattr(host.connector, "client", None))
        t = parse.target_of(cfg, facts, user)
    except RefusedError as exc:
        return parse.refused_row(host.name, facts, exc)
    uid = int(facts["uid"]) if facts.get("uid", "").isdigit() else 0
    answers = _run(host, probe.script(cfg, t, uid, worker_of))
    return parse.row_from(host.name, cfg, t, {**facts, **answers}, worker_of)


def ask(host: Host, lock: Lock | None = None, worker_of: str = "") -> Row:
    """One host's row; every failure becomes the row's reason, never an exception. The
    lock file's sha256 stands in for a model knob that pins none (a preset). `worker_of`:
    the head whose split_over names this host (it runs only an RPC worker)."""
    try:
        cfg = pinned_config(config.load({**DEFAULTS, **host.data.dict()}, host.name),
                            lock or Lock())
    except ConfigError as exc:
        return parse.config_row(host.name, exc)
    try:
        with gevent.Timeout(HOST_TIMEOUT, TimeoutError):
            return _ask(host, cfg, worker_of)
    except TimeoutError:
        what = "status commands" if host.connected else "login"
        return Row(host=host.name, reachable=host.connected, error=f"{what} timed out")
    except LlamaDockerError as exc:
        return Row(host=host.name, reachable=True, error=str(exc))
    except PyinfraError as exc:  # ConnectError and unreadable key files alike
        return Row(host=host.name, reachable=False, error=parse.connect_reason(str(exc)))
    except Exception as exc:  # noqa: BLE001 - one odd host must not cost the others' rows
        return Row(host=host.name, reachable=host.connected,
                   error=f"{type(exc).__name__}: {exc}"[:60])
    finally:
        if host.connected:
            host.disconnect()


def rows(state: State, lock: Lock | None = None) -> list[Row]:
    """All hosts asked at once (pyinfra's pool), rows in inventory order."""
    hosts = list(state.inventory)
    heads = parse.workers_of((h.name, h.data.get("split_over")) for h in hosts)
    jobs = [state.pool.spawn(ask, h, lock, heads.get(h.name, "")) for h in hosts]
    gevent.joinall(jobs)
    return [job.get() for job in jobs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llama-docker-status",
        description="One line per device: model, sha, health, tokens/s, disk, RAM.")
    parser.add_argument("inventory", help="the pyinfra inventory file, e.g. inventory.py")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    args = parser.parse_args(argv)
    # pyinfra logs connect errors and host key warnings itself; each row carries its reason.
    logging.getLogger("pyinfra").addHandler(logging.NullHandler())
    logging.getLogger("pyinfra").propagate = False
    try:
        state = load(args.inventory)
    except Exception as exc:  # noqa: BLE001 - an inventory file's own error, shown in one line
        print(f"status: cannot load {args.inventory}: {exc}", file=sys.stderr)
        return 2
    try:
        lock = lockfile.read(lockfile.locate(args.inventory, os.getcwd()))
    except LlamaDockerError as exc:  # said, and the table compares with the knobs alone
        print(f"status: {exc}", file=sys.stderr)
        lock = Lock()
    found = rows(state, lock)
    if not found:
        print(f"status: no hosts in {args.inventory}", file=sys.stderr)
        return 2
    print(table.to_json(found) if args.json else table.table(found))
    return 0 if all(r.healthy for r in found) else 1
