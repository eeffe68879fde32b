"""Helpers shared by the tasks: failing a host with one clear line."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.operations import python

# The first error line of each host, for the summary at the end of the run.
errors: dict[str, str] = {}


def say_error(h, message: str) -> None:  # noqa: ANN001 - a pyinfra Host
    errors.setdefault(h.name, message)
    h.log_styled(f"llama-docker: {message}", fg="red", log_func=logger.error)


def say(h, message: str) -> None:  # noqa: ANN001 - a pyinfra Host
    h.log_styled(message, log_func=logger.info)


def _fail(state, host, message: str) -> bool:  # noqa: ANN001 - pyinfra's callback shape
    say_error(host, message)
    return False


def ssh_user() -> str:
    """The user the deploy logs in as on this host (pyinfra's default: root)."""
    return host.data.get("ssh_user") or "root"


def fail_host(message: str) -> None:
    """Stop this host with one line (no traceback); the other hosts carry on."""
    python.call(name=f"Refuse: {message}", function=_fail, message=message)
