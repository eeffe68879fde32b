"""The device-side lock, run by this machine's own sh: held by the process writing the
file, so it ends with that process and never with a mere claim of ownership."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llama_docker.device.store import BUSY, MOVED, append_command, under_lock

VIA = {"flock": lambda cmd: cmd,
       "perl": lambda cmd: cmd.replace("command -v flock", "command -v no-such-flock")}


def sh(cmd: str, data: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, input=data, capture_output=True, timeout=30)


@pytest.mark.parametrize("via", VIA)
def test_lock_lives_exactly_as_long_as_its_writer(tmp_path: Path, via: str) -> None:
    lock, part = str(tmp_path / ".m.lock"), str(tmp_path / "m.part")
    writer = subprocess.Popen(VIA[via](under_lock(lock, append_command(part, 0))), shell=True,
                              stdin=subprocess.PIPE)
    try:
        writer.stdin.write(b"abc")
        writer.stdin.flush()
        for _ in range(100):  # bounded: the writer takes the lock within a second
            if Path(lock).exists() and Path(lock).read_text().strip():
                break
            subprocess.run(["sleep", "0.05"])
        other = sh(VIA[via](under_lock(lock, "echo inside")))
        assert other.returncode == BUSY and b"busy " in other.stderr
        assert other.stdout == b""
    finally:
        writer.stdin.close()  # EOF, as when the controller's ssh dies
        assert writer.wait(timeout=10) == 0
    assert Path(part).read_bytes() == b"abc"
    assert not Path(lock).exists()
    assert sh(VIA[via](under_lock(lock, "echo inside"))).stdout == b"inside\n"


def test_append_refuses_a_part_that_moved(tmp_path: Path) -> None:
    lock, part = str(tmp_path / ".m.lock"), tmp_path / "m.part"
    part.write_bytes(b"12345")
    assert sh(under_lock(lock, append_command(str(part), 3)), b"xx").returncode == MOVED
    assert sh(under_lock(lock, append_command(str(part), 5)), b"67").returncode == 0
    assert part.read_bytes() == b"1234567"
