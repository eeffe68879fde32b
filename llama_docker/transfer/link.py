"""Make a device-to-device link, over the controller's own SSH connections to both ends.

The commands and their text are llama_docker/device/link.py; here they are run: the key made
on the sender (its public half read back), authorized on the receiver with the options the
caller gives (the relay's forced command, or a split model's one forward), and the
receiver's host key, as the controller's verified connection saw it, pinned on the sender.
Each step prints `same` when nothing changes, so a made link costs three round trips.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

import paramiko
from gevent.lock import Semaphore

from llama_docker.device import link
from llama_docker.device.store import Store
from llama_docker.knobs.errors import LlamaDockerError
from llama_docker.transfer.push import run_remote


@dataclass(frozen=True)
class Peer:
    """One end of a link: a device as the controller reaches it and as other devices do."""

    name: str  # inventory name
    client: paramiko.SSHClient  # the controller's own verified connection to it
    user: str  # the deploy user there: whose key, whose authorized_keys, whose store
    address: str  # where other devices reach it (lan_address, else its SSH host name)
    port: int  # its sshd's port as other devices reach it
    folder: str  # its link state folder (device/link.py link_dir)
    stores: dict[str, Store] = field(default_factory=dict)  # ext -> its store
    aes: bool = True  # its CPU has AES instructions (the copy's cipher order)

    @property
    def ip(self) -> str | None:
        """Its address when that is an IP literal (what `from=` can name)."""
        try:
            return str(ipaddress.ip_address(self.address))
        except ValueError:
            return None


def _run(peer: Peer, command: str, what: str, timeout: float = 60) -> str:
    try:
        code, out, err = run_remote(peer.client, command, timeout)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise LlamaDockerError(f"{peer.name}: {what} failed: {exc}") from None
    if code != 0:
        last = (err.strip() or out.strip() or f"exit {code}").splitlines()[-1]
        raise LlamaDockerError(f"{peer.name}: {what} failed: {last}")
    return out


def sender_key(sender: Peer) -> str:
    """The sender's link key's public half (the key is made there once, kept there)."""
    out = _run(sender, link.keygen_command(sender.folder, f"{link.MARK}:{sender.name}"),
               "making the link key")
    return link.public_key(out, sender.name)


def host_key(receiver: Peer) -> tuple[str, str]:
    """(type, base64) of the receiver's host key, as the controller's connection verified it."""
    transport = receiver.client.get_transport()
    if transport is None:
        raise LlamaDockerError(f"{receiver.name}: no connection to read its host key from")
    key = transport.get_remote_server_key()
    return key.get_name(), key.get_base64()


def pinned_hosts(sender: Peer, receiver: Peer) -> str:
    """The sender's known_hosts file for this receiver."""
    return link.known_hosts_path(sender.folder, f"{receiver.address}_{receiver.port}")


def make(sender: Peer, receiver: Peer, options: str, extra: list[tuple[str, str, str]]
         ) -> None:
    """Authorize the sender's key on the receiver with `options` and pin the receiver's
    host key on the sender. `extra`: (path, text, mode) files to write on the receiver
    first (the relay's forced command)."""
    pub = sender_key(sender)
    for path, text, mode in extra:
        _run(receiver, link.write_file_command(path, text, mode), f"writing {path}")
    line = link.authorized_line(options, pub, sender.name)
    _run(receiver, link.authorize_command(line, sender.name),
         f"authorizing {sender.name}'s link key in ~/.ssh/authorized_keys")
    keytype, b64 = host_key(receiver)
    known = link.known_hosts_line(receiver.address, receiver.port, keytype, b64)
    _run(sender, link.write_file_command(pinned_hosts(sender, receiver), known + "\n"),
         f"pinning {receiver.name}'s host key")


# Links made in this run: (sender, receiver) -> made. One maker per pair at a time.
_made: set[tuple[str, str]] = set()
_locks: dict[tuple[str, str], Semaphore] = {}


def receive_link(sender: Peer, receiver: Peer) -> None:
    """The relay's link: the sender's key may run the receiver's forced command, nothing
    else (device/link.py receive_script), from the sender's IP where it has one."""
    pair = (sender.name, receiver.name)
    with _locks.setdefault(pair, Semaphore()):
        if pair in _made:
            return
        script = link.receive_path(receiver.folder)
        make(sender, receiver, link.forced_options(shlex.quote(script), sender.ip),
             [(script, link.receive_script(receiver.folder, receiver.stores), "700")])
        _made.add(pair)


def forward_link(sender: Peer, receiver: Peer, port: int) -> None:
    """A split model's link: the sender's key may open one local forward to the receiver's
    127.0.0.1:port and nothing else (device/link.py forward_options), from the sender's IP
    where it has one. The caller names the sender's Peer after the link (its authorized_keys
    mark) and gives it the folder of that link's own key."""
    make(sender, receiver, link.forward_options(port, sender.ip), [])
