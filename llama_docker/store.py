"""The device's model store: which files a prune may delete."""

from __future__ import annotations

import re

MODEL_FILE = re.compile(r"^[0-9a-f]{64}\.gguf$")
LINKS = ("current.gguf", "previous.gguf", "current-mmproj.gguf", "previous-mmproj.gguf")


def to_prune(newest_first: list[str], linked: set[str], keep: int) -> list[str]:
    """Stored files to delete: never a linked one; beyond those, keep the `keep` newest."""
    stored = [n for n in newest_first if MODEL_FILE.match(n)]
    kept = [n for n in stored if n in linked]
    for name in stored:
        if len(kept) >= keep:
            break
        if name not in kept:
            kept.append(name)
    return [n for n in stored if n not in kept]
