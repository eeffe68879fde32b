"""An offline bundle: the lock file and every cached file it names, in one tar archive, so a
controller with no internet deploys the same bits as the one that made it.

    llama-docker.lock
    models/<sha256>.gguf                 each model and projector fetched from a URL
    webui/<sha256>.tar.gz                the web UI of each llama.cpp build
    images/<image id>.tar                each CPU's server image (docker save)
    images/<tag>-<arch>.json             the controller cache's index of that archive

`write` makes it from this controller's cache; `unpack` puts it into another's, checking
every file against the lock before it gets its name there (models and UI by sha256, an
image by its archive's sha256 and the image ID of its config), so a bundle damaged or
altered on the way is refused; files that cache already holds verified are skipped. A run
then takes everything from the lock and the cache and asks nothing outside the home.
Models given as a path on the controller are not bundled (they are the user's own files).
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Protocol

from llama_docker.knobs.errors import LlamaDockerError, VerifyError
from llama_docker.knobs.lock import FILENAME, Lock, LockError, Pin, dumps, loads
from llama_docker.transfer import lockfile
from llama_docker.transfer.hashing import CHUNK, sha256_file
from llama_docker.transfer.image_archive import CachedImage, ImageCache, inspect_archive


def _marked(path: Path, sha: str) -> bool:
    """The cache's own word that `path` was verified (download.py's `<file>.ok`)."""
    try:
        return path.is_file() and path.with_name(path.name + ".ok").read_text().strip() == sha
    except OSError:
        return False


def _files(lock: Lock, cache: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(archive name, cached path) of every file the lock names, and what the cache lacks."""
    found: list[tuple[str, Path]] = []
    missing: list[str] = []
    pins: list[tuple[str, Pin, Path]] = []
    for name, entry in sorted(lock.models.items()):
        for label, pin in ((name, entry.file), (f"{name} (projector)", entry.mmproj)):
            if pin is not None and pin.is_url:
                pins.append((label, pin, cache / "models" / f"{pin.sha256}.gguf"))
    for build, pin in sorted(lock.webui.items()):
        pins.append((f"web UI {build}", pin, cache / "webui" / f"{pin.sha256}.tar.gz"))
    for label, pin, path in pins:
        if _marked(path, pin.sha256):
            found.append((f"{path.parent.name}/{path.name}", path))
        else:
            missing.append(label)
    images = ImageCache(cache)
    for key, image in sorted(lock.images.items()):
        cached = images.lookup(image.tag, key.split("-", 1)[0])
        if cached is None or cached.image_id != image.image_id:
            missing.append(f"server image {key}")
            continue
        index = images.index(cached.tag, cached.arch)
        found.append((f"images/{image.image_id}.tar", Path(cached.path)))
        found.append((f"images/{index.name}", index))
    return found, missing


def write(out: Path, lock_path: Path, cache_dir: Path,
          progress: Callable[[int], None] | None = None) -> list[str]:
    """Write the bundle of `lock_path` from `cache_dir` to `out` (atomically); the names of
    the files in it. Refuses, naming them, when the cache lacks files the lock names: a
    deploy from this controller fetches them first. `progress` is told each chunk's length."""
    lock = lockfile.read(lock_path)
    if lock.is_empty():
        raise LlamaDockerError(f"{lock_path} names nothing to bundle: deploy first")
    cache = Path(cache_dir).expanduser()
    found, missing = _files(lock, cache)
    if missing:
        raise LlamaDockerError(f"the cache {cache} lacks {', '.join(missing)}: run the deploy "
                               "from this controller first, then bundle")
    part = out.with_name(out.name + ".part")
    with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
        text = dumps(lock).encode()
        info = tarfile.TarInfo(FILENAME)
        info.size, info.mode = len(text), 0o644
        tar.addfile(info, _Bytes(text))
        for name, path in found:
            member = tar.gettarinfo(str(path), arcname=name)
            with open(path, "rb") as f:
                tar.addfile(member, _Counted(f, progress))
    os.replace(part, out)
    return [FILENAME] + [name for name, _ in found]


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _Counted:
    """A file object that tells `progress` how much was read from it."""

    def __init__(self, f: IO[bytes], progress: Callable[[int], None] | None) -> None:
        self._f, self._progress, self.n = f, progress, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.n += len(data)
        if self._progress is not None and data:
            self._progress(len(data))
        return data


class _Bytes:
    """A file object over bytes (tarfile reads members from one)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._at + n
        chunk, self._at = self._data[self._at:end], min(end, len(self._data))
        return chunk


def _copy(src: _Readable, dest: Path) -> str:
    """Stream a member into `dest` (through `<dest>.part`); its sha256."""
    h = hashlib.sha256()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "wb") as f:
        while chunk := src.read(CHUNK):
            h.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def _place(part: Path, dest: Path, sha: str) -> None:
    """Give a verified .part its name, and the marker the cache trusts."""
    os.replace(part, dest)
    marker = dest.with_name(dest.name + ".ok")
    marker.write_text(sha + "\n")


def _members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    for member in tar:
        kind, _, name = member.name.partition("/")
        if member.name == FILENAME:
            continue
        if (not member.isfile() or kind not in ("models", "webui", "images") or not name
                or "/" in name or name.startswith(".")):
            raise LlamaDockerError(f"the bundle holds {member.name!r}, which no bundle has")
        yield member, kind, name


def unpack(bundle: Path, cache_dir: Path, lock_path: Path,
           progress: Callable[[int], None] | None = None) -> Lock:
    """Put the bundle's files into `cache_dir`, each verified against its lock, and its lock
    at `lock_path` (which must be absent or the same lock). Raises VerifyError for a file
    that is not what the lock says (that file is deleted), LlamaDockerError for the rest.
    `progress` is told the bytes of each member as they are read (or skipped)."""
    cache = Path(cache_dir).expanduser()
    try:
        tar = tarfile.open(bundle)
    except (OSError, tarfile.TarError) as exc:
        raise LlamaDockerError(f"{bundle} is not a bundle: {exc}") from None
    with tar:
        try:
            member = tar.extractfile(FILENAME)
            if member is None:
                raise KeyError(FILENAME)
            lock = loads(member.read().decode("utf-8"))
        except (KeyError, UnicodeDecodeError, LockError) as exc:
            raise LlamaDockerError(f"{bundle} holds no lock file llama-docker can read "
                                   f"({exc})") from None
        _same_lock(lock, lock_path, bundle)
        wanted = {**{p.sha256: "models" for e in lock.models.values()
                     for p in (e.file, e.mmproj) if p is not None and p.is_url},
                  **{p.sha256: "webui" for p in lock.webui.values()}}
        images = {p.image_id for p in lock.images.values()}
        indexes: list[dict] = []
        for info, kind, name in _members(tar):
            member = tar.extractfile(info)
            assert member is not None  # a regular file (checked by _members)
            src = _Counted(member, progress)
            if kind == "images" and name.endswith(".json"):
                indexes.append(json.loads(src.read()))
            else:
                _unpack_file(src, cache, kind, name, wanted, images)
            if progress is not None and info.size > src.n:
                progress(info.size - src.n)  # a file the cache had: skipped, done
        _index_images(cache, indexes, lock)
    found, missing = _files(lock, cache)
    if missing:
        raise LlamaDockerError(f"{bundle} lacks {', '.join(missing)}, which its lock names")
    if not lock_path.exists():
        lockfile.write(lock_path, lock)
    return lock


def _same_lock(lock: Lock, lock_path: Path, bundle: Path) -> None:
    if lock_path.exists() and lockfile.read(lock_path) != lock:
        raise LlamaDockerError(f"{lock_path} differs from the lock in {bundle}: move it away "
                               "to deploy what the bundle holds")


def _unpack_file(src: _Readable, cache: Path, kind: str, name: str, wanted: dict[str, str],
                 images: set[str]) -> None:
    if kind == "images":
        image_id = name.removesuffix(".tar")
        if image_id not in images or not name.endswith(".tar"):
            raise LlamaDockerError(f"the bundle's images/{name} is no image of its lock")
        dest = ImageCache(cache).archive(image_id)
        if dest.is_file():
            return  # filed under its image ID: checked when it was
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy(src, dest)
        part = dest.with_name(dest.name + ".part")
        got = inspect_archive(part).image_id
        if got != image_id:
            part.unlink(missing_ok=True)
            raise VerifyError(f"the bundle's images/{name} holds image {got}: deleted")
        os.replace(part, dest)
        return
    sha = name.removesuffix(".gguf" if kind == "models" else ".tar.gz")
    if wanted.get(sha) != kind:
        raise LlamaDockerError(f"the bundle's {kind}/{name} is no file of its lock")
    dest = cache / kind / name
    if _marked(dest, sha):
        return
    got = _copy(src, dest)
    part = dest.with_name(dest.name + ".part")
    if got != sha:
        part.unlink(missing_ok=True)
        raise VerifyError(f"the bundle's {kind}/{name} hashes {got}, expected {sha} (its "
                          "lock's): deleted")
    _place(part, dest, sha)


def _index_images(cache: Path, indexes: list[dict], lock: Lock) -> None:
    """File each image archive under the cache's index, checked: the archive's sha256 (what
    devices verify before loading it) and the lock's image ID."""
    images = ImageCache(cache)
    locked = {p.image_id for p in lock.images.values()}
    for data in indexes:
        try:
            entry = CachedImage(**{**data, "layers": tuple(data.get("layers", ()))})
        except TypeError as exc:
            raise LlamaDockerError(f"the bundle's image index is not one: {exc}") from None
        archive = images.archive(entry.image_id)
        if entry.image_id not in locked or not archive.is_file():
            raise LlamaDockerError(f"the bundle's index of {entry.tag} ({entry.arch}) names "
                                   "no image of its lock")
        got = sha256_file(archive)
        if got != entry.sha256:
            raise VerifyError(f"{archive} hashes {got}, its index says {entry.sha256}")
        index = images.index(entry.tag, entry.arch)
        tmp = index.with_name(f".{index.name}.{os.getpid()}")
        tmp.write_text(json.dumps({**asdict(entry), "path": str(archive),
                                   "layers": list(entry.layers)}, indent=1))
        os.replace(tmp, index)
