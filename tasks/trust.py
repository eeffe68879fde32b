"""Host keys checked against known_hosts from any folder, unless the user's data says otherwise.

pyinfra's own default for `ssh_strict_host_key_checking` is `accept-new`: a host key it has
never seen is trusted and written to known_hosts without a word. group_data/all.py sets
"yes", but pyinfra reads that file only beside the inventory or in the folder it runs from,
and a deploy's `data_defaults` come after pyinfra has connected. pyinfra reads the setting
when it makes each host's connector (before it connects), from the host's data or else from
the connector's default: `strict_by_default()` changes that default, so the user's own
inventory or group data still wins. It must run before the inventory is loaded: from the
config.py pyinfra reads first (`llama-docker` passes the wheel's), or before status loads it.
"""

from __future__ import annotations

import re
from typing import Any

from pyinfra.connectors.ssh import SSHConnector

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


def _server_key_known(client: Any) -> bool:
    """Whether the key the device showed was in known_hosts as pyinfra read it before this
    run connected (pyinfra keeps that reading; `accept-new` appends to the file only)."""
    shown = client.get_transport().get_remote_server_key()
    return any(key == shown for keys in client.get_host_keys().values() for key in keys.values())


def accepted_unchecked(host: Any) -> str:
    """A refusal line when pyinfra's own default (accept-new) has just trusted a host key
    nobody pinned: a packaged deploy run by plain pyinfra, from a folder whose config.py
    does not set up llama-docker, learns of it only after pyinfra connected. '' otherwise."""
    connector = host.connector
    if not isinstance(connector, SSHConnector) or user_set(host):
        return ""
    if connector.data.get(KEY) != "accept-new" or connector.client is None:
        return ""
    try:
        if _server_key_known(connector.client):
            return ""
    except (AttributeError, TypeError):  # not a paramiko connection we can read: say nothing
        return ""
    return ("its host key was not in known_hosts and pyinfra's default (accept-new) has just "
            f"added it unchecked: check it ({PINNING}: ssh-keyscan, ssh-keygen -lf), then run "
            "again; `llama-docker deploy`, or a config.py that runs llama_docker.tasks."
            "before_connect.setup(), refuses such a host before connecting")
