"""The server's API key on the controller: given, generated once, or none."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEVICE_DIR = "/etc/llama-docker"
KEY_FILE = f"{DEVICE_DIR}/api-key"           # read by llama-server (--api-key-file)
HEADER_FILE = f"{DEVICE_DIR}/api-key.header"  # read by curl on the device (-H @file)


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
