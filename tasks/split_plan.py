"""What preflight decides for a model split over several devices (tasks/split.py), as the
Plan carries it: a head's links and server arguments, or the head a worker serves."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerLink:
    """One worker as its head's link reaches it."""

    name: str  # inventory name
    address: str  # where the head reaches its sshd (lan_address, else its SSH host name)
    ssh_port: int
    login: str  # the deploy user there: whose authorized_keys
    remote_port: int  # its RPC server's port on its own loopback (its rpc_port)
    local_port: int  # the link's port on the head's loopback
    host_key: tuple[str, str]  # (type, base64), as the controller's verified connection saw it


@dataclass(frozen=True)
class Rpc:
    """A host's part in a split: a head (workers and server args), a worker (its head's
    name), or neither (both empty)."""

    workers: tuple[WorkerLink, ...] = ()
    server_args: tuple[str, ...] = ()
    head_address: str = ""  # the head as its workers see it (their keys' `from=`)
    worker_of: str = ""

    @property
    def is_head(self) -> bool:
        return bool(self.workers)

    @property
    def is_worker(self) -> bool:
        return bool(self.worker_of)
