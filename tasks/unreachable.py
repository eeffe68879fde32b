"""The summary's line for a host pyinfra could not reach: a bad knob is said first (the run
would have refused the host anyway, and the knob is the user's to fix), then a host key that
is not pinned, with the command that pins it, else pyinfra's own reason."""

from __future__ import annotations

from typing import Any

from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.every_error import every_error

from .trust import unknown_host_line


def knob_lines(host: Any) -> list[str]:
    """Each bad knob of this host's data, one line each, naming the host."""
    data = {k: v for k, v in host.data.dict().items() if v is not None}
    return [str(exc) for exc in every_error({**DEFAULTS, **data}, host.name)]


def row(host: Any, reason: str) -> tuple[str, str]:
    """(result, detail) for the summary."""
    knobs = knob_lines(host)
    if knobs:
        return "REFUSED", knobs[0].removeprefix(f"{host.name}: ")
    known_hosts = getattr(getattr(host, "connector", None), "data", {}).get(
        "ssh_known_hosts_file")
    return "UNREACHABLE", unknown_host_line(reason, known_hosts) or reason
