"""The controller's side of a model: find it, verify it once, describe it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import RefusedError
from .fit import Shape
from .hashing import verify_once
from .shape import read_shape
from .spec import ModelFile

_seen: dict[tuple[str, str], LocalFile] = {}


@dataclass(frozen=True)
class LocalFile:
    """A verified model file on the controller."""

    path: Path
    sha256: str
    size: int
    shape: Shape | None


def local_file(f: ModelFile, cache_dir: Path) -> LocalFile:
    """The verified local copy of a model file (once per process, once per file change)."""
    key = (f.source, f.sha256 or "")
    if key in _seen:
        return _seen[key]
    if f.is_url:
        raise RefusedError(
            f"{f.filename} is not on this controller: downloading from {f.source} is not part "
            "of this version; download it and set model = {'path': ..., 'sha256': ...}")
    path = Path(f.source).expanduser()
    if not path.is_file():
        raise RefusedError(f"model file {path} does not exist on this controller")
    assert f.sha256 is not None  # spec rule: paths always carry a sha256
    verify_once(path, f.sha256, cache_dir / "verified")
    try:
        shape = read_shape(path)
    except Exception:  # noqa: BLE001 - an unreadable header only costs the RAM estimate
        shape = None
    result = LocalFile(path=path, sha256=f.sha256, size=path.stat().st_size, shape=shape)
    _seen[key] = result
    return result
