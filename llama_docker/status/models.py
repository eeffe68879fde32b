"""The status of a device serving several models (router mode): what `/models` says.

Pure logic beside llama_docker/status/probe.py and parse.py: the shell line that reads the
router's model list on the device, and that answer read into one entry per model (its name,
the sha256 of the file it serves, loaded or not, failed to load or not).
"""

from __future__ import annotations

import json
import re
from typing import Any

_SHA_PATH = re.compile(r"/([0-9a-f]{64})\.gguf$")


def models_line(url: str, header: str, as_root: str, max_time: int) -> str:
    """Shell printing `models=<the router's /models JSON on one line>` (with the API key
    header when the device has one; `$s` says whether sudo works, as in probe.script)."""
    curl = f"curl -s --max-time {max_time}"
    return (f'if [ $s = yes ] && {as_root}test -f {header}; then '
            f"r=$({as_root}{curl} -H @{header} {url}/models 2>/dev/null); "
            f"else r=$({curl} {url}/models 2>/dev/null); fi; "
            "printf 'models=%s\\n' \"$r\" | tr -d '\\r' | tr '\\n' ' '; echo")


def router_models(text: str | None) -> list[dict[str, Any]] | None:
    """Each model the router lists: name, sha256, state (loaded, loading, unloaded) and
    whether its last load failed; None when the answer is not the router's list."""
    try:
        data = json.loads(text or "")["data"]
    except (ValueError, KeyError, TypeError):
        return None
    out = []
    for m in data if isinstance(data, list) else []:
        status = m.get("status") or {}
        args = status.get("args") or []
        path = next((b for a, b in zip(args, args[1:], strict=False) if a == "--model"), "")
        sha = _SHA_PATH.search(path or "")
        out.append({"name": m.get("id"), "sha256": sha.group(1) if sha else None,
                    "state": status.get("value"), "failed": bool(status.get("failed"))})
    return out


def summary(models: list[dict[str, Any]] | None, configured: int) -> str:
    """The MODEL cell: `3 models, 1 loaded` (`, 1 failed` when one failed to load)."""
    if models is None:
        return f"{configured} models"
    loaded = sum(m["state"] == "loaded" for m in models)
    failed = sum(m["failed"] for m in models)
    return (f"{len(models)} models, {loaded} loaded"
            + (f", {failed} failed" if failed else ""))
