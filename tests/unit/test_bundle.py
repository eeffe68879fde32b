"""The offline bundle: the lock and every cached file it names, into another controller's
cache, each file verified against the lock on the way in."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from llama_docker.knobs.errors import LlamaDockerError, VerifyError
from llama_docker.knobs.lock import FILENAME, ImagePin, Lock, ModelPin, Pin
from llama_docker.transfer import bundle, lockfile
from llama_docker.transfer.image_archive import ImageCache

MODEL = b"GGUF a model\n" * 1000
PROJ = b"GGUF a projector\n" * 100
UI = b"a web UI tarball\n" * 100
TAG, ARCH = "llama-docker/server:3f2a9c0d1e4b", "arm64"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _archive(path: Path) -> str:
    """A docker-archive holding one image config (no layers); its image ID."""
    config = json.dumps({"architecture": ARCH, "config": {"Labels": {
        "org.llama-docker.llama-cpp-version": "1:0.7.0+dfsg-2"}},
        "rootfs": {"diff_ids": []}}).encode()
    image_id = _sha(config)
    manifest = json.dumps([{"Config": f"{image_id}.json", "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (("manifest.json", manifest), (f"{image_id}.json", config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return image_id


def _cached(cache: Path, kind: str, name: str, data: bytes) -> None:
    path = cache / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.with_name(name + ".ok").write_text(_sha(data) + "\n")


@pytest.fixture
def home(tmp_path: Path) -> tuple[Path, Path]:
    """A controller that has deployed: its cache and its lock."""
    cache = tmp_path / "cache"
    _cached(cache, "models", f"{_sha(MODEL)}.gguf", MODEL)
    _cached(cache, "models", f"{_sha(PROJ)}.gguf", PROJ)
    _cached(cache, "webui", f"{_sha(UI)}.tar.gz", UI)
    images = ImageCache(cache)
    images.root.mkdir(parents=True)
    part = images.part(TAG, ARCH)
    image_id = _archive(part)
    entry = images.add(TAG, ARCH, part, _sha(part.read_bytes()), "pi.local")
    lock = (Lock()
            .with_model("vision", ModelPin(Pin("https://hf.co/m.gguf", _sha(MODEL), len(MODEL)),
                                           Pin("https://hf.co/p.gguf", _sha(PROJ), len(PROJ))))
            .with_model("mine", ModelPin(Pin("/home/me/mine.gguf", "e" * 64, 3)))
            .with_webui("b11669", Pin("https://github.com/u.tar.gz", _sha(UI), len(UI)))
            .with_image(ARCH, ImagePin(TAG, image_id, entry.version)))
    lock_path = tmp_path / "inv" / FILENAME
    lock_path.parent.mkdir()
    lockfile.write(lock_path, lock)
    return cache, lock_path


def test_a_bundle_fills_another_cache_the_way_a_deploy_would(home: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    cache, lock_path = home
    out = tmp_path / "fleet.bundle"
    names = bundle.write(out, lock_path, cache)
    assert names[0] == FILENAME and len(names) == 6  # lock, 2 models, UI, archive, index
    assert not any(n.startswith("models/eee") for n in names)  # a path model is the user's
    other, lock_there = tmp_path / "laptop" / "cache", tmp_path / "laptop" / FILENAME
    lock = bundle.unpack(out, other, lock_there)
    assert lockfile.read(lock_there) == lock == lockfile.read(lock_path)
    for data in (MODEL, PROJ):
        path = other / "models" / f"{_sha(data)}.gguf"
        assert path.read_bytes() == data
        assert path.with_name(path.name + ".ok").read_text().strip() == _sha(data)
    assert (other / "webui" / f"{_sha(UI)}.tar.gz").read_bytes() == UI
    entry = ImageCache(other).lookup(TAG, ARCH)
    assert entry is not None and entry.image_id == lock.images[ARCH].image_id
    assert Path(entry.path).parent == other / "images"  # the index names this cache
    assert bundle.unpack(out, other, lock_there) == lock  # again: nothing to do, no error


def test_a_file_altered_in_the_bundle_is_refused_and_not_kept(home: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    cache, lock_path = home
    model = cache / "models" / f"{_sha(MODEL)}.gguf"
    out = tmp_path / "fleet.bundle"
    bundle.write(out, lock_path, cache)
    raw = bytearray(out.read_bytes())
    at = raw.index(b"GGUF a model")
    raw[at] ^= 0x01
    out.write_bytes(bytes(raw))
    other = tmp_path / "laptop"
    with pytest.raises(VerifyError, match=f"models/{model.name} hashes .* expected"):
        bundle.unpack(out, other / "cache", other / FILENAME)
    assert not (other / "cache" / "models" / model.name).exists()
    assert not (other / FILENAME).exists()


def test_a_cache_without_the_files_says_which(home: tuple[Path, Path], tmp_path: Path) -> None:
    cache, lock_path = home
    (cache / "webui" / f"{_sha(UI)}.tar.gz.ok").unlink()
    with pytest.raises(LlamaDockerError, match=r"lacks web UI b11669: run the deploy"):
        bundle.write(tmp_path / "x.bundle", lock_path, cache)


def test_another_lock_beside_the_inventory_is_not_replaced(home: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    cache, lock_path = home
    out = tmp_path / "fleet.bundle"
    bundle.write(out, lock_path, cache)
    mine = tmp_path / "laptop" / FILENAME
    mine.parent.mkdir()
    lockfile.write(mine, Lock().with_model("x", ModelPin(Pin("https://a/x", "1" * 64))))
    kept = mine.read_text()
    with pytest.raises(LlamaDockerError, match="differs from the lock in"):
        bundle.unpack(out, tmp_path / "laptop" / "cache", mine)
    assert mine.read_text() == kept


def test_a_member_that_no_bundle_has_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "evil.bundle"
    with tarfile.open(out, "w") as tar:
        for name, data in ((FILENAME, lockfile_text()), ("models/../../x", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(LlamaDockerError, match="which no bundle has"):
        bundle.unpack(out, tmp_path / "cache", tmp_path / FILENAME)
    assert not (tmp_path / "x").exists()


def lockfile_text() -> bytes:
    from llama_docker.knobs.lock import dumps

    return dumps(Lock()).encode()
