"""Several models on one device: the `models` knob and the rules its entries' args follow.

The preset file built from it is the device's (llama_docker/device/router_preset.py).

Router mode starts llama-server without `-m`; each model runs in a child process. The
preset INI names each model (the name clients send as `"model"`) and points at its file;
a `[*]` section holds what every model shares. The command line beats a model's section,
which beats `[*]`: so context size and threads go in `[*]`, never on the command line,
or no model could have its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from llama_docker.knobs.errors import ConfigError
from llama_docker.knobs.spec import ModelSpec, resolve_model

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
