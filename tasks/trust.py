"""Host keys checked against known_hosts from any folder, unless the user's data says otherwise.

pyinfra's own default for `ssh_strict_host_key_checking` is `accept-new`: a host key it has
never seen is trusted and written to known_hosts without a word. group_data/all.py sets
"yes", but pyinfra reads that file only beside the inventory or in the folder it runs from,
and a deploy's `data_defaults` come after pyinfra has connected. pyinfra reads the setting
when it makes each host's connector (before it connects), from the host's data or else from
the connector's default: `strict_by_default()` changes that default, so the user's own
inventory or group data still wins. It must run before the inventory is loaded: from the
config.py pyinfra reads first (`llama-docker` passes the wheel's), or before status loads it.

Plain pyinfra with the packaged deploy and no such config.py connects with `accept-new`
before any deploy file runs: the deploy refuses that host and takes the key pyinfra has just
written back out of known_hosts, so the next run is refused too until someone pins it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pyinfra.connectors.ssh import SSHConnector
from pyinfra.connectors.sshuserclient.client import HOST_KEYS_LOCK

from llama_docker.transfer.atomic import write_atomically

KEY = "ssh_strict_host_key_checking"
STRICT = "yes"
PINNING = "README, Deploying to your own devices, step 2"
_NO_KEY = re.compile(r"No host key for (\S+) found in known_hosts")


def strict_by_default() -> None:
    """Make "yes" pyinfra's default for every SSH host whose data does not set the knob."""
    SSHConnector.data_meta[KEY].default = STRICT


def user_set(host: Any, key: str = KEY) -> bool:
    """True when the inventory (override, host, group or `all` data) sets `key`: a deploy's
    `data_defaults` are not the user's choice."""
    inv = host.inventory
    datas = (inv.get_override_data(), inv.get_host_data(host.name),
             inv.get_groups_data(host.groups), inv.get_data())
    return any(data.get(key) is not None for data in datas)


def _keyscan(name: str, known_hosts: str) -> str:
    found = re.fullmatch(r"\[(.+)\]:(\d+)", name)
    target = f"-p {found[2]} {found[1]}" if found else name
    return f"ssh-keyscan {target} >> {known_hosts}"


def unknown_host_line(reason: str, known_hosts: str | None) -> str:
    """pyinfra's "No host key for X found in known_hosts" as one line with the fix; '' for
    any other connect error."""
    found = _NO_KEY.search(reason)
    if not found:
        return ""
    file = known_hosts or "~/.ssh/known_hosts"
    return (f"host key of {found[1]} is not in {file}: refused; check and pin it first "
            f"({PINNING}): {_keyscan(found[1], file)}")


def _server_key_known(client: Any, shown: Any) -> bool:
    """Whether the key the device showed was in known_hosts as pyinfra read it before this
    run connected (pyinfra keeps that reading; `accept-new` appends to the file only)."""
    return any(key == shown for keys in client.get_host_keys().values() for key in keys.values())


def _written_to(connector: SSHConnector) -> str:
    """The known_hosts file `accept-new` appended to: the client's own (the host's
    `ssh_known_hosts_file`, else ssh config's UserKnownHostsFile, else ~/.ssh/known_hosts)."""
    named = getattr(connector.client, "_host_keys_filename", None)
    file = named or connector.data.get("ssh_known_hosts_file") or "~/.ssh/known_hosts"
    return os.path.expanduser(file)


def forget_key(known_hosts: str, key_type: str, key_base64: str) -> list[str]:
    """Drop the last line of `known_hosts` that carries this key (the one `accept-new` just
    appended), every other line kept byte for byte; the host names of the line dropped, []
    when there is none. An earlier line with the key is not ours: one paramiko could not read
    (a bad line stops its reading of the rest of the file). The file is replaced atomically,
    with no `.old` copy that would keep the key, and keeps its mode."""
    path = Path(os.path.realpath(known_hosts))  # a symlinked file: rewrite its target
    with HOST_KEYS_LOCK:  # pyinfra appends under the same lock
        try:
            lines = path.read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return []
        for i in reversed(range(len(lines))):
            fields = lines[i].decode("utf-8", "replace").split()
            if fields[1:3] == [key_type, key_base64] and not fields[0].startswith("@"):
                write_atomically(path, b"".join(lines[:i] + lines[i + 1:]))
                return fields[0].split(",")
    return []



def _key_name(connector: SSHConnector, names: list[str]) -> str:
    """The device's name as known_hosts has it (`host` or `[host]:port`) for ssh-keyscan."""
    plain = [name for name in names if not name.startswith("|")]  # not a hashed name
    if plain:
        return plain[0]
    name = connector.data.get("ssh_hostname") or connector.host.name
    port = int(connector.data.get("ssh_port") or 22)
    return name if port == 22 else f"[{name}]:{port}"


def accepted_unchecked(host: Any) -> str:
    """A refusal line when pyinfra's own default (accept-new) has just trusted a host key
    nobody pinned: a packaged deploy run by plain pyinfra, from a folder whose config.py
    does not set up llama-docker, learns of it only after pyinfra connected. The key is
    removed from known_hosts again, so the next run does not take it as checked. '' when
    the key was known, or the user chose the setting."""
    connector = host.connector
    if not isinstance(connector, SSHConnector) or user_set(host):
        return ""
    if connector.data.get(KEY) != "accept-new" or connector.client is None:
        return ""
    client: Any = connector.client
    try:
        shown = client.get_transport().get_remote_server_key()
        if _server_key_known(client, shown):
            return ""
        key_type, key_base64 = shown.get_name(), shown.get_base64()
    except (AttributeError, TypeError):  # not a paramiko connection we can read: say nothing
        return ""
    file = _written_to(connector)
    try:
        names = forget_key(file, key_type, key_base64)
    except OSError as exc:
        name = _key_name(connector, [])
        return (f"its host key was not in {file} and pyinfra's default (accept-new) added it "
                f"unchecked; removing it failed ({exc}): refused; remove it (ssh-keygen -R "
                f"{name} -f {file}), then check and pin it ({PINNING}): {_keyscan(name, file)}")
    name = _key_name(connector, names)
    done = "llama-docker removed it again" if names else "it is no longer there"
    return (f"its host key was not in {file}; pyinfra's default (accept-new) added it "
            f"unchecked and {done}: refused; check and pin it first ({PINNING}): "
            f"{_keyscan(name, file)} (a config.py with llama_docker.tasks.before_connect."
            "setup() refuses such a host before connecting)")
