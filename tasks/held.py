"""Model files a device already holds verified, seen from a controller that lacks them.

A new laptop, or a cleared cache, would download every model again before it found that
each device holds it (`<sha256>.ok` in its store). When the expected sha256 is known without
the network (expected_sha) and the device holds that file verified, the run describes the
file from the device instead (its size, and its shape from the header's first bytes,
llama_docker/device/gguf_header.py) and downloads nothing for that device; a device that
lacks it still gets it the usual way. Read in preflight's one round trip.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import FactBase

from llama_docker.device.gguf_header import header_command, parse_output, shape_from_header
from llama_docker.knobs.spec import ModelFile
from llama_docker.transfer.local_model import LocalFile, cached_on_controller

from .common import say
from .facts import StoreState

if TYPE_CHECKING:
    from llama_docker.knobs.config import Config

    from .batch import Known, Wanted


class StoredHeader(FactBase):
    """A stored model file's size and its first bytes (empty when it is not there)."""

    def command(self, root: str, sha: str) -> str:
        return header_command(f"{root}/{sha}.gguf")

    def process(self, output: list[str]) -> dict:
        size, data = parse_output(output)
        return {"size": size, "header": data}

    @staticmethod
    def default() -> dict:
        return {"size": None, "header": b""}


def expected_sha(f: ModelFile) -> str | None:
    """The sha256 `f` must have, known without asking the network: the knob's pin, or the
    lock file's (preflight pins the knobs from llama-docker.lock before it asks for facts)."""
    return f.sha256


def _files(cfg: Config) -> list[tuple[ModelFile, bool]]:
    """Every URL file the knobs name, with whether its shape is needed (a model's is, for
    its context cache; a projector's is not)."""
    specs = cfg.models or (cfg.model,)
    pairs = [(s.file, True) for s in specs] + [(s.mmproj, False) for s in specs if s.mmproj]
    return [(f, shaped) for f, shaped in pairs if f.is_url]


def _asked(cfg: Config, f: ModelFile) -> str | None:
    """The sha256 to look for on the device: only for files this controller would download."""
    sha = expected_sha(f)
    if cfg.model_source != "controller" or sha is None:
        return None
    return None if cached_on_controller(Path(cfg.cache_dir).expanduser(), sha) else sha


def wants(cfg: Config, root: str) -> list[Wanted]:
    return [(StoredHeader, {"root": root, "sha": sha}) for f, _ in _files(cfg)
            if (sha := _asked(cfg, f))]


def held(cfg: Config, f: ModelFile, known: Known, root: str) -> LocalFile | None:
    """`f` as the device holds it, verified, when this controller would otherwise download
    it; else None (download, or use the controller's copy, as always)."""
    sha = _asked(cfg, f) if f.is_url else None
    if sha is None or f"{sha}.ok" not in known.get(StoreState, root=root)["files"]:
        return None
    found = known.get(StoredHeader, root=root, sha=sha)
    shaped = dict(_files(cfg)).get(f, True)
    shape = shape_from_header(found["header"]) if shaped else None
    if found["size"] is None or (shaped and shape is None):
        return None
    say(host, f"{f.filename}: verified on this device already (sha256 {sha[:12]}): nothing "
              "downloaded to this controller for it")
    return LocalFile(path=None, sha256=sha, size=found["size"], shape=shape)
