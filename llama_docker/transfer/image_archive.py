"""The server image as an archive (`docker save` / `podman save`) and the controller's cache
of them: built once per (architecture, build args), the same bits on every device.

The cache holds `<cache_dir>/images/<image id>.tar` (the image ID is the sha256 of the
image's config, so the archive's name says what it holds) and, per tag and architecture, a
small JSON index naming the archive, its sha256 (what the devices verify before loading),
its layers and the llama.cpp version it records.

A device's own ID for the image is that config's sha256 with podman and with docker's own
image store. docker's containerd image store (the default of a fresh docker-ce since 29)
names an image by the digest of its manifest instead, which differs between a device that
built the image and one that loaded it; there the layers (the sha256 of each uncompressed
layer, in order) say whether a device holds the archive's bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from llama_docker.device.image import VERSION_LABEL
from llama_docker.knobs.errors import LlamaDockerError


def plain_id(image_id: str | None) -> str | None:
    """`sha256:<hex>` (docker) and `<hex>` (podman) as one form: the bare hex."""
    return image_id.removeprefix("sha256:") if image_id else None


@dataclass(frozen=True)
class ArchiveInfo:
    """What an archive holds, read from its own config (nothing is taken on trust)."""

    image_id: str
    arch: str
    version: str
    layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceImage:
    """An image as a device's runtime describes it (image_ship.inspect_command)."""

    image_id: str  # bare hex: the config's sha256, or a manifest's (containerd image store)
    layers: tuple[str, ...]
    version: str

    @classmethod
    def parse(cls, line: str | None) -> DeviceImage | None:
        """`<id>|<layer>,<layer>,...|<version>`; a bare `<id>` too; None for nothing."""
        image_id, _, rest = (line or "").strip().partition("|")
        layers, _, version = rest.partition("|")
        plain = plain_id(image_id.strip())
        if not plain:
            return None
        return cls(plain, tuple(plain_id(x.strip()) or "" for x in layers.split(",")
                                if x.strip()), version.strip())

    def holds(self, entry: CachedImage) -> bool:
        """True when this is the cached archive's image: the same config (its ID), or, where
        the runtime names images by manifest, the same layers in the same order."""
        return self.image_id == entry.image_id or bool(entry.layers
                                                       and self.layers == entry.layers)


def inspect_archive(path: Path) -> ArchiveInfo:
    """The image in a docker-archive tar: its ID (the config's sha256, checked against the
    name the manifest gives it), its CPU architecture and its llama.cpp label."""
    try:
        with tarfile.open(path) as tar:
            manifest = json.load(_member(tar, "manifest.json"))
            if not isinstance(manifest, list) or len(manifest) != 1:
                raise LlamaDockerError(f"{path}: expected one image in the archive")
            name = manifest[0]["Config"]
            raw = _member(tar, name).read()
    except (OSError, tarfile.TarError, ValueError, KeyError) as exc:
        raise LlamaDockerError(f"{path} is not a readable image archive: {exc}") from None
    image_id = hashlib.sha256(raw).hexdigest()
    named = Path(name).name.removesuffix(".json")
    if named != image_id:
        raise LlamaDockerError(f"{path}: the image config {name} hashes {image_id}")
    config = json.loads(raw)
    labels = (config.get("config") or {}).get("Labels") or {}
    layers = tuple(plain_id(x) or "" for x in (config.get("rootfs") or {}).get("diff_ids", []))
    return ArchiveInfo(image_id=image_id, arch=config.get("architecture", ""),
                       version=labels.get(VERSION_LABEL, ""), layers=layers)


def _member(tar: tarfile.TarFile, name: str):  # noqa: ANN202 - a file object
    f = tar.extractfile(name)
    if f is None:
        raise LlamaDockerError(f"{name} is not a file in the archive")
    return f


@dataclass(frozen=True)
class CachedImage:
    """One archive in the controller's cache, as its index describes it."""

    tag: str
    arch: str
    image_id: str
    sha256: str  # of the archive file: what a device hashes before loading it
    size: int
    version: str
    made_on: str  # the device it was built on (or saved from)
    path: str
    layers: tuple[str, ...] = ()  # uncompressed layers' sha256 (an index written before: none)


class ImageCache:
    """`<cache_dir>/images`: one archive per image ID, one index per (tag, architecture)."""

    def __init__(self, cache_dir: Path) -> None:
        self.root = Path(cache_dir).expanduser() / "images"

    def index(self, tag: str, arch: str) -> Path:
        return self.root / f"{tag.rsplit(':', 1)[-1]}-{arch}.json"

    def archive(self, image_id: str) -> Path:
        return self.root / f"{image_id}.tar"

    def part(self, tag: str, arch: str) -> Path:
        return self.root / f"{tag.rsplit(':', 1)[-1]}-{arch}.tar.part"

    def lookup(self, tag: str, arch: str) -> CachedImage | None:
        """The cached image for this tag and architecture, or None (no index, no archive)."""
        try:
            data = json.loads(self.index(tag, arch).read_text())
            entry = CachedImage(**{**data, "layers": tuple(data.get("layers", ()))})
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        if entry.tag != tag or entry.arch != arch or not Path(entry.path).is_file():
            return None
        return entry

    def add(self, tag: str, arch: str, part: Path, sha256: str, made_on: str) -> CachedImage:
        """Check a saved archive (its image, its architecture) and file it under its ID."""
        info = inspect_archive(part)
        if info.arch and info.arch != arch:
            raise LlamaDockerError(f"the archive of {tag} holds a {info.arch} image, "
                                   f"not {arch}")
        dest = self.archive(info.image_id)
        part.replace(dest)
        entry = CachedImage(tag=tag, arch=arch, image_id=info.image_id, sha256=sha256,
                            size=dest.stat().st_size, version=info.version, made_on=made_on,
                            path=str(dest), layers=info.layers)
        tmp = self.index(tag, arch).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(entry), indent=1))
        tmp.replace(self.index(tag, arch))
        return entry

    def forget(self, tag: str, arch: str) -> None:
        """Drop a damaged entry (its archive too): the next run makes it again."""
        entry = self.lookup(tag, arch)
        self.index(tag, arch).unlink(missing_ok=True)
        if entry:
            Path(entry.path).unlink(missing_ok=True)
