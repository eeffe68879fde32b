"""Helpers shared by the tasks: failing a host with one clear line."""

from __future__ import annotations

import logging

from pyinfra.operations import python

logger = logging.getLogger("llama-docker")


def say_error(h, message: str) -> None:
    h.log_styled(f"llama-docker: {message}", fg="red", log_func=logger.error)


def _fail(state, host, message: str) -> bool:  # noqa: ANN001 - pyinfra's callback shape
    say_error(host, message)
    return False


def fail_host(message: str) -> None:
    """Stop this host with one line (no traceback); the other hosts carry on."""
    python.call(name=f"Refuse: {message}", function=_fail, message=message)
