"""docker's /etc/docker/daemon.json is the user's file: the mirror is merged into it.

Our two entries are added to their lists, every other key and entry of theirs stays, and a
file docker itself could not read (not JSON, not an object) is never touched: dockerd
refuses to start with it, and rewriting it would lose what the user meant.
"""

from __future__ import annotations

import json
from typing import Any

from llama_docker.knobs.errors import RefusedError

PATH = "/etc/docker/daemon.json"
BACKUP = PATH + ".llama-docker.bak"  # the file as it was before our first change


def _bare(entry: str) -> str:
    """A registry as docker compares it: no scheme, no trailing slash."""
    return entry.split("://", 1)[-1].rstrip("/")


def parse(text: str | None, path: str = PATH) -> dict[str, Any]:
    """The file's settings ({} when absent or empty, as dockerd reads it); refuses a file
    dockerd could not read, naming it, before anything changes."""
    if text is None or not text.strip():
        return {}
    try:
        conf = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RefusedError(
            f"{path} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}): "
            "docker cannot start with it; fix or remove it, then run again "
            "(the file was left as it is)") from None
    if not isinstance(conf, dict):
        raise RefusedError(f"{path} holds a JSON {type(conf).__name__}, not an object: "
                           "fix or remove it, then run again (the file was left as it is)")
    return conf


def with_mirror(text: str | None, mirror: str, path: str = PATH) -> str | None:
    """`text` (None: no file) with the registry mirror merged in, or None when the file
    already has it: an unchanged file is never rewritten, so docker is not restarted."""
    conf = parse(text, path)
    merged = dict(conf)
    for key, entry in (("registry-mirrors", f"http://{mirror}"),
                       ("insecure-registries", mirror)):
        entries = conf.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise RefusedError(f"{path}: {key!r} is not a list of strings: fix it, then run "
                               "again (the file was left as it is)")
        if _bare(entry) not in {_bare(e) for e in entries}:
            merged[key] = [*entries, entry]
    if text is not None and merged == conf:
        return None
    return json.dumps(merged, indent=2, ensure_ascii=False) + "\n"
