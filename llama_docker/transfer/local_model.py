"""The controller's side of a model: find it, verify it once, describe it."""

from __future__ import annotations

import shutil
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import requests
from gevent.lock import Semaphore

from llama_docker.device.fit import MIB, Shape, gib
from llama_docker.device.router_preset import SetEntry
from llama_docker.knobs.errors import RefusedError
from llama_docker.knobs.spec import ModelFile, ModelSpec
from llama_docker.transfer import hubauth
from llama_docker.transfer.download import fetch, hub_sha256
from llama_docker.transfer.gguf_shape import read_shape
from llama_docker.transfer.hashing import verify_once

CACHE_MARGIN_MIB = 512

_seen: dict[tuple[str, str], LocalFile] = {}
# pyinfra prepares hosts concurrently (greenlets): one download per file, the others wait.
_locks: defaultdict[tuple[str, str], Semaphore] = defaultdict(Semaphore)


@dataclass(frozen=True)
class LocalFile:
    """A verified model file on the controller."""

    path: Path | None  # None: not on the controller (direct mode: the device downloads it)
    sha256: str
    size: int
    shape: Shape | None


# What a dry run would download: URL -> (file name, bytes), for the run's summary.
planned: dict[str, tuple[str, int]] = {}


def local_file(f: ModelFile, cache_dir: Path, dry: bool = False) -> LocalFile:
    """The verified local copy of a model file (once per process, once per file change).

    `dry`: a URL not cached yet is described from what the URL says (sha256, size) and
    recorded in `planned`, so a dry run plans every step without downloading."""
    if dry and f.is_url:
        known = remote_file(f)
        dest = _cached(cache_dir, known.sha256)
        if not dest.with_name(dest.name + ".ok").exists():
            planned[f.source] = (f.filename, known.size)
            return LocalFile(path=dest, sha256=known.sha256, size=known.size, shape=None)
    key = (f.source, f.sha256 or "")
    with _locks[key]:
        if key not in _seen:
            _seen[key] = _local_file(f, cache_dir)
    return _seen[key]


def _local_file(f: ModelFile, cache_dir: Path) -> LocalFile:
    if f.is_url:
        path, sha = _download(f, cache_dir)
    else:
        path = Path(f.source).expanduser()
        if not path.is_file():
            raise RefusedError(f"model file {path} does not exist on this controller")
        assert f.sha256 is not None  # spec rule: paths always carry a sha256
        sha = f.sha256
        verify_once(path, sha, cache_dir / "verified")
    try:
        shape = read_shape(path)
    except Exception:  # noqa: BLE001 - an unreadable header only costs the RAM estimate
        shape = None
    return LocalFile(path=path, sha256=sha, size=path.stat().st_size, shape=shape)


def remote_file(f: ModelFile) -> LocalFile:
    """What a URL holds (sha256 and size), known without downloading it: for the fit checks
    before the first byte moves, and for direct mode, where the devices download it."""
    key = ("remote", f.source)
    with _locks[key]:
        if key not in _seen:
            _seen[key] = _remote_file(f)
    return _seen[key]


def _remote_file(f: ModelFile) -> LocalFile:
    if not f.is_url:
        raise RefusedError(f"model_source 'direct' needs a URL, not the path {f.source}")
    sha, size = f.sha256, f.size
    if sha is None:  # only Hugging Face URLs may omit it: the hub publishes the LFS sha256
        sha, hub_size = hub_sha256(f.source)
        size = size or hub_size
        print(f"llama-docker: {f.filename}: sha256 {sha} as published by Hugging Face; "
              "pin it with 'sha256' in the model knob", file=sys.stderr)
    if size is None:
        try:
            resp = hubauth.session().head(f.source, allow_redirects=True, timeout=30)
            size = int(resp.headers.get("Content-Length", 0)) or None
        except (requests.RequestException, ValueError):
            size = None
    return LocalFile(path=None, sha256=sha, size=size or 0, shape=None)


def _cached(cache_dir: Path, sha: str) -> Path:
    return cache_dir / "models" / f"{sha}.gguf"


def cached_on_controller(cache_dir: Path, sha: str) -> bool:
    """The controller's cache holds this file verified: using it downloads nothing."""
    dest = _cached(cache_dir, sha)
    return dest.with_name(dest.name + ".ok").exists()


def _download(f: ModelFile, cache_dir: Path) -> tuple[Path, str]:
    """Download once into the controller cache (resumable, verified); every host reuses it."""
    known = remote_file(f)  # sha256 and size, from the knob or the hub (asked once)
    sha, size = known.sha256, known.size or None
    dest = _cached(cache_dir, sha)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.with_name(dest.name + ".ok").exists():
        part = dest.with_name(dest.name + ".part")
        have = part.stat().st_size if part.exists() else 0
        free = shutil.disk_usage(dest.parent).free
        if size and size - have + CACHE_MARGIN_MIB * MIB > free:
            raise RefusedError(f"not enough disk for the controller cache at {dest.parent}: "
                               f"{f.filename} needs {gib(size - have)}, {gib(free)} free "
                               "(set cache_dir to a bigger disk)")
    fetch(f.source, dest, sha, size=size, label=f.filename)
    return dest, sha


@dataclass(frozen=True)
class Member:
    """One model of the set as preflight found it: the knob's entry and its verified files
    (on the controller, or described from the URL in direct mode)."""

    spec: ModelSpec
    model: LocalFile
    mmproj: LocalFile | None

    def entry(self) -> SetEntry:
        return SetEntry(name=self.spec.name, sha256=self.model.sha256,
                        mmproj_sha256=self.mmproj.sha256 if self.mmproj else None,
                        args=self.spec.args)
