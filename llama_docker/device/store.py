"""The device's model store: which files a prune may delete."""

from __future__ import annotations

import re
import shlex

MODEL_FILE = re.compile(r"^[0-9a-f]{64}\.gguf$")
LINKS = ("current.gguf", "previous.gguf", "current-mmproj.gguf", "previous-mmproj.gguf",
         "current-set.ini", "previous-set.ini")  # the last two: a set (device/router_preset.py)


def after_switch(newest_first: list[str], links: dict[str, str], serve: dict[str, str]
                 ) -> tuple[list[str], dict[str, str]]:
    """The store as a run leaves it: each served file the newest, and each `current*` link
    moved to it, its old target kept by the matching `previous*` link.

    + serve: link name -> file it will point at, e.g. {"current.gguf": "<sha>.gguf"}
    """
    files = list(newest_first)
    after = dict(links)
    for link, name in serve.items():
        files = [name] + [n for n in files if n != name]
        old = after.get(link)
        if old != name:
            if old:
                after[link.replace("current", "previous", 1)] = old
            after[link] = name
    return files, after


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


def link_commands(root: str, link: str, target: str) -> str:
    """Make `root/link` point at `target` atomically: a new link renamed over the old one.

    Plain `mv -f` (GNU and BSD alike; macOS has no `-T`) renames over a link to a file.
    """
    tmp = shlex.quote(f"{root}/.{link}.tmp")
    return f"ln -sfn {shlex.quote(target)} {tmp} && mv -f {tmp} {shlex.quote(root + '/' + link)}"
