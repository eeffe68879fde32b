"""The preset file llama-server's router mode reads (`--models-preset`), rendered from the
verified files in the store, and the store's names for it.

Router mode starts llama-server without `-m`; each model runs in a child process. The
preset INI names each model (the name clients send as `"model"`) and points at its file;
a `[*]` section holds what every model shares (see llama_docker/knobs/model_set.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from llama_docker.device.store import MODEL_FILE
from llama_docker.knobs.model_set import preset_keys

# Links in the store: the preset file served now, and the one before it (for rollback).
CURRENT_SET = "current-set.ini"
PREVIOUS_SET = "previous-set.ini"
SET_FILE = re.compile(r"^set-[0-9a-f]{16}\.ini$")


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
    out = []
    for name in stored:
        if MODEL_FILE.match(name) and name not in keep_files and name not in linked:
            out.append(name)
        elif SET_FILE.match(name) and name not in keep_sets:
            out.append(name)
    return out
