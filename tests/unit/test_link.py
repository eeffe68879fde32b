"""The device-to-device link's text: the forced command (run by this machine's own sh, as
sshd would run it), the authorized_keys line, its idempotent install, the pinned host."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from llama_docker.device import link
from llama_docker.device.store import Store
from llama_docker.knobs.errors import LlamaDockerError

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0cmVsYXktdGVzdC1rZXktMDAwMDAwMDAwMDAwMDA="
DATA = b"a model's bytes\n" * 1000
SHA = hashlib.sha256(DATA).hexdigest()


def _receiver(tmp_path: Path) -> tuple[Path, Path]:
    folder, models = tmp_path / "link", tmp_path / "models"
    folder.mkdir()
    models.mkdir()
    script = folder / "receive"
    script.write_text(link.receive_script(str(folder), {"gguf": Store(str(models))}))
    script.chmod(0o700)
    return folder, models


def _ssh(folder: Path, request: str, data: bytes = b"") -> subprocess.CompletedProcess:
    """What sshd does with a forced command: the client's words in SSH_ORIGINAL_COMMAND."""
    return subprocess.run([str(folder / "receive")], input=data, capture_output=True,
                          env={**os.environ, "SSH_ORIGINAL_COMMAND": request}, timeout=60)


@pytest.mark.parametrize("request_", [
    "", "sh", "cat /etc/passwd", f"receive {SHA}", f"receive {SHA} gguf extra",
    f"receive {SHA.upper()} gguf", f"receive {SHA[:-1]} gguf", f"receive {SHA}0 gguf",
    f"receive {SHA} exe", f"receive {SHA} ../gguf", f"receive {SHA};reboot gguf",
    f"receive {SHA} gguf; rm -rf ~", "receive $(id) gguf", f"receive {SHA} tar",
    f"receive {SHA} gguf\nid", f"send {SHA} gguf",
])
def test_the_forced_command_refuses_anything_but_receive_sha_ext(
        tmp_path: Path, request_: str) -> None:
    folder, models = _receiver(tmp_path)
    got = _ssh(folder, request_, DATA)
    assert got.returncode == link.REFUSED, (request_, got.stderr)
    assert got.stderr.decode().startswith("refused: ")
    assert not any(models.iterdir())


def test_an_unannounced_file_is_refused(tmp_path: Path) -> None:
    folder, models = _receiver(tmp_path)
    got = _ssh(folder, f"receive {SHA} gguf", DATA)
    assert got.returncode == link.UNEXPECTED
    assert b"nothing announced" in got.stderr
    assert not any(models.iterdir())


def _announce(folder: Path, models: Path, offset: int = 0) -> None:
    expect = Path(link.expect_path(str(folder), SHA, "gguf"))
    expect.parent.mkdir(exist_ok=True)
    expect.write_text(link.expect_text(Store(str(models)), SHA, offset, len(DATA)))


def test_an_announced_file_is_stored_only_when_it_verifies(tmp_path: Path) -> None:
    folder, models = _receiver(tmp_path)
    _announce(folder, models)
    bad = bytearray(DATA)
    bad[100] ^= 1
    got = _ssh(folder, f"receive {SHA} gguf", bytes(bad))
    assert got.returncode == 78, got.stderr  # MISMATCH: a flipped byte is refused
    assert sorted(p.name for p in models.iterdir()) == []  # nothing kept, nothing linked
    got = _ssh(folder, f"receive {SHA} gguf", DATA)
    assert got.returncode == 0, got.stderr
    assert (models / f"{SHA}.gguf").read_bytes() == DATA
    assert (models / f"{SHA}.ok").read_text().strip() == SHA


def test_a_cut_copy_resumes_from_the_part(tmp_path: Path) -> None:
    folder, models = _receiver(tmp_path)
    _announce(folder, models)
    got = _ssh(folder, f"receive {SHA} gguf", DATA[:5000])
    assert got.returncode == 79  # SHORT: the .part is kept
    assert (models / f"{SHA}.gguf.part").stat().st_size == 5000
    _announce(folder, models, offset=5000)
    got = _ssh(folder, f"receive {SHA} gguf", DATA[5000:])
    assert got.returncode == 0, got.stderr  # appended; the controller then verifies
    assert (models / f"{SHA}.gguf.part").read_bytes() == DATA


def test_authorized_line_is_restricted_to_the_forced_command() -> None:
    line = link.authorized_line(link.forced_options("'/home/pi/x/receive'", "192.168.1.20"),
                                PUB, "raspi.local")
    assert line == ("restrict,command=\"'/home/pi/x/receive'\",from=\"192.168.1.20\" "
                    f"{PUB} llama-docker-link:raspi.local")
    # a name is no from= (sshd would match it only with UseDNS)
    assert "from=" not in link.forced_options("/r", "raspi.local")
    # the split model's link: one forward, and a command that only holds the session
    assert link.forward_options(50052) == ('restrict,port-forwarding,'
                                           'permitopen="127.0.0.1:50052",'
                                           'permitlisten="127.0.0.1:1",'
                                           f'command="{link.HOLD_COMMAND}"')
    with pytest.raises(LlamaDockerError, match="quote"):
        link.forced_options('/a"b')
    with pytest.raises(LlamaDockerError, match="cannot name a link"):
        link.authorized_line("restrict", PUB, "a b")


def test_public_key_refuses_what_is_not_one() -> None:
    assert link.public_key(PUB + " llama-docker-link:a\n", "a") == PUB
    with pytest.raises(LlamaDockerError, match="pi1: the link key's public half"):
        link.public_key("Permission denied", "pi1")


def test_authorize_replaces_only_its_own_line(tmp_path: Path) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    keys = ssh / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAAmine me@laptop\n")
    env = {**os.environ, "HOME": str(tmp_path)}

    def run(cmd: str) -> str:
        return subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True,
                              check=True).stdout.strip()

    old = link.authorized_line("restrict", PUB, "pi1")
    assert run(link.authorize_command(old, "pi1")) == "added"
    assert run(link.authorize_command(old, "pi1")) == "same"
    new = link.authorized_line('restrict,command="/r"', PUB, "pi1")
    other = link.authorized_line("restrict", PUB, "pi10")
    assert run(link.authorize_command(new, "pi1")) == "added"
    assert run(link.authorize_command(other, "pi10")) == "added"
    assert keys.read_text().splitlines() == ["ssh-ed25519 AAAAmine me@laptop", new, other]
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    run(link.unauthorize_command("pi1"))
    assert keys.read_text().splitlines() == ["ssh-ed25519 AAAAmine me@laptop", other]


def test_write_file_says_same_when_unchanged(tmp_path: Path) -> None:
    path = str(tmp_path / "hosts" / "a")
    text = link.known_hosts_line("198.18.0.110", 22, "ssh-ed25519", "AAAA") + "\n"
    assert text == "198.18.0.110 ssh-ed25519 AAAA\n"
    cmd = link.write_file_command(path, text)
    out = [subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                          check=True).stdout.strip() for _ in range(2)]
    assert out == ["written", "same"]
    assert Path(path).read_text() == text
    assert link.known_hosts_line("pi.lan", 2222, "ssh-ed25519", "AAAA") == \
        "[pi.lan]:2222 ssh-ed25519 AAAA"


def test_send_command_pins_the_host_and_sends_from_the_offset() -> None:
    cmd = link.send_command("/m/x.gguf", 5000, SHA, "gguf", "/l/id_ed25519", "/l/hosts/b",
                            "pi", "198.18.0.111", 22, aes=False)
    assert "tail -c +5001 /m/x.gguf | ssh -i /l/id_ed25519 -c chacha20-poly1305@" in cmd
    for opt in ("StrictHostKeyChecking=yes", "UserKnownHostsFile=/l/hosts/b",
                "GlobalKnownHostsFile=/dev/null", "BatchMode=yes", "IdentitiesOnly=yes"):
        assert f"-o {opt}" in cmd
    assert cmd.endswith(f"-l pi 198.18.0.111 'receive {SHA} gguf'")
    both_aes = link.send_command("/m/x.gguf", 0, SHA, "gguf", "/l/id_ed25519", "/l/hosts/b",
                                 "pi", "198.18.0.111", 22, aes=True)
    assert "-c aes128-gcm@openssh.com,chacha20-poly1305@openssh.com" in both_aes


def test_the_forwards_command_refuses_any_request_but_its_hold() -> None:
    for asked in ("id", "", "hold; id", "sh"):
        done = subprocess.run(["sh", "-c", link.HOLD_COMMAND], timeout=10,
                              env={**os.environ, "SSH_ORIGINAL_COMMAND": asked})
        assert done.returncode == 1, asked


def test_the_hold_lasts_as_long_as_its_connection() -> None:
    """sshd runs the command from the connection's own process: while that lives (here a
    parent shell that lives 2 s) the hold runs; once it is gone, the hold ends too, leaving
    nothing behind on the worker."""
    parent = subprocess.Popen(["sh", "-c", 'sh -c "$1" & echo $!; sleep 2', "sh",
                               link.HOLD_COMMAND], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "SSH_ORIGINAL_COMMAND": link.HOLD})
    assert parent.stdout is not None
    stat = Path(f"/proc/{int(parent.stdout.readline())}/stat")

    def running() -> bool:
        return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"

    time.sleep(1)
    assert running() and parent.poll() is None
    parent.wait(timeout=10)
    deadline = time.monotonic() + 15
    while running() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not running(), "the hold outlived its connection's process by 15 s"
