"""The generated API key lives in the user's config folder, not the cache: made there, or
moved there once from where an earlier version kept it (`<cache_dir>/api-key`)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from llama_docker.knobs import apikey

OLD_KEY = "an-old-key-kept-in-the-cache-0123456789"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache where an earlier version generated the key (0600)."""
    folder = tmp_path / "cache"
    folder.mkdir()
    old = folder / "api-key"
    old.write_text(OLD_KEY + "\n")
    old.chmod(0o600)
    return folder


def test_the_config_folder_is_xdg_config_home_else_dot_config(tmp_path: Path) -> None:
    assert apikey.config_home({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "llama-docker"
    assert apikey.config_home({}) == Path.home() / ".config" / "llama-docker"
    assert apikey.config_home({"XDG_CONFIG_HOME": "rel/dir"}) == \
        Path.home() / ".config" / "llama-docker"  # relative: ignored, as XDG says


def test_the_tests_never_touch_the_users_own_config(own_config_home: Path,
                                                   tmp_path: Path) -> None:
    assert apikey.key_path() == own_config_home / "api-key"
    assert own_config_home.is_relative_to(tmp_path)


def test_a_fresh_key_is_made_in_the_config_folder(tmp_path: Path,
                                                  own_config_home: Path) -> None:
    said: list[str] = []
    key = apikey.resolve("generate", tmp_path / "cache", say=said.append)
    path = own_config_home / "api-key"
    assert key and len(key) >= 32 and path.read_text() == key + "\n"
    assert mode(path) == 0o600 and mode(own_config_home) == 0o700
    assert not (tmp_path / "cache").exists()  # nothing written in the cache
    assert said == []  # nothing moved, nothing to say
    assert apikey.resolve("generate", tmp_path / "cache", say=said.append) == key


def test_a_key_in_the_cache_moves_once_keeping_the_key_and_its_mode(
        cache: Path, own_config_home: Path) -> None:
    said: list[str] = []
    assert apikey.resolve("generate", cache, say=said.append) == OLD_KEY
    path = own_config_home / "api-key"
    assert path.read_text() == OLD_KEY + "\n" and mode(path) == 0o600
    assert not (cache / "api-key").exists()
    assert said == [f"llama-docker: the API key moved from {cache / 'api-key'} to {path}, "
                    "out of the cache: clearing the cache no longer changes it"]
    assert apikey.resolve("generate", cache, say=said.append) == OLD_KEY
    assert len(said) == 1  # said once: the second run has nothing to move


def test_clearing_the_cache_after_the_move_keeps_the_key(cache: Path) -> None:
    key = apikey.resolve("generate", cache, say=lambda line: None)
    shutil.rmtree(cache)
    assert apikey.resolve("generate", cache, say=lambda line: None) == key


def test_nothing_in_the_cache_is_read_after_the_move(cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    key = apikey.resolve("generate", cache, say=lambda line: None)
    (cache / "api-key").write_text("a key someone put back in the cache\n")
    read: list[Path] = []
    real = Path.read_text

    def watched(self: Path, *args: object, **kwargs: object) -> str:
        read.append(self)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", watched)
    said: list[str] = []
    assert apikey.resolve("generate", cache, say=said.append) == key
    assert said == [] and all(not p.is_relative_to(cache) for p in read), read


def test_a_move_across_filesystems_copies_the_key_0600(cache: Path, own_config_home: Path,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(apikey.os, "link", no_link)
    assert apikey.resolve("generate", cache, say=lambda line: None) == OLD_KEY
    path = own_config_home / "api-key"
    assert mode(path) == 0o600 and path.read_text() == OLD_KEY + "\n"
    assert not (cache / "api-key").exists()


def test_a_key_of_the_users_own_or_none(cache: Path, own_config_home: Path) -> None:
    assert apikey.resolve("", cache) is None
    assert apikey.resolve("my-own-key-0123456789", cache) == "my-own-key-0123456789"
    assert (cache / "api-key").exists() and not own_config_home.exists()  # nothing moved
