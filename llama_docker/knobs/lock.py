"""The lock file's rules: what a run resolved, kept beside the inventory (`llama-docker.lock`).

Pure: the file's format (JSON, sorted, the same text for the same content, meant to be
committed with the inventory), the `lock_upgrade` knob, and the rule that decides, for each
model file, whether a run takes the lock's sha256 and size (asking nothing outside the home)
or resolves the file anew: a file the lock does not have yet, a knob that differs from the
lock (another URL or path, a pinned sha256 or size of its own), or an upgrade asked for.

    {
      "images": {"amd64": {"image_id": "...", "llama_cpp": "1:0.7.0+dfsg-2",
                           "tag": "llama-docker/server:3f2a9c0d1e4b"}},
      "models": {"qwen2.5-0.5b-instruct": {"sha256": "...", "size": 397808192,
                                           "url": "https://..."}},
      "version": 1,
      "webui": {"b11669": {"sha256": "...", "size": 4190812, "url": "https://..."}}
    }

A model with a projector has it under `mmproj` in its entry; a model from the controller's
own disk has `path` instead of `url`. Images are keyed by CPU architecture (`amd64`,
`arm64`), with `-vulkan` for a GPU image; the web UI by llama.cpp build.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llama_docker.knobs.errors import ConfigError, LlamaDockerError
from llama_docker.knobs.spec import SHA256, ModelFile, ModelSpec

if TYPE_CHECKING:
    from llama_docker.knobs.config import Config

FILENAME = "llama-docker.lock"
VERSION = 1
WEBUI = "webui"  # the name lock_upgrade takes for the web UI's entries
_NAME = re.compile(r"^[\w.+-]{1,100}$")
SHORT = 12  # hex digits of a sha256 or image ID in the run's lines


class LockError(LlamaDockerError):
    """The lock file cannot be read as a lock: said in one line, the file left as it is."""


@dataclass(frozen=True)
class Pin:
    """One file as the lock keeps it: where it comes from, its sha256 and its size."""

    source: str  # an http(s) URL, or a path on the controller
    sha256: str
    size: int | None = None  # None: not known (a direct-mode URL that gives no length)

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url" if self.is_url else "path": self.source,
                               "sha256": self.sha256}
        if self.size:
            out["size"] = self.size
        return out


@dataclass(frozen=True)
class ModelPin:
    """A model's entry: its GGUF and, for a vision model, its projector."""

    file: Pin
    mmproj: Pin | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.file.to_json()
        if self.mmproj:
            out["mmproj"] = self.mmproj.to_json()
        return out


@dataclass(frozen=True)
class ImagePin:
    """The server image of one CPU architecture: its tag (the build's inputs), its ID (the
    bits) and the llama.cpp package it holds."""

    tag: str
    image_id: str
    llama_cpp: str

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "image_id": self.image_id, "llama_cpp": self.llama_cpp}


@dataclass(frozen=True)
class Lock:
    """The whole file. Never changed in place: `with_*` return a new Lock."""

    models: Mapping[str, ModelPin] = field(default_factory=dict)
    webui: Mapping[str, Pin] = field(default_factory=dict)
    images: Mapping[str, ImagePin] = field(default_factory=dict)

    def with_model(self, name: str, pin: ModelPin) -> Lock:
        return replace(self, models={**self.models, name: pin})

    def with_webui(self, build: str, pin: Pin) -> Lock:
        return replace(self, webui={**self.webui, build: pin})

    def with_image(self, key: str, pin: ImagePin) -> Lock:
        return replace(self, images={**self.images, key: pin})

    def merged(self, newer: Lock) -> Lock:
        """This lock with every entry of `newer` put in (entries of newer win)."""
        return Lock(models={**self.models, **newer.models}, webui={**self.webui, **newer.webui},
                    images={**self.images, **newer.images})

    def is_empty(self) -> bool:
        return not (self.models or self.webui or self.images)


def dumps(lock: Lock) -> str:
    """The file's text: keys sorted, two-space indent, one trailing newline; the same lock is
    always the same text, so a run that changes nothing leaves the file byte for byte."""
    data = {"version": VERSION,
            "models": {k: v.to_json() for k, v in lock.models.items()},
            "webui": {k: v.to_json() for k, v in lock.webui.items()},
            "images": {k: v.to_json() for k, v in lock.images.items()}}
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def loads(text: str) -> Lock:
    """Read the file's text; LockError says what is wrong (the caller names the file)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LockError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LockError("not a JSON object")
    if data.get("version") != VERSION:
        raise LockError(f"version {data.get('version')!r}, this llama-docker reads version "
                        f"{VERSION}")
    return Lock(models={k: _model(f"models.{k}", v) for k, v in _section(data, "models")},
                webui={k: _pin(f"webui.{k}", v) for k, v in _section(data, "webui")},
                images={k: _image(f"images.{k}", v) for k, v in _section(data, "images")})


def _section(data: dict, name: str) -> list[tuple[str, Any]]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise LockError(f"{name} is not a JSON object")
    return sorted(section.items())


def _pin(where: str, value: Any) -> Pin:
    if not isinstance(value, dict):
        raise LockError(f"{where} is not a JSON object")
    source = value.get("url", value.get("path"))
    sha, size = value.get("sha256"), value.get("size")
    if not isinstance(source, str) or not source:
        raise LockError(f"{where} has no url (or path)")
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise LockError(f"{where}.sha256 is not 64 lowercase hex digits")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise LockError(f"{where}.size is not a positive number of bytes")
    return Pin(source=source, sha256=sha, size=size)


def _model(where: str, value: Any) -> ModelPin:
    mmproj = value.get("mmproj") if isinstance(value, dict) else None
    return ModelPin(file=_pin(where, value),
                    mmproj=_pin(f"{where}.mmproj", mmproj) if mmproj is not None else None)


def _image(where: str, value: Any) -> ImagePin:
    if not isinstance(value, dict) or not all(
            isinstance(value.get(k), str) for k in ("tag", "image_id", "llama_cpp")):
        raise LockError(f"{where} needs tag, image_id and llama_cpp (strings)")
    return ImagePin(tag=value["tag"], image_id=value["image_id"], llama_cpp=value["llama_cpp"])


# --- The lock_upgrade knob --------------------------------------------------------------------

def upgrade_rule(knob: str, value: Any) -> bool | tuple[str, ...]:
    """`lock_upgrade`: False (take everything from the lock), True (resolve every entry the
    run meets anew), or the names of the entries to resolve anew: a model's name, or
    "webui"; as a list or one string, names separated by commas."""
    if value is True or value is False:
        return value
    names = value.split(",") if isinstance(value, str) else value
    if isinstance(names, (list, tuple)) and names:
        names = [n.strip() if isinstance(n, str) else n for n in names]
        if all(isinstance(n, str) and _NAME.match(n) for n in names):
            return tuple(sorted(set(names)))
    raise ConfigError(knob, value, "False, True (every entry of the lock file), or a model's "
                                   "name, 'webui', or a list of them (the entries to resolve "
                                   "anew)")


def wants_upgrade(setting: bool | tuple[str, ...], name: str) -> bool:
    return setting is True or (isinstance(setting, tuple) and name in setting)


# --- Models: the lock's pin, or resolve anew --------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """What a run does with one model file: `file` is what the run resolves (the knob's,
    with the lock's sha256 and size filled in when `anew` is False); `why` names what sent
    it back to its source ('' for a file the lock did not have)."""

    file: ModelFile
    anew: bool
    why: str = ""


def decide(knob: ModelFile, locked: Pin | None, upgrade: bool) -> Decision:
    """The lock's sha256 and size for the knob's file, unless the knob says otherwise."""
    if locked is None:
        return Decision(knob, anew=True)
    where = "url" if knob.is_url else "path"
    if knob.source != locked.source:
        return Decision(knob, anew=True,
                        why=f"the knob's {where} differs from the lock's ({locked.source})")
    if knob.sha256 and knob.sha256 != locked.sha256:
        return Decision(knob, anew=True, why=f"the knob's sha256 {knob.sha256[:SHORT]} differs "
                                             f"from the lock's {locked.sha256[:SHORT]}")
    if knob.size and locked.size and knob.size != locked.size:
        return Decision(knob, anew=True, why=f"the knob's size {knob.size} differs from the "
                                             f"lock's {locked.size}")
    if upgrade and not knob.sha256:
        return Decision(knob, anew=True, why="upgrade")
    return Decision(replace(knob, sha256=locked.sha256, size=knob.size or locked.size),
                    anew=False)


def pinned_spec(spec: ModelSpec, lock: Lock, upgrade: bool = False
                ) -> tuple[ModelSpec, Decision, Decision | None]:
    """The model with its files pinned by the lock where the rules allow; the decisions."""
    entry = lock.models.get(spec.name)
    main = decide(spec.file, entry.file if entry else None, upgrade)
    proj = (decide(spec.mmproj, entry.mmproj if entry else None, upgrade)
            if spec.mmproj else None)
    return (replace(spec, file=main.file, mmproj=proj.file if proj else None), main, proj)


def pinned_config(cfg: Config, lock: Lock) -> Config:
    """A host's knobs with every model file the lock pins filled in (status: the sha256 a
    device must serve, for presets too)."""
    return replace(cfg, model=pinned_spec(cfg.model, lock)[0],
                   models=tuple(pinned_spec(s, lock)[0] for s in cfg.models))


def said(label: str, decision: Decision, before: Pin | None, after: Pin) -> str:
    """The run's line for a file resolved anew ('' when there is nothing to say: a file
    taken from the lock, or one whose entry only gained its size)."""
    if not decision.anew:
        return ""
    what = f"sha256 {after.sha256[:SHORT]}" + (f", {after.size} bytes" if after.size else "")
    if before is None:
        return f"{label}: added ({what})"
    if decision.why == "upgrade":
        if before.sha256 == after.sha256:
            return f"{label}: up to date ({what})"
        return (f"{label}: upgraded, sha256 {before.sha256[:SHORT]} -> {after.sha256[:SHORT]} "
                f"(the file at its url changed)")
    if before == after:
        return ""
    return f"{label}: {decision.why}: updated ({what})"


def image_key(arch: str, backend: str) -> str:
    """The images section's key: the CPU architecture, `-vulkan` for the GPU image."""
    return arch if backend in ("", "cpu") else f"{arch}-{backend}"


def image_said(key: str, before: ImagePin | None, after: ImagePin) -> str:
    """The run's line for an image entry that is new or changed ('' when the same)."""
    now = f"image {after.image_id[:SHORT]}, llama.cpp {after.llama_cpp or 'unknown'}"
    if before is None:
        return f"server image {key}: added ({now}, {after.tag})"
    if before == after:
        return ""
    why = ("its build inputs changed (a knob or this llama-docker)" if before.tag != after.tag
           else "built anew (a controller without the cached archive, or image_rebuild)")
    return (f"server image {key}: {why}: updated ({now}; was image "
            f"{before.image_id[:SHORT]}, llama.cpp {before.llama_cpp or 'unknown'})")
