"""Who a deploy is logged in as on a device, and the sudo password pyinfra was given.

Both come from pyinfra's own connection and settings, never from host data alone: an
inventory may name a device by an ~/.ssh/config alias whose `User` only the connection
knows, and a sudo password may come from host data, `--same-sudo-password` or the prompt of
`--use-sudo-password`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any


def login_user(data: Mapping[str, Any], client: Any = None) -> str:
    """The user the SSH connection authenticated as (paramiko knows it, whatever set it:
    `ssh_user`, an ssh config `User`, the local user name); host data's `ssh_user`, then
    root (pyinfra's own fallback) when there is no connection to ask."""
    transport = client.get_transport() if client is not None else None
    name = transport.get_username() if transport is not None else None
    return str(name or data.get("ssh_user") or "root")


def sudo_password(data: Mapping[str, Any], config: Any = None,
                  connector_data: Mapping[str, Any] | None = None) -> str | None:
    """The password pyinfra would give sudo on this host, in pyinfra's own order: the host
    data key `_sudo_password`, the run's `--same-sudo-password`, then the answer to the
    prompt pyinfra shows when sudo asks (`--use-sudo-password`)."""
    for value in (data.get("_sudo_password"), getattr(config, "SUDO_PASSWORD", None),
                  (connector_data or {}).get("prompted_sudo_password")):
        if value:
            return str(value)
    return None


def root_command(command: str, password: str | None) -> tuple[str, str | None]:
    """`command` run as root by sudo, and what to write to its stdin.

    With a password, sudo reads it from stdin (`-S`, no prompt text, no cached ticket):
    it is never on a command line, so never in `ps` or a shell history on the device.
    Without one, sudo must not ask (`-n`): preflight refused the host if it would.
    """
    if password is None:
        return f"sudo -n sh -c {shlex.quote(command)}", None
    return f"sudo -S -k -p '' sh -c {shlex.quote(command)}", password
