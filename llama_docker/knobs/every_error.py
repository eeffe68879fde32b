"""Every bad knob of one host, not only the first: the CLI says them all before connecting.

`config.load` stops at the first bad knob, which is enough to refuse a host; a user fixing an
inventory wants the whole list at once, one line each, with the "did you mean" kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llama_docker.knobs import config
from llama_docker.knobs.errors import ConfigError
from llama_docker.knobs.spec import resolve_model


def every_error(data: Mapping[str, Any], host: str = "") -> list[ConfigError]:
    """Each bad knob of `data` (defaults already merged under it), in knob order."""
    found: list[ConfigError] = []
    for name in config.data_keys(data):
        close = config.near_miss(name)
        if close:
            found.append(ConfigError(name, data.get(name),
                                     f"a knob of group_data/all.py (did you mean {close!r}?)"))
    models: tuple[Any, ...] = ()
    for knob, rule in config.RULES.items():
        if data.get(knob) is None:
            found.append(ConfigError(knob, None, "a value (is group_data/all.py in place?)"))
            continue
        try:
            value = rule(knob, data.get(knob))
        except ConfigError as exc:
            found.append(exc)
            continue
        if knob == "models":
            models = value
    try:
        resolve_model(data.get("model"), "model")
        config.exclusive(models, data.get("model"))
    except ConfigError as exc:
        found.append(exc)
    return [exc.on(host) for exc in found]
