"""The server's API key on the controller: given, generated once, or none."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def paths(config_dir: str) -> tuple[str, str]:
    """The key file (read by llama-server) and the header file (read by curl -H @file)."""
    return f"{config_dir}/api-key", f"{config_dir}/api-key.header"


def resolve(value: str, cache_dir: Path) -> str | None:
    """The key to install, or None. 'generate' makes one key for the fleet, kept 0600."""
    if value == "":
        return None
    if value != "generate":
        return value
    path = cache_dir / "api-key"
    if path.exists():
        return path.read_text().strip()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
