"""The `llama-docker` command: pyinfra with llama-docker's own deploy files, from any folder.

    llama-docker plan inventory.py                  pyinfra inventory.py deploy.py --dry
    llama-docker deploy inventory.py -y --limit raspi.local
    llama-docker deploy --upgrade inventory.py      ... --data lock_upgrade=True
    llama-docker bundle fleet.tar inventory.py      then, offline: deploy --from fleet.tar

The lock's options and the bundle are tasks/cli_lock.py.

Every argument a subcommand does not take itself goes to pyinfra as it is (the inventory,
`--limit`, `-y`, `--use-sudo-password`, `--data`, `-v` ...). First every host's knobs are
checked, reachable or not: one line per bad knob and exit 2, nothing contacted. Then pyinfra
runs with the wheel's config.py (strict host keys unless your data says otherwise, and the
summary) and the subcommand's deploy file (tasks/entry/), so no clone is needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from . import cli_lock

ENTRY = Path(__file__).resolve().parent / "entry"
PASSED_ON = ("pyinfra's own options are passed on: --limit HOST, -y (no confirmation), "
             "--dry, --use-sudo-password, --data KNOB=VALUE, -v; see pyinfra --help")


@dataclass(frozen=True)
class Command:
    """A subcommand that is one pyinfra run of one deploy file."""

    name: str
    entry: str
    purpose: str
    extra: tuple[str, ...] = ()  # pyinfra options it adds

    @property
    def same_as(self) -> str:
        return " ".join(("pyinfra INVENTORY", self.entry, *self.extra))


COMMANDS = (
    Command("deploy", "deploy.py", "deploy llama-server to every device of the inventory: "
            "runtime, server image, model, service, health check; a no-op when converged"),
    Command("plan", "deploy.py", "the dry run: each device's steps and the bytes that would "
            "move, changing nothing", ("--dry",)),
    Command("model", "model.py", "redeploy only the model (after changing the model knob), "
            "with the restart it needs"),
    Command("rollback", "rollback.py", "serve each device's previous model again"),
    Command("remove", "remove.py", "stop and remove llama-docker's units, containers and "
            "images from the devices; the models stay unless --purge"),
)
STATUS = "one table for every device: model, sha, health, tokens/s, disk, RAM"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llama-docker", allow_abbrev=False,
        description="A private llama-server on every device you own, deployed with pyinfra.",
        epilog="Each subcommand takes the inventory as pyinfra does: "
               "llama-docker deploy inventory.py")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.purpose, allow_abbrev=False,
                           usage=f"llama-docker {cmd.name} {cli_lock.usage(cmd.name)}"
                                 "INVENTORY [pyinfra options]",
                           description=f"{cmd.purpose[0].upper()}{cmd.purpose[1:]}. "
                                       f"The same as: {cmd.same_as}",
                           epilog=PASSED_ON)
        if cmd.name == "remove":
            p.add_argument("--purge", action="store_true",
                           help="also delete the model store (models_dir) on each device")
        if cmd.name in cli_lock.UPGRADES:  # taken out before parsing (cli_lock.take_upgrade)
            p.add_argument(cli_lock.UPGRADE, action="store_true", help=cli_lock.UPGRADE_HELP)
        if cmd.name == "deploy":
            p.add_argument("--from", dest="source", metavar="FILE", help=cli_lock.FROM_HELP)
    status = sub.add_parser("status", help=STATUS, allow_abbrev=False,
                            description=f"{STATUS[0].upper()}{STATUS[1:]}. Exit code 0 when "
                                        "every device is healthy, 1 otherwise.")
    status.add_argument("inventory", help="the pyinfra inventory file, e.g. inventory.py")
    status.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    bundle = sub.add_parser("bundle", help=cli_lock.BUNDLE, allow_abbrev=False,
                            usage="llama-docker bundle FILE INVENTORY [pyinfra options]",
                            description=f"{cli_lock.BUNDLE[0].upper()}{cli_lock.BUNDLE[1:]}. "
                                        "Run it where a deploy has filled the cache.",
                            epilog="The lock is the one beside the inventory, the files come "
                                   "from its hosts' cache_dir (--data cache_dir=... and "
                                   "--limit are read as a run reads them).")
    bundle.add_argument("file", metavar="FILE", help="the archive to write, e.g. fleet.tar")
    return parser


def run_pyinfra(argv: list[str]) -> NoReturn:
    """Become pyinfra: its exit code, its prompts and Ctrl-C are the user's, unwrapped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def _pyinfra_params(rest: list[str]) -> dict | None:
    # pyinfra_cli patches the whole process with gevent when imported: only for a run.
    from . import inventory_check

    return inventory_check.pyinfra_params(rest)


def _refusal(cmd: Command, params: dict | None) -> str:
    """Why these arguments cannot run, before pyinfra starts ('' when they can)."""
    if params is None:
        return ""  # pyinfra refuses them itself, with its own usage line
    inventory = params.get("inventory")
    if not inventory:
        return f"give the inventory file: llama-docker {cmd.name} inventory.py"
    if params.get("operations"):
        return (f"llama-docker {cmd.name} runs its own deploy file ({cmd.entry}): give only "
                f"the inventory and pyinfra's options, not {' '.join(params['operations'])}")
    where = Path(params.get("chdir") or ".")
    if inventory.endswith(".py") and not (where / inventory).is_file():
        return f"no inventory file {inventory}"
    return ""


def _knobs(params: dict) -> int:
    """Exit code 2 with one line per bad knob (or an inventory that does not load), else 0."""
    from . import inventory_check

    try:
        lines = inventory_check.knob_errors(params)
    except Exception as exc:  # noqa: BLE001 - the inventory's own error, shown in one line
        print(f"llama-docker: cannot load {params['inventory']}: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line, file=sys.stderr)
    if lines:
        print("llama-docker: nothing was contacted; every knob is in group_data/all.py "
              "with what it accepts", file=sys.stderr)
    return 2 if lines else 0


def status_main(argv: list[str] | None = None) -> int:
    """`llama-docker-status`: the status table, with host keys as strict as the deploy's."""
    # Imported here, in this order: status patches sockets with gevent before paramiko and
    # pyinfra load; the strict default is set before it loads the inventory.
    from llama_docker.status import cli as status_cli

    from .trust import strict_by_default

    strict_by_default()
    return status_cli.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """`llama-docker`: exit 2 when nothing could start; otherwise pyinfra's own exit code."""
    parser = _parser()
    given, upgrade = cli_lock.take_upgrade(sys.argv[1:] if argv is None else argv)
    args, rest = parser.parse_known_args(given)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    source = getattr(args, "source", None)
    lock_why = cli_lock.refusal(args.command, upgrade, source)
    if lock_why:
        print(f"llama-docker: {lock_why}", file=sys.stderr)
        return 2
    if args.command == "status":
        if rest:
            parser.error(f"status takes the inventory and --json only, not {' '.join(rest)}")
        return status_main([args.inventory, *(["--json"] if args.json else [])])
    if args.command == "bundle":
        return cli_lock.bundle_main(args.file, rest)
    cmd = next(c for c in COMMANDS if c.name == args.command)
    rest = cli_lock.with_upgrade(rest, upgrade)
    params = _pyinfra_params(rest)
    why = _refusal(cmd, params)
    if why:
        print(f"llama-docker: {why}", file=sys.stderr)
        return 2
    if params is not None and _knobs(params):
        return 2
    if source and params is not None and cli_lock.unpack_main(source, params):
        return 2
    entry = "purge.py" if getattr(args, "purge", False) else cmd.entry
    run_pyinfra([sys.executable, "-m", "pyinfra", "--config", str(ENTRY / "config.py"),
                 *cmd.extra, *rest, str(ENTRY / entry)])
