"""The lock file's side of the `llama-docker` command (tasks/cli.py):

    llama-docker deploy --upgrade inventory.py                     every entry resolved anew
    llama-docker deploy --upgrade=qwen2.5-0.5b-instruct inventory.py   that model only
    llama-docker bundle fleet.tar inventory.py      the lock and every cached file it names
    llama-docker deploy --from fleet.tar inventory.py   on a controller with no internet

`--upgrade` is `--data lock_upgrade=...` (the knob, README "Lock file"); its names follow an
equals sign, so the inventory is never taken for one. The bundle is
llama_docker/transfer/bundle.py: the lock beside the inventory (LLAMA_DOCKER_LOCK names
another), the cache of the inventory's hosts (`cache_dir`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import ConfigError, LlamaDockerError
from llama_docker.knobs.lock import Lock, upgrade_rule
from llama_docker.transfer import bundle, lockfile
from llama_docker.transfer.progress import ByteProgress, size

UPGRADE = "--upgrade"
UPGRADES = ("deploy", "plan", "model")  # the commands that resolve models
UPGRADE_HELP = ("resolve the lock file's entries anew (a newer file at the same URL) "
                "instead of taking them from the lock; --upgrade=NAME[,NAME] only those "
                "models (or 'webui'). The same as --data lock_upgrade=True (or =NAME)")
FROM_HELP = ("first unpack FILE (made by `llama-docker bundle`) into this controller's cache, "
             "every file checked against the bundle's lock, which goes beside the inventory; "
             "then deploy from it, with no internet")
BUNDLE = ("write the lock file and every cached file it names (models, web UI, server "
          "images) into one archive, for `llama-docker deploy --from FILE` on another "
          "controller")


def usage(command: str) -> str:
    """The lock options in a command's usage line ('' for a command without them)."""
    return ("[--upgrade[=NAME,...]] " if command in UPGRADES else "") + \
        ("[--from FILE] " if command == "deploy" else "")


def take_upgrade(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """The arguments without `--upgrade[=NAMES]`, and the lock_upgrade value it asks for
    ("True", or the names as given); None when not asked."""
    rest: list[str] = []
    value: str | None = None
    for arg in argv:
        if arg == UPGRADE:
            value = "True"
        elif arg.startswith(UPGRADE + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, value


def refusal(command: str, upgrade: str | None, source: str | None) -> str:
    """Why these lock options cannot run ('' when they can)."""
    if upgrade is None:
        return ""
    if command not in UPGRADES:
        return f"--upgrade goes with {', '.join(UPGRADES)}, not {command}"
    if source:
        return ("--from deploys what the bundle's lock pins, --upgrade asks the files' hosts "
                "for newer ones: one or the other")
    if upgrade != "True":
        try:
            upgrade_rule("--upgrade", upgrade)
        except ConfigError as exc:
            return str(exc).replace("knob --upgrade", "--upgrade")
    return ""


def with_upgrade(rest: list[str], upgrade: str | None) -> list[str]:
    """pyinfra's arguments with the knob --upgrade stands for."""
    return rest if upgrade is None else ["--data", f"lock_upgrade={upgrade}", *rest]


def _where(params: dict[str, Any]) -> tuple[Path, Path]:
    """(the lock's path, the folder the run starts in), as the run will find them."""
    where = Path(params.get("chdir") or os.getcwd())
    inventory = params["inventory"]
    if (where / inventory).is_file():
        inventory = str(where / inventory)
    return lockfile.locate(inventory, str(where)), where


def cache_dirs(params: dict[str, Any]) -> list[Path]:
    """The controller caches of the run's hosts (the `cache_dir` knob), in inventory order."""
    from . import inventory_check  # loads pyinfra_cli (gevent): only when needed

    found: list[Path] = []
    for h in inventory_check.hosts(params):
        value = h.data.dict().get("cache_dir") or DEFAULTS["cache_dir"]
        path = Path(os.path.expanduser(str(value))).resolve()
        if path not in found:
            found.append(path)
    return found


def _contents(lock: Lock, left_out: Sequence[str] = ()) -> str:
    parts = []
    models = sorted(set(lock.models) - set(left_out))
    if models:
        parts.append("models " + ", ".join(models))
    if lock.webui:
        parts.append("web UI " + ", ".join(sorted(lock.webui)))
    if lock.images:
        parts.append("server images " + ", ".join(sorted(lock.images)))
    return "; ".join(parts)


def _say(line: str) -> None:
    print(f"llama-docker: {line}", file=sys.stderr, flush=True)


def _own_files(lock: Lock) -> list[str]:
    """Models the lock names by a path on this controller: not in any bundle."""
    return sorted(name for name, entry in lock.models.items()
                  if not entry.file.is_url or (entry.mmproj and not entry.mmproj.is_url))


def bundle_main(out: str, rest: list[str]) -> int:
    """`llama-docker bundle FILE INVENTORY`: 0 when written, else 2 with one line."""
    from . import inventory_check

    params = inventory_check.pyinfra_params(rest)
    usage = "llama-docker bundle fleet.tar inventory.py"
    if params is None or params.get("operations") or not params.get("inventory"):
        _say(f"give the file to write and the inventory: {usage}"
             + (f" (not {' '.join(rest)})" if rest else ""))
        return 2
    where = Path(params.get("chdir") or ".")
    if params["inventory"].endswith(".py") and not (where / params["inventory"]).is_file():
        _say(f"no inventory file {params['inventory']}")
        return 2
    try:
        lock_path, _ = _where(params)
        caches = cache_dirs(params)
        if len(caches) != 1:
            _say(f"the hosts keep their files in {len(caches)} caches "
                 f"({', '.join(map(str, caches))}): bundle one, with --limit to its hosts")
            return 2
        target = Path(out).expanduser().resolve()
        with ByteProgress(f"bundle {target.name}", f"writing {target}", _say) as shown:
            names = bundle.write(target, lock_path, caches[0], shown)
        lock = lockfile.read(lock_path)
    except Exception as exc:  # noqa: BLE001 - the inventory's or the cache's, in one line
        _say(f"no bundle written: {exc}")
        return 2
    own = _own_files(lock)
    _say(f"wrote {target} ({size(target.stat().st_size)}): {lock_path.name} and "
         f"{len(names) - 1} files from {caches[0]} ({_contents(lock, own)})")
    if own:
        _say(f"not in it: {', '.join(own)}, a file on this controller's disk (a `path` "
             "model): the other controller needs it at the same path")
    return 0


def unpack_main(source: str, params: dict[str, Any]) -> int:
    """`deploy --from FILE`: the bundle into the run's cache(s) and its lock beside the
    inventory; 0, else 2 with one line (nothing deployed)."""
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        _say(f"no bundle {source}")
        return 2
    try:
        lock_path, _ = _where(params)
        for cache in cache_dirs(params):
            with ByteProgress(f"unpack {path.name}", f"unpacking {path.name} into {cache}",
                              _say, total=path.stat().st_size) as shown:
                lock = bundle.unpack(path, cache, lock_path, shown)
            _say(f"{path.name} is in {cache}, every file checked against its lock "
                 f"({_contents(lock)}); the lock: {lock_path}")
    except (LlamaDockerError, OSError) as exc:
        _say(f"nothing deployed: {exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - an inventory that does not load, in one line
        _say(f"nothing deployed: {type(exc).__name__}: {exc}")
        return 2
    return 0
