"""The two ways a model reaches a device: the OpenSSH client, and paramiko when there is no
`ssh` on the controller (or the inventory uses a password). Both resume from the device's
`.part` and verify the sha256 on the device before the file enters the store: a fresh push
as its bytes arrive, a resumed one by hashing the whole `.part` after the last byte."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from llama_docker.device.store import Store
from llama_docker.knobs.errors import VerifyError
from llama_docker.transfer.push import SshTarget, push
from tests.conftest import fresh_device
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-push"
ROOT = "/var/tmp/push-paths"


HASH_LOG = "/var/tmp/push-paths-hashed.log"
HASH_TOOLS = ("openssl", "sha256sum")

device = fresh_device(HOST, index=36)


def _logging(tool: str) -> str:
    """A wrapper ahead of the real tool on PATH: logs the size of each file it is given, or
    `stdin` when it reads its input (openssl: only `dgst` hashes anything)."""
    only = 'if [ "$1" = dgst ]; then ' if tool == "openssl" else "if true; then "
    return (f"#!/bin/sh\n{only}n=0; for f in \"$@\"; do [ -f \"$f\" ] && n=1 && "
            f'stat -c %s "$f" >> {HASH_LOG}; done; [ $n = 1 ] || echo stdin >> {HASH_LOG}; '
            f'fi\nexec /usr/bin/{tool} "$@"\n')


@pytest.fixture()
def store(device: lab.Device) -> Store:
    device.exec("sh", "-c", f"rm -rf {ROOT} && mkdir -p {ROOT} && chown {device.user} {ROOT}")
    for tool in HASH_TOOLS:
        device.write(f"/usr/local/bin/{tool}", _logging(tool).encode())
    device.exec("sh", "-c", "chmod 755 " + " ".join(f"/usr/local/bin/{t}" for t in HASH_TOOLS)
                + f"; : > {HASH_LOG}; chmod 666 {HASH_LOG}")
    return Store(ROOT)


def hashed(device: lab.Device) -> list[str]:
    """What the device's hash tools read since the store was made: file sizes, `stdin`."""
    return device.exec("cat", HASH_LOG).split()


def target_of(device: lab.Device) -> SshTarget:
    data = device.host_data()
    return SshTarget(hostname="127.0.0.1", port=device.ssh_port, user=device.user,
                     key=data["ssh_key"], known_hosts=data["ssh_known_hosts_file"])


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("push") / "model.gguf"
    path.write_bytes(os.urandom(24 << 20))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def stored_sha(device: lab.Device, store: Store, sha: str) -> str:
    device.exec("test", "-f", store.marker(sha))
    return device.exec("sha256sum", store.final(sha)).split()[0]


def test_paramiko_fallback_pushes_on_the_connection_as_it_is(
        device: lab.Device, store: Store, payload: tuple[Path, str]) -> None:
    path, sha = payload
    client = device.paramiko()
    try:
        sent, offset = push(client, path, sha, store, HOST, target=None, aes=True)
        cipher = client.get_transport().local_cipher
    finally:
        client.close()
    assert (sent, offset) == (path.stat().st_size, 0)
    assert cipher == "aes128-ctr"  # paramiko's default, as pyinfra connected: no re-key
    assert hashed(device) == ["stdin"]  # verified as it arrived, never read back
    assert stored_sha(device, store, sha) == sha


@pytest.mark.parametrize("via", ["openssh", "paramiko"])
def test_fresh_push_of_bytes_that_are_not_the_sha_is_refused(
        device: lab.Device, store: Store, payload: tuple[Path, str], via: str) -> None:
    """Fault: the controller's file is not the one its sha256 names (changed after it was
    hashed) | Seen: `<file> on the device hashes X, expected Y: the partial file was deleted,
    re-run to send it again` | Left: nothing in the store, no .part"""
    path, sha = payload
    wrong = hashlib.sha256(b"another file").hexdigest()
    client = device.paramiko()
    try:
        with pytest.raises(VerifyError) as err:
            push(client, path, wrong, store, HOST,
                 target=target_of(device) if via == "openssh" else None, aes=True)
    finally:
        client.close()
    assert f"{path.name} on the device hashes {sha}, expected {wrong}" in str(err.value)
    assert hashed(device) == ["stdin"]
    assert device.exec("ls", "-A", ROOT).split() == []


@pytest.mark.parametrize("via", ["openssh", "paramiko"])
def test_push_resumes_from_the_device_part(device: lab.Device, store: Store,
                                           payload: tuple[Path, str], via: str) -> None:
    path, sha = payload
    half = path.stat().st_size // 2 + 12345
    device.write(store.part(sha), path.read_bytes()[:half])
    device.exec("chown", device.user, store.part(sha))
    client = device.paramiko()
    try:
        sent, offset = push(client, path, sha, store, HOST,
                            target=target_of(device) if via == "openssh" else None, aes=True)
    finally:
        client.close()
    assert (sent, offset) == (path.stat().st_size - half, half)
    # its first half came in an earlier run: the whole .part is hashed after the last byte
    assert hashed(device) == [str(path.stat().st_size)]
    assert stored_sha(device, store, sha) == sha


def test_corrupt_part_is_deleted_not_stored(device: lab.Device, store: Store,
                                            payload: tuple[Path, str]) -> None:
    """Fault: the device's .part starts with wrong bytes (a disk error, another writer) |
    Seen: `<file> on the device hashes X, expected Y: the partial file was deleted, re-run to
    send it again` | Left: no .part, nothing in the store; the next run sends it whole"""
    path, sha = payload
    device.write(store.part(sha), b"\0" * 4096)
    device.exec("chown", device.user, store.part(sha))
    client = device.paramiko()
    try:
        with pytest.raises(VerifyError) as err:
            push(client, path, sha, store, HOST, target=None, aes=True)
    finally:
        client.close()
    assert f"{path.name} on the device hashes " in str(err.value)
    assert device.exec("ls", "-A", ROOT).split() == []
