"""The status table's BACKEND column: which backend serves, from the server's own log.

llama-server names the Vulkan device it serves from at -lv 4 (which the GPU image's
entrypoint sets); the entrypoint says when it fell back to the CPU; a CPU device logs
neither. A Mac's native runtime is Metal; a container on a Mac never has a GPU.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from llama_docker.device.gpu import served
from llama_docker.device.target import Target
from llama_docker.device.units import CONTAINER

PATTERN = "llama-docker: gpu|using device "


def probe(t: Target, uid: int) -> str:
    """Prints `gpu_log=<first matching line>` when the container's log could be read (the
    line is empty for a CPU server); prints nothing when it could not (no sudo, no server).
    Needs `$s` (sudo works) from the status script."""
    if t.launchd:
        return "true"
    as_root = "sudo -n " if t.sudo else ""
    env = f"XDG_RUNTIME_DIR=/run/user/{uid} " if t.user_units else ""
    rt = f"{as_root}{env}{t.runtime}"
    return (f"if [ $s = yes ] && {rt} container inspect {CONTAINER} >/dev/null 2>&1; then "
            f"printf 'gpu_log=%s\\n' \"$({rt} logs {CONTAINER} 2>&1 "
            f"| grep -m 1 -E {shlex.quote(PATTERN)} | tr -d '\\r')\"; fi")


def backend(t: Target, facts: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(backend, device name): cpu, vulkan or metal; None when it cannot be told."""
    if t.native:
        return "metal", None
    if t.is_macos:
        return "cpu", None
    if "gpu_log" not in facts:
        return None, None
    seen = served([facts["gpu_log"]])
    return seen.backend, seen.device or None
