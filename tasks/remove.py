"""Remove: stop and delete what the deploy installed on a device, the model store only with
`purge` (llama_docker/device/leftovers.py lists what that is). Facts first, in one round trip
after preflight's own, and an operation only for what is there: a second run changes nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import files, server

from llama_docker.device import launchd, leftovers
from llama_docker.device.target import Target
from llama_docker.knobs.errors import LlamaDockerError, RefusedError

from . import converge
from .batch import Known, gather
from .common import deploy, fail_host, notes, say
from .facts import HomebrewPrefix, LaunchdDomain, PathExists
from .preflight import device_target
from .runtime.macos import device_env


class Leftovers(FactBase):
    """Our containers and images, per runtime installed (docker, podman)."""

    def command(self) -> str:
        return leftovers.LIST_SCRIPT

    def process(self, output: list[str]) -> dict[str, dict[str, list[str]]]:
        return leftovers.parse_listing(output)

    @staticmethod
    def default() -> dict:
        return {}


class ColimaProfile(FactBase):
    """Whether colima has a VM of this profile, running or not (needs brew's PATH)."""

    def command(self, profile: str) -> str:
        return (f"colima list 2>/dev/null | awk 'NR>1 {{print $1}}' | "
                f"grep -qx {shlex.quote(profile)} && echo yes || echo no")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0] == "yes"


def _env(t: Target, uid: int) -> dict[str, str]:
    """systemctl --user's runtime dir; on a Mac brew's PATH and colima's docker context."""
    if not t.launchd:
        return t.unit_env(uid)
    brew = host.get_fact(HomebrewPrefix)
    return device_env(brew, "docker") if brew else {}


def _facts(t: Target, purge: bool, env: dict[str, str]) -> Known:
    paths = [u.path for u in leftovers.units_of(t)]
    paths += [*leftovers.folders(t, purge), *leftovers.files(t, purge)]
    wanted: list[tuple[type[FactBase], dict[str, Any]]] = [
        (PathExists, {"path": p}) for p in paths]
    wanted.append((Leftovers, {}))
    if t.launchd:
        wanted.append((ColimaProfile, {"profile": launchd.COLIMA_PROFILE}))
    return gather(wanted, _sudo=t.sudo, _env=env)


def _stop_agent(unit: leftovers.Unit, env: dict[str, str]) -> None:
    server.shell(name=f"Stop {unit.name}",
                 commands=[launchd.bootout_command(host.get_fact(LaunchdDomain), unit.name)],
                 _env=env)
    files.file(name=f"Delete {unit.path}", path=unit.path, present=False)


def _stop_units(t: Target, found: list[leftovers.Unit], env: dict[str, str]) -> None:
    for unit in found:
        if t.launchd:
            _stop_agent(unit, env)
        else:
            converge.removed_unit(why="Unit", service=unit.name,
                                  paths=((unit.path, unit.path),), user_mode=unit.user_mode,
                                  _sudo=t.sudo, _env=env)


def _containers_and_images(t: Target, known: Known, env: dict[str, str]) -> None:
    for runtime, ours in sorted(known.get(Leftovers).items()):
        if ours["containers"] or ours["images"]:
            server.shell(name=f"Remove llama-docker's {runtime} containers and images",
                         commands=leftovers.remove_commands(runtime, ours["containers"],
                                                            ours["images"]),
                         _sudo=t.sudo, _env=env)


def _colima_vm(env: dict[str, str]) -> None:
    """colima's VM of llama-docker's own profile, with its disk."""
    server.shell(name=f"Delete colima's VM {launchd.COLIMA_PROFILE}",
                 commands=[launchd.colima_delete_command()], _env=env)


def _remove(knobs: Mapping[str, Any], purge: bool) -> None:
    cfg, t, uid, _ = device_target(knobs)
    if purge:
        why = leftovers.purge_refusal(t.models_dir, t.home)
        if why:
            raise RefusedError(why)
    env = _env(t, uid)
    known = _facts(t, purge, env)
    present = [u for u in leftovers.units_of(t) if known.get(PathExists, path=u.path)]
    colima_agent = [u for u in present if u.name == launchd.label("colima")]
    _stop_units(t, [u for u in present if u not in colima_agent], env)
    _containers_and_images(t, known, env)
    _stop_units(t, colima_agent, env)  # after the images: they live in its VM
    if t.launchd and known.get(ColimaProfile, profile=launchd.COLIMA_PROFILE):
        _colima_vm(env)
    for folder in leftovers.folders(t, purge):
        if known.get(PathExists, path=folder):
            files.directory(name=f"Delete {folder}", path=folder, present=False,
                            _sudo=t.sudo)
    for path in leftovers.files(t, purge):
        if known.get(PathExists, path=path):
            files.file(name=f"Delete {path}", path=path, present=False, _sudo=t.sudo)
    kept = "" if purge else f"; its models stay in {t.models_dir} (--purge deletes them)"
    notes[host.name] = f"llama-docker removed{kept}"
    say(host, notes[host.name])


@deploy("Remove")
def remove(knobs: Mapping[str, Any] | None = None, purge: bool = False) -> None:
    """Stop and delete the units, containers and images of llama-docker on this host.

    + knobs: knob values that win over host and group data (service name, model store)
    + purge: also delete the model store
    """
    try:
        _remove(knobs or {}, purge)
    except LlamaDockerError as exc:
        fail_host(str(exc))
