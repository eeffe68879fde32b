"""The lock file in a run (`llama-docker.lock`, its rules in llama_docker/knobs/lock.py).

Read once, when the first host is prepared; every model file it pins is taken from it
(preflight), and so is the web UI's digest (tasks/webui.py), so a run with nothing new asks
nothing outside the home. What the run resolved anew (a file the lock did not have, a knob
that differs from it, an upgrade asked for with `lock_upgrade`) is said in one line each and
written back when the run ends, with each CPU's server image as the controller's cache then
holds it. Never under `--dry`, never when the run stopped before executing (a confirmation
answered no), never over a file that could not be read.

The file lives beside the inventory file pyinfra was given, else in the folder pyinfra runs
in; `LLAMA_DOCKER_LOCK` names another file (for a program that runs pyinfra with a command
line of its own). pyinfra prepares and runs the hosts in greenlets of one process: the lock
is one object here, read once (under a gevent lock) and written once, when the run ends.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pyinfra
from gevent.lock import Semaphore
from pyinfra import host, state
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_state

from llama_docker.device import webui as ui
from llama_docker.knobs import lock as rules
from llama_docker.knobs.errors import VerifyError
from llama_docker.knobs.lock import Lock, LockError, ModelPin, Pin
from llama_docker.knobs.spec import ModelFile, ModelSpec
from llama_docker.transfer import lockfile, webui_fetch
from llama_docker.transfer.image_archive import ImageCache

from .common import is_dry
from .image import server_tag

if TYPE_CHECKING:
    from llama_docker.knobs.config import Config
    from llama_docker.transfer.local_model import LocalFile
    from llama_docker.transfer.webui_fetch import UiFile

    from .plan import Plan

_guard = Semaphore()


@dataclass
class _Run:
    """The lock as this run sees it."""

    path: Path
    base: Lock = field(default_factory=Lock)  # as read when the run started
    error: str = ""  # the file could not be read: every host is refused with this line
    news: Lock = field(default_factory=Lock)  # entries this run resolved anew
    owners: dict[str, str] = field(default_factory=dict)  # model name -> first host
    images: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # key -> cache,tag,arch
    asked: set[str] = field(default_factory=set)  # names lock_upgrade gave
    met: set[str] = field(default_factory=set)  # names this run has entries for
    said: set[str] = field(default_factory=set)
    pinned: dict[str, str] = field(default_factory=dict)  # sha256 taken from the lock -> name

    def view(self) -> Lock:
        """The lock with this run's new entries: a later host takes what an earlier one
        resolved, so the fleet gets one file per name."""
        return self.base.merged(self.news)

    def say(self, line: str) -> None:
        if line and line not in self.said:
            self.said.add(line)
            print(f"llama-docker.lock: {line}", file=sys.stderr, flush=True)


_run: _Run | None = None


def lock_path() -> Path | None:
    """Beside the inventory file of this pyinfra run (its cwd when the inventory is not a
    file); `LLAMA_DOCKER_LOCK` wins. None outside pyinfra's CLI (a deploy driven through
    the API, the unit tests) unless that variable is set."""
    cwd = getattr(state, "cwd", None) or os.getcwd()
    if os.environ.get(lockfile.ENV):
        return lockfile.locate(None, cwd)
    if not pyinfra.is_cli:
        return None
    return lockfile.locate(_inventory_arg(), cwd)


def _inventory_arg() -> str | None:
    """The inventory argument of pyinfra's command line: from its click context where this
    greenlet sees it, else parsed again from sys.argv by pyinfra's own command (hosts are
    prepared in greenlets of their own, and click's context is greenlet-local under gevent)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or "inventory" not in ctx.params:
        try:
            from pyinfra_cli.cli import cli  # imported already: this is pyinfra's CLI

            ctx = cli.make_context("pyinfra", sys.argv[1:], resilient_parsing=True)
        except Exception:  # noqa: BLE001 - another command line: the cwd it is
            return None
    inventory = ctx.params.get("inventory")
    return inventory if isinstance(inventory, str) else None


def current() -> _Run | None:
    """This run's lock, read on first use (None: no lock in this kind of run)."""
    global _run
    with _guard:
        if _run is None:
            path = lock_path()
            if path is None:
                return None
            _run = _Run(path=path)
            try:
                _run.base = lockfile.read(path)
            except LockError as exc:
                _run.error = str(exc)
            if pyinfra.is_cli:
                atexit.register(_flush_at_exit)  # after summary.py's: runs before it prints
        return _run


def forget() -> None:
    """Drop this process's lock (tests run several deploys in one process)."""
    global _run
    _run = None


# --- Models ----------------------------------------------------------------------------------

def _served(cfg: Config) -> tuple[ModelSpec, ...]:
    return cfg.models or (cfg.model,)


def pin(cfg: Config) -> Config:
    """The host's knobs with every model file the lock pins filled in (sha256, size), so
    nothing is asked of the file's host. Raises LockError for a lock that cannot be read."""
    run = current()
    if run is None:
        return cfg
    if run.error:
        raise LockError(run.error)
    upgrade = cfg.lock_upgrade
    if isinstance(upgrade, tuple):
        run.asked.update(upgrade)
    view = run.view()
    pinned = []
    for spec in _served(cfg):
        # An upgrade resolves each file once per run: a later host takes what it found.
        wants = rules.wants_upgrade(upgrade, spec.name) and spec.name not in run.news.models
        if wants and spec.file.sha256:
            run.say(f"{spec.name}: the model knob pins its sha256: nothing to upgrade")
        got, main, proj = rules.pinned_spec(spec, view, wants)
        for decision in (main, proj):
            if decision is not None and not decision.anew and decision.file.sha256:
                run.pinned[decision.file.sha256] = spec.name
        pinned.append(got)
    if cfg.models:
        return replace(cfg, models=tuple(pinned))
    return replace(cfg, model=pinned[0])


def explain(exc: Exception) -> str:
    """The host's one line for an error, with the upgrade to ask for when a file the lock
    pins is not what its URL serves any more."""
    run = _run
    text = str(exc)
    if run is not None and isinstance(exc, VerifyError):
        for sha, name in run.pinned.items():
            if f"expected {sha}" in text:
                return (f"{text}: the file at its url changed since the lock file pinned it; "
                        f"--data lock_upgrade={name} takes the new one")
    return text


def _pin_of(f: ModelFile, local: LocalFile) -> Pin:
    return Pin(source=f.source, sha256=local.sha256, size=local.size or None)


def record(plan: Plan) -> None:
    """What preflight resolved for this host (its model files, its image to look up at the
    end), into the run's lock; one line for each entry that is new or changed."""
    run = current()
    if run is None or run.error or plan.model is None:
        return
    cfg = plan.cfg
    if plan.models:
        files = [(m.spec, m.model, m.mmproj) for m in plan.models]
    else:
        files = [(cfg.model, plan.model, plan.mmproj)]
    for spec, model, mmproj in files:
        run.met.add(spec.name)
        entry = ModelPin(_pin_of(spec.file, model),
                         _pin_of(spec.mmproj, mmproj) if spec.mmproj and mmproj else None)
        _record_model(run, spec, entry, rules.wants_upgrade(cfg.lock_upgrade, spec.name))
    _note_image(run, plan)


def _record_model(run: _Run, spec: ModelSpec, entry: ModelPin, upgrade: bool) -> None:
    before = run.view().models.get(spec.name)
    first = run.owners.setdefault(spec.name, host.name)
    if before == entry:
        if upgrade and not spec.file.sha256 and spec.name not in run.news.models:
            run.say(f"{spec.name}: up to date (sha256 {entry.file.sha256[:rules.SHORT]})")
            run.news = run.news.with_model(spec.name, entry)  # resolved in this run
        return
    if first != host.name and _files(before) != _files(entry):
        run.say(f"{spec.name}: {host.name}'s model knob names another file than {first}'s "
                f"({entry.file.source}): the lock keeps {first}'s; give the two models "
                "different names")
        return
    main = rules.decide(spec.file, before.file if before else None, upgrade)
    run.say(rules.said(spec.name, main, before.file if before else None, entry.file))
    if spec.mmproj and entry.mmproj:
        old = before.mmproj if before else None
        run.say(rules.said(f"{spec.name} (projector)",
                           rules.decide(spec.mmproj, old, upgrade), old, entry.mmproj))
    run.news = run.news.with_model(spec.name, entry)


def _files(entry: ModelPin | None) -> tuple[tuple[str, str], ...]:
    """Which files an entry names (its sizes aside)."""
    pins = (entry.file, entry.mmproj) if entry else ()
    return tuple((p.source, p.sha256) for p in pins if p)


def _note_image(run: _Run, plan: Plan) -> None:
    """The server image this host runs, looked up in the controller's cache at the end of
    the run (it may be built in it). Not for images each device builds for itself."""
    cfg, tgt = plan.cfg, plan.target
    if tgt.native or cfg.image_source != "controller":
        return
    key = rules.image_key(plan.arch, tgt.gpu.backend)
    run.images[key] = (cfg.cache_dir, server_tag(cfg, tgt), plan.arch)


# --- The web UI ------------------------------------------------------------------------------

def _ui_decision(cfg: Config, build: str, run: _Run) -> tuple[str, rules.Decision]:
    url = ui.release_url(cfg.webui_mirror, build)
    knob = ModelFile(source=url, sha256=cfg.webui_sha256 or None)
    upgrade = rules.wants_upgrade(cfg.lock_upgrade, rules.WEBUI)
    return url, rules.decide(knob, run.view().webui.get(build), upgrade)


def _ui_pinned(cfg: Config, build: str) -> str:
    """The sha256 the UI of `build` must have without asking anyone: the knob's pin, else
    the lock's ('' when neither: the cache's remembered digest, else the published one)."""
    run = current()
    if run is None or run.error:
        return cfg.webui_sha256
    return _ui_decision(cfg, build, run)[1].file.sha256 or ""


def _record_ui(cfg: Config, build: str, sha: str, size: int | None) -> None:
    run = current()
    if run is None or run.error:
        return
    run.met.add(rules.WEBUI)
    url, decision = _ui_decision(cfg, build, run)
    before = run.view().webui.get(build)
    after = Pin(source=url, sha256=sha, size=size or (before.size if before else None))
    if before == after and decision.why != "upgrade":
        return
    run.say(rules.said(f"web UI {build}", decision, before, after))
    run.news = run.news.with_webui(build, after)


def ui_upstream(cfg: Config, build: str) -> UiFile:
    """webui_fetch.upstream with the lock's digest; what it verified goes into the lock."""
    got = webui_fetch.upstream(Path(cfg.cache_dir).expanduser(), build, cfg.webui_mirror,
                               _ui_pinned(cfg, build))
    _record_ui(cfg, build, got.sha256, got.size)
    return got


def ui_known_digest(cfg: Config, build: str) -> str | None:
    """webui_fetch.known_digest with the lock's digest (no network either way)."""
    cache = Path(cfg.cache_dir).expanduser()
    sha = webui_fetch.known_digest(cache, build, _ui_pinned(cfg, build))
    if sha:
        tarball = webui_fetch.cache_folder(cache) / f"{sha}.tar.gz"
        _record_ui(cfg, build, sha, tarball.stat().st_size if tarball.is_file() else None)
    return sha


# --- The end of the run ----------------------------------------------------------------------

def _images(run: _Run) -> None:
    """Each CPU's server image as the controller's cache holds it now."""
    for key, (cache_dir, tag, arch) in sorted(run.images.items()):
        entry = ImageCache(Path(cache_dir).expanduser()).lookup(tag, arch)
        if entry is None:
            continue  # not made in this run (its build failed): the entry stays as it was
        pin_ = rules.ImagePin(tag=tag, image_id=entry.image_id, llama_cpp=entry.version)
        run.say(rules.image_said(key, run.view().images.get(key), pin_))
        run.news = run.news.with_image(key, pin_)


def flush() -> bool:
    """Write what this run resolved into the lock file (True when the file changed)."""
    run = _run
    if run is None or run.error:
        return False
    with _guard:
        _images(run)
        unknown = sorted(run.asked - run.met)
        if unknown:
            run.say(f"lock_upgrade names {', '.join(unknown)}: no model (or web UI) of this "
                    "run has that name")
        if run.news.is_empty():
            return False
        try:
            merged = lockfile.read(run.path).merged(run.news)  # as it is now on disk
        except LockError as exc:
            run.say(f"not written: {exc}")
            return False
        if is_dry():
            if merged != run.base:
                run.say(f"not written (--dry): {run.path}")
            return False
        if not _executed():
            return False
        try:
            written = lockfile.write(run.path, merged)
        except OSError as exc:
            run.say(f"cannot write {run.path}: {exc}")
            return False
        if written:
            run.say(f"written: {run.path}")
        return written


def _flush_at_exit() -> None:
    try:
        flush()
    except Exception as exc:  # noqa: BLE001 - one line at exit, never a traceback
        print(f"llama-docker.lock: not written: {type(exc).__name__}: {exc}", file=sys.stderr)


def _executed() -> bool:
    """The run reached its operations (not stopped at pyinfra's confirmation)."""
    if not ctx_state.isset():  # no pyinfra run around: a direct call
        return True
    return state.current_stage >= StateStage.Execute
