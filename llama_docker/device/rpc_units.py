"""The units of a split model: the worker's RPC server and the head's link to each worker
(systemd text, rendered from files/ templates), and where their state lives."""

from __future__ import annotations

import posixpath
import shlex

from llama_docker.device.link import HOLD, MARK, link_dir
from llama_docker.device.units import TEMPLATES

WORKER_CONTAINER = "llama-rpc"


def worker_unit_name(service: str) -> str:
    return f"{service}-rpc.service"


def link_unit_name(service: str, worker: str) -> str:
    """The head's link unit to one worker (systemd allows its name's characters)."""
    return f"{service}-link-{worker}.service"


def link_unit_glob(service: str) -> str:
    return f"{service}-link-*.service"


def rpc_link_dir(profile: str, home: str) -> str:
    """The head's state for its RPC links: a key of its own (not the relay's: one key, one
    set of restrictions on each receiver), and the pinned host key of each worker."""
    return f"{link_dir(profile, home)}/rpc"


def link_name(head: str) -> str:
    """What names the head's forward key in a worker's authorized_keys (`<mark>:<head>:rpc`,
    apart from the relay's `<mark>:<head>`)."""
    return f"{head}:rpc"


def cache_dir(models_dir: str) -> str:
    """The worker's tensor cache, beside the model store on the same disk: a restarted
    worker loads big tensors from here instead of receiving them again."""
    return posixpath.join(posixpath.dirname(models_dir.rstrip("/")) or "/", "rpc-cache")


def worker_unit(*, runtime: str, image: str, head: str, port: int, threads: int,
                cache: str, rootless: bool) -> str:
    """ggml-rpc-server from the server image, on the device's loopback (host network, bound
    to 127.0.0.1: no port on the LAN), its tensor cache on the store's disk."""
    return TEMPLATES.get_template("llama-docker-rpc.service.j2").render(
        runtime=runtime, image=image, head=head, port=port, threads=threads,
        cache_dir=cache, rootless=rootless, container=WORKER_CONTAINER)


def link_unit(*, worker: str, local_port: int, remote_port: int, key: str, known_hosts: str,
              login: str, address: str, ssh_port: int, user: str | None) -> str:
    """ssh -L from the head's loopback to the worker's RPC port, its session holding the
    connection (device/link.py HOLD_COMMAND), restarted by systemd with a bounded back-off.
    `user`: who runs it in a system unit (the key's owner); None in the user's own systemd
    (SteamOS)."""
    return TEMPLATES.get_template("llama-docker-link.service.j2").render(
        worker=worker, local_port=local_port, remote_port=remote_port, key=shlex.quote(key),
        known_hosts=shlex.quote(known_hosts), login=shlex.quote(login),
        address=shlex.quote(address), ssh_port=ssh_port, user=user, hold=HOLD)


def unauthorize_others_command(keep: str | None) -> str:
    """Remove every RPC link key from ~/.ssh/authorized_keys but `keep`'s (a worker serves
    one head; None: it serves none now). The user's own keys and the relay's stay, and the
    file stays 0600 (a group-writable one, from a umask of 002, would lock the user out
    where sshd's StrictModes refuses it)."""
    keep_mark = f"{MARK}:{link_name(keep)}" if keep else ""
    awk = ("awk -v k=" + shlex.quote(keep_mark) + " -v m=" + shlex.quote(MARK + ":")
           + " '!(index($NF, m) == 1 && $NF ~ /:rpc$/ && $NF != k)' \"$f\"")
    return ("umask 077; f=~/.ssh/authorized_keys; [ -f \"$f\" ] || exit 0; "
            f"n=$({awk} | wc -l); [ \"$n\" -lt \"$(wc -l < \"$f\")\" ] || exit 0; "
            f"{awk} > \"$f.llama-docker\" && mv -f \"$f.llama-docker\" \"$f\" && echo removed")
