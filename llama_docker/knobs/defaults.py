"""Every knob's default: the values of group_data/all.py, the one documented knob file.

The packaged deploys give them to pyinfra as `data_defaults` (looked up after override, host
and group data), so a deploy that imports this package needs no group_data of its own.
"""

from __future__ import annotations

import runpy
from typing import Any

from llama_docker.knobs.resources import folder


def load() -> dict[str, Any]:
    """The knob file's names and values (its imports and private names left out)."""
    found = runpy.run_path(str(folder("group_data") / "all.py"))
    return {k: v for k, v in found.items() if not k.startswith("_")}


DEFAULTS: dict[str, Any] = load()
