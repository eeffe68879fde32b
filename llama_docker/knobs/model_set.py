"""Several models on one device: the `models` knob, and the preset file llama-server's router
mode reads (`--models-preset`), rendered from the verified files in the store.

Router mode starts llama-server without `-m`; each model runs in a child process. The
preset INI names each model (the name clients send as `"model"`) and points at its file;
a `[*]` section holds what every model shares. The command line beats a model's section,
which beats `[*]`: so context size and threads go in `[*]`, never on the command line,
or no model could have its own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_docker.knobs.errors import ConfigError
from llama_docker.knobs.spec import ModelSpec, resolve_model

if TYPE_CHECKING:
    from llama_docker.transfer.local_model import LocalFile

# Links in the store: the preset file served now, and the one before it (for rollback).
CURRENT_SET = "current-set.ini"
PREVIOUS_SET = "previous-set.ini"
SET_FILE = re.compile(r"^set-[0-9a-f]{16}\.ini$")
# Names the router keeps for itself (`*` is the shared section; `default` is the phantom
# entry llama.cpp #22364 describes).
RESERVED = ("*", "default")
# Arguments the router owns: a model's section may not set them.
ROUTER_OWNED = ("host", "port", "api-key", "api-key-file", "model", "mmproj", "models-dir",
                "models-preset", "models-max", "models-autoload")
_LONG = re.compile(r"^--([a-z0-9][a-z0-9-]*)$")


def resolve_models(knob: str, value: Any) -> tuple[ModelSpec, ...]:
    """The `models` knob: [] (one model, the `model` knob) or a list of presets and dicts,
    each with a distinct name; raises ConfigError naming the entry at fault."""
    if value in ([], ()):
        return ()
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        raise ConfigError(knob, value, "a list of model presets or dicts, e.g. "
                                       "['qwen2.5-0.5b-instruct', {'name': ..., 'url': ...}]")
    specs = tuple(resolve_model(v, f"{knob}[{i}]") for i, v in enumerate(value))
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in RESERVED:
            raise ConfigError(f"{knob}[{i}].name", spec.name,
                              "a name other than " + ", ".join(map(repr, RESERVED)))
        if spec.name in seen:
            raise ConfigError(f"{knob}[{i}].name", spec.name,
                              "a name no other model of the list has (clients pick by name)")
        seen.add(spec.name)
        preset_keys(spec.args, f"{knob}[{i}].args")  # refuses what cannot go in a section
    return specs


def preset_keys(args: tuple[str, ...], knob: str = "args") -> list[tuple[str, str]]:
    """Command-line arguments as preset keys: `--ctx-size 4096` -> ("ctx-size", "4096"),
    a flag alone (`--jinja`) -> ("jinja", "true"). Only long names have a key."""
    keys: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        m = _LONG.match(args[i])
        if not m:
            raise ConfigError(knob, list(args), "long arguments ('--ctx-size', '4096'): a "
                                                f"preset has no key for {args[i]!r}")
        name = m.group(1)
        if name in ROUTER_OWNED:
            raise ConfigError(knob, list(args), f"arguments other than --{name} (the router "
                                                "sets it for each model)")
        value = "true"
        if i + 1 < len(args) and not _LONG.match(args[i + 1]):
            value = args[i + 1]
            i += 1
        if "\n" in value:
            raise ConfigError(knob, list(args), "values on one line")
        keys.append((name, value))
        i += 1
    return keys


def ctx_of(spec: ModelSpec, default: int) -> int:
    """The model's own context size (`--ctx-size` in its args), else the ctx_size knob."""
    keys = dict(preset_keys(spec.args))
    value = keys.get("ctx-size") or keys.get("c")
    return int(value) if value and value.isdigit() else default


@dataclass(frozen=True)
class SetEntry:
    """One model of the set as the device stores it: its name, verified files and args."""

    name: str
    sha256: str
    mmproj_sha256: str | None
    args: tuple[str, ...]


def render_preset(entries: list[SetEntry], *, root: str, ctx_size: int, threads: int) -> str:
    """The preset INI: `[*]` with what every model shares, then one section per model, in
    the knob's order, each pointing at its file in the store as the server sees it."""
    lines = ["# Written by llama-docker from the models knob; a re-run overwrites it.",
             "version = 1", "", "[*]", f"ctx-size = {ctx_size}", f"threads = {threads}"]
    for e in entries:
        lines += ["", f"[{e.name}]", f"model = {root}/{e.sha256}.gguf"]
        if e.mmproj_sha256:
            lines.append(f"mmproj = {root}/{e.mmproj_sha256}.gguf")
        lines += [f"{k} = {v}" for k, v in preset_keys(e.args)]
    return "\n".join(lines) + "\n"


def set_file_name(text: str) -> str:
    """The store's name for a preset: its content's hash, so a new set or new args is a new
    file (and a restart), and the same set is the same file (and no change)."""
    return f"set-{hashlib.sha256(text.encode()).hexdigest()[:16]}.ini"


_MODEL_LINE = re.compile(r"^(?:model|mmproj)\s*=\s*\S*/([0-9a-f]{64})\.gguf\s*$")


def files_of(preset: str) -> set[str]:
    """The store's files a preset points at (`<sha256>.gguf`), for prune."""
    return {f"{m.group(1)}.gguf" for line in preset.splitlines()
            if (m := _MODEL_LINE.match(line.strip()))}


def set_prune(stored: list[str], keep_sets: list[str], keep_files: set[str],
              linked: set[str]) -> list[str]:
    """Stored names a prune deletes: model files no kept set (nor link) points at, and
    preset files other than the kept ones."""
    from llama_docker.device.store import MODEL_FILE

    out = []
    for name in stored:
        if MODEL_FILE.match(name) and name not in keep_files and name not in linked:
            out.append(name)
        elif SET_FILE.match(name) and name not in keep_sets:
            out.append(name)
    return out


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
