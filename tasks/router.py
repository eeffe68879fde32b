"""Several models on one device (the `models` knob, llama-server's router mode).

Every file goes the way one model's files go (downloaded once, pushed, verified, stored by
sha256: tasks/model.py); the server then reads a generated preset naming each model and
pointing at its verified file. Presets are stored by their content's hash and served through
the `current-set.ini` link, the one before kept as `previous-set.ini`: a new set or new args
is a new file, so the unit restarts exactly when the set or its args change, and rollback
and prune work on sets as they work on one model's links.
"""

from __future__ import annotations

import shlex
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.api.operation import operation
from pyinfra.operations import files

from llama_docker.device import fit
from llama_docker.device.router_preset import (
    CURRENT_SET,
    PREVIOUS_SET,
    files_of,
    render_preset,
    set_file_name,
    set_prune,
)
from llama_docker.device.set_fit import (
    Need,
    auto_models_max,
    set_disk_refusal,
    set_memory_limit_mib,
    set_ram_refusal,
)
from llama_docker.device.store import link_commands
from llama_docker.knobs.errors import RefusedError
from llama_docker.knobs.model_set import ctx_of
from llama_docker.knobs.spec import ModelFile
from llama_docker.transfer.local_model import LocalFile, Member, local_file, remote_file

from .common import deploy, is_dry
from .facts import FreeBytes, StoreState
from .held import held
from .model import _place, sources
from .plan import Switch

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from .batch import Known, Wanted
    from .plan import Plan

MOUNT = "/models"  # the store as the server sees it (the unit mounts it read-only there)
_MARK = "@@llama-docker-set"


class SetFiles(FactBase):
    """The text of the presets `current-set.ini` and `previous-set.ini` point at (for prune:
    which stored files each set still needs)."""

    def command(self, root: str) -> str:
        return (f"cd {shlex.quote(root)} 2>/dev/null || exit 0; "
                f"for l in {CURRENT_SET} {PREVIOUS_SET}; do [ -r \"$l\" ] && "
                f"{{ echo \"{_MARK} $l\"; cat \"$l\"; }}; done; true")

    def process(self, output: list[str]) -> dict[str, str]:
        texts: dict[str, list[str]] = {}
        link = ""
        for line in output:
            if line.startswith(_MARK + " "):
                link = line.split(" ", 1)[1]
                texts[link] = []
            elif link:
                texts[link].append(line)
        return {k: "\n".join(v) for k, v in texts.items()}

    @staticmethod
    def default() -> dict:
        return {}


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    """Facts only a set needs (none for one model: its run reads what it always read)."""
    return [(SetFiles, {"root": tgt.models_dir})] if cfg.models else []


def _needs(cfg: Config, members: list[Member]) -> list[Need]:
    return [Need(name=m.spec.name,
                 weights=m.model.size + (m.mmproj.size if m.mmproj else 0),
                 kv=fit.kv_cache_bytes(m.model.shape, ctx_of(m.spec, cfg.ctx_size),
                                       m.model.size))
            for m in members]


def _missing(members: list[Member], stored: list[str]) -> list[tuple[str, int]]:
    """Each model's bytes not verified on the device yet (model and projector), a file two
    models share counted with the first."""
    seen: set[str] = set()
    out = []
    for m in members:
        size = 0
        for f in (m.model, m.mmproj):
            if f is not None and f.sha256 not in seen and f"{f.sha256}.ok" not in stored:
                size += f.size
            if f is not None:
                seen.add(f.sha256)
        out.append((m.spec.name, size))
    return out


def _fits(cfg: Config, tgt: Target, members: list[Member], ram: int | None,
          known: Known) -> int:
    """Refuse unless the set fits; return models_max (the knob's, or decided from RAM)."""
    needs = _needs(cfg, members)
    most = cfg.models_max or auto_models_max(needs, cfg.ram_margin_mib, ram)
    why = set_ram_refusal(needs, most, cfg.ram_margin_mib, ram)
    if why:
        raise RefusedError(why)
    stored = known.get(StoreState, root=tgt.models_dir)["files"]
    why = set_disk_refusal(_missing(members, stored), cfg.disk_margin_mib,
                           known.get(FreeBytes, path=tgt.models_dir), tgt.models_dir)
    if why:
        raise RefusedError(why)
    return most


def _members(cfg: Config, describe) -> list[Member]:  # noqa: ANN001 - ModelFile -> LocalFile
    return [Member(spec=s, model=describe(s.file),
                   mmproj=describe(s.mmproj) if s.mmproj else None) for s in cfg.models]


def prepare(cfg: Config, tgt: Target, ram: int | None, known: Known
            ) -> tuple[tuple[Member, ...], int, int]:
    """Fit the set from what the URLs say, then (controller mode) fetch every file once and
    fit again with each model's real shape. Returns (members, models_max, memory cap MiB)."""
    if tgt.launchd:
        raise RefusedError("several models (the models knob) run on Linux devices in this "
                           "version; on macOS use the model knob")
    cache = Path(cfg.cache_dir).expanduser()
    # A file the device holds verified is described from the device: never downloaded.
    holding = {f: held(cfg, f, known, tgt.models_dir)
               for s in cfg.models for f in (s.file, s.mmproj) if f is not None}

    def seen(f: ModelFile) -> LocalFile:
        return holding[f] or (remote_file(f) if f.is_url else local_file(f, cache))

    members = _members(cfg, seen)
    most = _fits(cfg, tgt, members, ram, known)
    if cfg.model_source == "controller":
        members = _members(cfg, lambda f: holding[f] or local_file(f, cache, dry=is_dry()))
        most = _fits(cfg, tgt, members, ram, known)
    return tuple(members), most, set_memory_limit_mib(_needs(cfg, members), most)


def preset_text(plan: Plan) -> str:
    return render_preset([m.entry() for m in plan.models], root=MOUNT,
                         ctx_size=plan.cfg.ctx_size, threads=plan.threads)


@operation()
def switch_set(root: str, set_file: str):
    """
    Point `current-set.ini` at a stored preset, keeping the one before as `previous-set.ini`.

    + root: the model store
    + set_file: the preset's name in the store, ``set-<hash>.ini``
    """
    now = host.get_fact(StoreState, root=root)["links"].get(CURRENT_SET)
    if now == set_file:
        return
    if now:
        yield link_commands(root, PREVIOUS_SET, now)
    yield link_commands(root, CURRENT_SET, set_file)


@operation()
def prune_files(root: str, names: list[str]):
    """
    Delete stored model files (with their verified markers) and presets.

    + names: names in the store, ``<sha256>.gguf`` or ``set-<hash>.ini``
    """
    for name in names:
        paths = [f"{root}/{name}"]
        if name.endswith(".gguf"):
            paths.append(f"{root}/{name.removesuffix('.gguf')}.ok")
        yield "rm -f " + " ".join(shlex.quote(p) for p in paths)


@deploy("Models")
def model_set(plan: Plan) -> Switch:
    """Put every model of the set on the device, then its preset, and serve that preset."""
    root = plan.store.root
    stored = plan.known.get(StoreState, root=root)
    links = stored["links"]
    before = {CURRENT_SET: links.get(CURRENT_SET), PREVIOUS_SET: links.get(PREVIOUS_SET)}
    for local, source in sources(plan):  # the store is made, pushes started: model.early
        _place(plan, local, source, stored["files"])
    text = preset_text(plan)
    name = set_file_name(text)
    names = ", ".join(m.spec.name for m in plan.models)
    if name not in stored["files"]:  # named by its hash: present means the same text
        files.put(name=f"Preset of {len(plan.models)} models ({names})", src=StringIO(text),
                  dest=f"{root}/{name}", mode="644")
    changed = False
    if links.get(CURRENT_SET) != name:
        changed = switch_set(name=f"Serve {names}", root=root, set_file=name).will_change
    return Switch(changed=changed, before=before)


@deploy("Prune old models")
def prune_set(plan: Plan) -> None:
    """Keep the files of the set served now and of the one before it (for rollback), and
    any file a link still points at; delete every other model file and preset."""
    root = plan.store.root
    stored = plan.known.get(StoreState, root=root)
    texts = plan.known.get(SetFiles, root=root)
    links = stored["links"]
    text = preset_text(plan)
    now = set_file_name(text)
    if links.get(CURRENT_SET) != now:  # this run switched: the old current is the previous
        previous, previous_text = links.get(CURRENT_SET), texts.get(CURRENT_SET, "")
    else:
        previous, previous_text = links.get(PREVIOUS_SET), texts.get(PREVIOUS_SET, "")
    keep_sets = [n for n in (now, previous) if n]
    linked = {v for k, v in links.items() if k.endswith(".gguf")}
    names = set_prune(stored["files"], keep_sets, files_of(text) | files_of(previous_text),
                      linked)
    if names:
        prune_files(name="Keep the current and previous sets' files", root=root, names=names)
