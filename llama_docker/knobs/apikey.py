"""The server's API key on the controller: given, generated once, or none.

A generated key is the user's, not a cached file: it lives in the user's config folder,
`$XDG_CONFIG_HOME/llama-docker/api-key` (`~/.config/llama-docker/api-key` when that variable
is unset), mode 0600 in a 0700 folder, on Linux and macOS alike, so clearing the cache never
changes the key every client holds. A key an earlier version kept at `<cache_dir>/api-key` is
moved there once (the same key, still 0600), and the move is said in one line; from then on
nothing in the cache is read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

NAME = "api-key"


def paths(config_dir: str) -> tuple[str, str]:
    """The key file (read by llama-server) and the header file (read by curl -H @file)."""
    return f"{config_dir}/api-key", f"{config_dir}/api-key.header"


def config_home(env: Mapping[str, str] = os.environ) -> Path:
    """This controller's llama-docker config folder: `$XDG_CONFIG_HOME/llama-docker`, else
    `~/.config/llama-docker` (a relative XDG_CONFIG_HOME is ignored, as the XDG spec says)."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "llama-docker"


def key_path(config: Path | None = None) -> Path:
    """Where the generated key is kept."""
    return (config or config_home()) / NAME


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def resolve(value: str, cache_dir: Path, config: Path | None = None,
            say: Callable[[str], None] = _stderr) -> str | None:
    """The key to install, or None. 'generate' makes one key for the fleet, kept 0600 in
    the config folder (`config`: config_home()); `cache_dir` is only where an earlier
    version kept it, moved from once."""
    if value == "":
        return None
    if value != "generate":
        return value
    path = key_path(config)
    if path.exists():
        return path.read_text().strip()
    old = Path(cache_dir) / NAME
    if old.is_file():
        _move(old, path)
        say(f"llama-docker: the API key moved from {old} to {path}, out of the cache: "
            "clearing the cache no longer changes it")
        return path.read_text().strip()
    return _new(path)


def _folder(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write(path: Path, text: str) -> None:
    """A new 0600 file (never over an existing one), on the disk before it is used."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _new(path: Path) -> str:
    _folder(path)
    key = secrets.token_urlsafe(32)
    try:
        _write(path, key + "\n")
    except FileExistsError:  # another run made it just now: the fleet has one key
        return path.read_text().strip()
    return key


def _move(old: Path, path: Path) -> None:
    """The same file at its new place: a hard link (the same bytes and mode) where both are
    on one filesystem, else a 0600 copy; then the old name goes. Never over a key already
    at `path`."""
    _folder(path)
    try:
        os.link(old, path)
    except FileExistsError:
        return  # another run moved it first
    except OSError:  # another filesystem (EXDEV), or one without hard links
        try:
            _write(path, old.read_text())
        except FileExistsError:
            return
    os.chmod(path, 0o600)
    with contextlib.suppress(FileNotFoundError):
        old.unlink()
