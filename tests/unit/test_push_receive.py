"""A fresh push's device side (receive_command, llama_docker/device/store.py), run by this
machine's own sh: the bytes are written and hashed in one pass, and only a file that hashes
to the expected sha is stored."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llama_docker.device.store import MISMATCH, MOVED, SHORT, Store, receive_command, under_lock

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
# openssl where it is, sha256sum where it is not
TOOLS = {"openssl": lambda cmd: cmd,
         "sha256sum": lambda cmd: cmd.replace("command -v openssl", "command -v no-such-openssl")}


def receive(store: Store, sha: str, data: bytes, size: int | None = None, tool: str = "openssl",
            limit: str = "") -> subprocess.CompletedProcess:
    cmd = TOOLS[tool](under_lock(store.lock(sha), receive_command(store, sha, size or len(data))))
    return subprocess.run(f"{limit}{cmd}", shell=True, input=data, capture_output=True,
                          timeout=30)


@pytest.mark.parametrize("tool", TOOLS)
def test_fresh_bytes_are_stored_once_they_hash_right(tmp_path: Path, tool: str) -> None:
    store = Store(str(tmp_path))
    done = receive(store, SHA, DATA, tool=tool)
    assert done.returncode == 0, done.stderr
    assert Path(store.final(SHA)).read_bytes() == DATA
    assert Path(store.marker(SHA)).read_text().strip() == SHA
    assert not os.access(store.final(SHA), os.W_OK) or os.geteuid() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{SHA}.gguf", f"{SHA}.ok"]


@pytest.mark.parametrize("tool", TOOLS)
def test_bytes_that_hash_to_another_sha_are_deleted(tmp_path: Path, tool: str) -> None:
    """The controller's file is not the one its sha names (changed after it was hashed)."""
    store, wrong = Store(str(tmp_path)), "0" * 64
    done = receive(store, wrong, DATA, tool=tool)
    assert done.returncode == MISMATCH
    assert done.stderr.decode().strip().splitlines()[-1] == f"hashes {SHA}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(shutil.which("shasum") is None, reason="needs perl's shasum")
def test_a_store_with_its_own_hash_tool_hashes_stdin_with_it(tmp_path: Path) -> None:
    """macOS devices hash with `shasum -a 256` (no sha256sum there)."""
    store = Store(str(tmp_path), "shasum -a 256")
    assert receive(store, SHA, DATA).returncode == 0
    assert Path(store.final(SHA)).read_bytes() == DATA
    assert receive(store, "1" * 64, DATA).returncode == MISMATCH


def test_a_stream_cut_short_keeps_its_prefix_unverified(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    done = receive(store, SHA, DATA[:1000], size=len(DATA))
    assert done.returncode == SHORT
    assert Path(store.part(SHA)).read_bytes() == DATA[:1000]
    assert not Path(store.final(SHA)).exists() and not Path(store.marker(SHA)).exists()


def test_a_failed_write_fails_and_stores_nothing(tmp_path: Path) -> None:
    """The .part cannot grow past 64 KiB (RLIMIT_FSIZE: tee gets SIGXFSZ, as a full disk
    makes it fail): the hash has seen fewer bytes than were sent, and nothing is stored."""
    store = Store(str(tmp_path))
    done = receive(store, SHA, DATA, limit="ulimit -f 128; ")
    assert done.returncode not in (0, SHORT, MISMATCH)
    assert not Path(store.final(SHA)).exists() and not Path(store.marker(SHA)).exists()
    part = Path(store.part(SHA)).read_bytes()
    assert len(part) < len(DATA) and DATA.startswith(part)


def test_a_part_already_there_is_not_overwritten(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    Path(store.part(SHA)).write_bytes(DATA[:10])
    assert receive(store, SHA, DATA).returncode == MOVED
    assert Path(store.part(SHA)).read_bytes() == DATA[:10]


def test_the_bytes_are_on_disk_before_the_name_and_the_marker_before_stored(
        tmp_path: Path) -> None:
    """`sync` (logged by a stand-in on PATH) is asked for the .part while the final name
    does not exist yet, then for the marker and the store's folder once both do."""
    bin_dir, root = tmp_path / "bin", tmp_path / "store"
    bin_dir.mkdir()
    root.mkdir()
    log = tmp_path / "sync.log"
    fake = bin_dir / "sync"
    fake.write_text(f'#!/bin/sh\nfor p; do [ -e "$p" ] && echo "$p" >> {log}; done\n'
                    f'ls {root} | tr "\\n" " " >> {log}; echo >> {log}\n')
    fake.chmod(0o755)
    store = Store(str(root))
    cmd = under_lock(store.lock(SHA), receive_command(store, SHA, len(DATA)))
    done = subprocess.run(cmd, shell=True, input=DATA, capture_output=True, timeout=30,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert lines == [store.part(SHA), f"{SHA}.gguf.part ",
                     store.marker(SHA), str(root), f"{SHA}.gguf {SHA}.ok "], lines
