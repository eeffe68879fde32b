"""A long device command (an image build, a load, the health wait) that says what it is doing
while it runs: one line at least every 30 s with the elapsed time and the last line of its
output that says something (llama_docker/device/progress.py), through the host's own log.

The command is the one run_as would send, built by pyinfra's own rules (its shell, `_env`
as `export`, sudo with the password on stdin), read as it comes over pyinfra's own paramiko
connection (llama_docker/transfer/stream.py). A connector without one (not SSH) runs it
through run_as, said when it ends.
"""

from __future__ import annotations

from typing import Any

from pyinfra.api.command import StringCommand
from pyinfra.connectors.util import make_unix_command_for_host

from llama_docker.device.login import root_command
from llama_docker.device.progress import Ticker
from llama_docker.transfer import stream

from .common import host_sudo_password, run_as, say


def run_shown(h: Any, command: str, sudo: bool, ticker: Ticker, env: dict[str, str] | None = None,
              timeout: int = 600) -> tuple[bool, list[str]]:
    """run_as(h, command, sudo, _env=env, _timeout=timeout), its output shown by `ticker` as
    it comes; (it ended with 0, its output lines)."""
    client = getattr(h.connector, "client", None)
    if client is None or client.get_transport() is None:
        ok, out = run_as(h, command, sudo, _env=env or {}, _timeout=timeout, print_output=False)
        return ok, out.stdout_lines + out.stderr_lines
    cmd, stdin = root_command(command, host_sudo_password(h)) if sudo else (command, None)
    text = make_unix_command_for_host(h.state, h, StringCommand(cmd),
                                      **({"_env": env} if env else {})).get_raw_value()

    def idle() -> None:
        line = ticker.due()
        if line:
            say(h, line)

    def line(out: str) -> None:
        ticker.feed(out)
        idle()

    code, lines = stream.run(client, text, stdin, line, idle, timeout)
    return code == 0, lines
