"""The controller's side of the web UI: one verified tarball per llama.cpp build, in the
cache, whatever number of devices ask for it; or the user's own UI folder or tarball.

The upstream tarball is checked against the sha256 the user pinned (`webui_sha256`) or,
failing that, the one the release publishes, which is printed so it can be pinned. A
published digest is remembered in the cache (`webui/<build>.sha256`, so a later run needs no
network at all) only once a download has verified against it; one that refused the tarball
is forgotten, so the next run asks the release again instead of refusing forever.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import sys
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import requests
from gevent.lock import Semaphore

from llama_docker.device import webui
from llama_docker.knobs.errors import FetchError, LlamaDockerError, RefusedError, VerifyError
from llama_docker.transfer.download import fetch
from llama_docker.transfer.hashing import sha256_file

TIMEOUT = 20  # seconds per request for the published digest
_seen: dict[tuple[str, ...], UiFile] = {}
# pyinfra prepares and runs hosts concurrently (greenlets): one download per build.
_locks: defaultdict[tuple[str, ...], Semaphore] = defaultdict(Semaphore)


@dataclass(frozen=True)
class UiFile:
    """A verified UI tarball on the controller and the folder in it that holds index.html."""

    path: Path
    sha256: str
    size: int
    folder: str
    label: str  # what the run's lines call it: the asset's name, or the user's path


def cache_folder(cache_dir: Path) -> Path:
    return cache_dir / "webui"


def known_digest(cache_dir: Path, build: str, pinned: str) -> str | None:
    """The sha256 to expect for `build` without asking the network: pinned, or remembered."""
    if pinned:
        return pinned
    try:
        return webui.digest_from_sums((cache_folder(cache_dir) / f"{build}.sha256").read_text())
    except OSError:
        return None


def upstream(cache_dir: Path, build: str, mirror: str, pinned: str) -> UiFile:
    """The verified UI tarball of llama.cpp `build`: downloaded once (resumable), then
    reused by every device and every later run. Raises LlamaDockerError when it cannot be
    had (no network, no such release, a digest that does not match)."""
    key = ("upstream", build, mirror, pinned)
    with _locks[key]:
        if key not in _seen:
            _seen[key] = _upstream(cache_dir, build, mirror, pinned)
    return _seen[key]


def _upstream(cache_dir: Path, build: str, mirror: str, pinned: str) -> UiFile:
    sha = known_digest(cache_dir, build, pinned)
    asked = sha is None
    if sha is None:
        sha = _published(build, mirror)
    dest = cache_folder(cache_dir) / f"{sha}.tar.gz"
    try:
        fetch(webui.release_url(mirror, build), dest, sha, label=webui.asset(build), retries=3,
              max_backoff=5, session=requests.Session())
    except VerifyError as exc:
        raise VerifyError(_refused(str(exc), cache_dir, build, mirror, pinned)) from None
    if asked:  # verified against it: now it may spare later runs the question
        _remember(cache_dir, build, sha)
    return UiFile(path=dest, sha256=sha, size=dest.stat().st_size,
                  folder=webui.ui_folder(dest), label=webui.asset(build))


def _digest_file(cache_dir: Path, build: str) -> Path:
    return cache_folder(cache_dir) / f"{build}.sha256"


def _remember(cache_dir: Path, build: str, sha: str) -> None:
    path = _digest_file(cache_dir, build)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{sha}  {webui.asset(build)}\n")
    tmp.replace(path)


def _refused(why: str, cache_dir: Path, build: str, mirror: str, pinned: str) -> str:
    """The refusal's line, with what the user can do. A published digest is forgotten (a
    mirror fixed since is asked again next run); a pinned one is the user's to fix."""
    if pinned:
        return f"{why}; that is webui_sha256: fix the pin, or the tarball on the mirror"
    _digest_file(cache_dir, build).unlink(missing_ok=True)
    return (f"{why}; the digest published at {webui.digest_url(mirror, build)} is asked "
            "again next run (if it stays wrong, pin the tarball's right sha256 with "
            "webui_sha256)")


def _published(build: str, mirror: str) -> str:
    """The digest the release publishes, printed so it can be pinned; kept in the cache by
    _upstream only once a download has verified against it."""
    url = webui.digest_url(mirror, build)
    try:
        resp = requests.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise FetchError(f"{url}: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise FetchError(f"{url}: HTTP {resp.status_code} (no UI release for {build}?)")
    if mirror:
        sha = webui.digest_from_sums(resp.text)
    else:
        try:
            sha = webui.digest_from_release(resp.json(), build)
        except ValueError:
            sha = None
    if sha is None:
        raise FetchError(f"{url} publishes no sha256 for {webui.asset(build)}: pin it with "
                         "webui_sha256")
    print(f"llama-docker: {webui.asset(build)}: sha256 {sha} as published at {url}; "
          "pin it with webui_sha256", file=sys.stderr)
    return sha


def local(source: str, cache_dir: Path, pinned: str) -> UiFile:
    """The user's own built UI (`webui` = a folder or a .tar.gz on this controller), as a
    verified tarball. A folder is packed reproducibly (sorted, no times, no owners), so the
    same folder is the same sha256 and a re-run sends nothing. Bad input: RefusedError."""
    key = ("local", source, pinned)
    with _locks[key]:
        if key not in _seen:
            _seen[key] = _local(source, cache_dir, pinned)
    return _seen[key]


def _local(source: str, cache_dir: Path, pinned: str) -> UiFile:
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "index.html").is_file():
            raise RefusedError(f"web UI folder {path} has no index.html")
        data = pack(path)
        sha = hashlib.sha256(data).hexdigest()
        dest = cache_folder(cache_dir) / f"{sha}.tar.gz"
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(dest)
    elif path.is_file():
        dest, sha = path, sha256_file(path)
    else:
        raise RefusedError(f"web UI {path} does not exist on this controller (webui knob)")
    if pinned and sha != pinned:
        raise RefusedError(f"web UI {path} hashes {sha}, expected {pinned} (webui_sha256)")
    try:
        folder = webui.ui_folder(dest)
    except VerifyError as exc:
        raise RefusedError(f"web UI {path}: {exc}") from None
    return UiFile(path=dest, sha256=sha, size=dest.stat().st_size, folder=folder,
                  label=str(path))


def pack(folder: Path) -> bytes:
    """A gzip tarball of `folder`'s files, the same bytes for the same content."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                tar.addfile(info)
            else:
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


def unavailable(exc: LlamaDockerError) -> str:
    """Why the upstream UI could not be had, as the tail of the run's one line."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
