"""The two ways a model reaches a device: the OpenSSH client, and paramiko when there is no
`ssh` on the controller (or the inventory uses a password). Both resume from the device's
`.part` and verify the sha256 on the device before the file enters the store."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from llama_docker.errors import VerifyError
from llama_docker.push import SshTarget, Store, push
from tests.conftest import fresh_device
from tests.lab import lab

pytestmark = pytest.mark.lab
HOST = "e2e-push"
ROOT = "/var/tmp/push-paths"


device = fresh_device(HOST, index=36)


@pytest.fixture()
def store(device: lab.Device) -> Store:
    device.exec("sh", "-c", f"rm -rf {ROOT} && mkdir -p {ROOT} && chown {device.user} {ROOT}")
    return Store(ROOT)


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
    assert stored_sha(device, store, sha) == sha


@pytest.mark.parametrize("via", ["openssh", "paramiko"])
def test_push_resumes_from_the_device_part(device: lab.Device, store: Store,
                                           payload: tuple[Path, str], via: str) -> None:
    path, sha = payload
    half = path.stat().st_size // 2 + 12345
    device.write(store.part(sha), path.read_bytes()[:half])
    device.exec("chown", device.user, store.part(sha))
    data = device.host_data()
    target = SshTarget(hostname="127.0.0.1", port=device.ssh_port, user=device.user,
                       key=data["ssh_key"], known_hosts=data["ssh_known_hosts_file"])
    client = device.paramiko()
    try:
        sent, offset = push(client, path, sha, store, HOST,
                            target=target if via == "openssh" else None, aes=True)
    finally:
        client.close()
    assert (sent, offset) == (path.stat().st_size - half, half)
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
