"""Helpers shared by the tasks: failing a host with one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from pyinfra import host, logger
from pyinfra.api import deploy as pyinfra_deploy
from pyinfra.operations import python

from llama_docker.device.login import login_user, root_command, sudo_password
from llama_docker.knobs.defaults import DEFAULTS

F = TypeVar("F", bound=Callable[..., Any])

# The first error line of each host, for the summary at the end of the run.
errors: dict[str, str] = {}
# Hosts stopped by preflight before anything changed on them.
refused: set[str] = set()
# What a host is besides a model server (the gateway), for its summary line.
notes: dict[str, str] = {}


def deploy(name: str, data_defaults: dict[str, Any] | None = None) -> Callable[[F], F]:
    """pyinfra's @deploy, typed as the step it wraps: pyinfra types the wrapped function as an
    operation whose global arguments (`_sudo`...) come first, which no step's call matches."""
    return cast("Callable[[F], F]", pyinfra_deploy(name, data_defaults=data_defaults))


def say_error(h, message: str) -> None:  # noqa: ANN001 - a pyinfra Host
    """Print a host's error once, where it happens; the summary repeats its first."""
    errors.setdefault(h.name, message)
    h.log_styled(f"llama-docker: {message}", fg="red", log_func=logger.error)


def say(h, message: str) -> None:  # noqa: ANN001 - a pyinfra Host
    h.log_styled(message, log_func=logger.info)


def _fail(state, host, message: str) -> bool:  # noqa: ANN001 - pyinfra's callback shape
    say_error(host, message)
    return False


def ssh_user() -> str:
    """The user the deploy logs in as on this host, from pyinfra's connection (an ssh config
    alias's `User` is in no host data), else host data, else root."""
    return login_user(cast("Mapping[str, Any]", host.data), getattr(host.connector, "client", None))


def host_sudo_password(h) -> str | None:  # noqa: ANN001 - a pyinfra Host
    """The sudo password pyinfra has for this host, if any (llama_docker/device/login.py)."""
    return sudo_password(h.data, h.state.config, h.connector_data)


def run_as(h, command: str, sudo: bool, **kwargs: Any):  # noqa: ANN001, ANN201 - pyinfra's
    """A raw command on the device, as root when `sudo`: pyinfra's operations and facts take
    `_sudo_password` themselves, raw commands must feed it (on stdin, never argv)."""
    if not sudo:
        return h.run_shell_command(command=command, **kwargs)
    cmd, stdin = root_command(command, host_sudo_password(h))
    return h.run_shell_command(command=cmd, **({"_stdin": stdin} if stdin else {}), **kwargs)


def knob_data(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """This host's knobs: the deploy's keyword arguments, then host and group data, then the
    defaults. Merged here because pyinfra hands a deploy's `data_defaults` to its own
    operations only, not to the steps nested inside it."""
    data = {k: v for k, v in host.data.dict().items() if v is not None}
    return {**DEFAULTS, **data, **knobs}


def is_dry() -> bool:
    """`pyinfra --dry`: operations are planned, never executed (pyinfra keeps no flag)."""
    return "--dry" in sys.argv


def fail_host(message: str) -> None:
    """Stop this host with one line (no traceback); the other hosts carry on.

    The line is kept for the summary now, while the plan is made: a dry run never executes
    the operation that prints it, and its summary must still say why the host stops."""
    refused.add(host.name)
    if is_dry():
        say_error(host, message)
    else:
        errors.setdefault(host.name, message)
    python.call(name="Refuse this host", function=_fail, message=message)
