"""A device command whose output is read as it comes, over pyinfra's own SSH connection.

pyinfra's run_shell_command hands back a command's output when it ends; a build that runs
for an hour must be seen while it runs. This runs the same command text on a channel of the
same paramiko connection, hands each output line (stdout and stderr as one stream, as a
terminal shows them) to `on_line` the moment it arrives, and calls `on_idle` at least every
`poll` seconds while nothing comes, so a caller can say the time even of a silent command.
Ctrl-C or SIGTERM close the channel (the device's command loses its reader).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import paramiko

from llama_docker.transfer.interrupt import interrupted, stoppable

CHUNK = 1 << 16
_LINE_END = re.compile(rb"\r\n|[\r\n]")


def run(client: paramiko.SSHClient, command: str, stdin: str | None,
        on_line: Callable[[str], None], on_idle: Callable[[], None], timeout: float,
        poll: float = 1.0, clock: Callable[[], float] = time.monotonic
        ) -> tuple[int, list[str]]:
    """Run `command` (`stdin`, then end of input); its exit code and its non-blank output
    lines. -1 with a last line saying why when it was interrupted, outlived `timeout`
    seconds or lost its connection."""
    transport = client.get_transport()
    if transport is None:
        return -1, ["no SSH connection to the device"]
    lines: list[str] = []

    def take(raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip()
        if text.strip():
            lines.append(text)
            on_line(text)

    started = clock()
    try:
        with transport.open_session() as chan, stoppable(chan.close):
            chan.set_combine_stderr(True)
            chan.settimeout(poll)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall((stdin + "\n").encode())
            chan.shutdown_write()
            rest = b""
            while True:
                if interrupted():
                    return -1, [*lines, "interrupted"]
                if clock() - started > timeout:
                    return -1, [*lines, f"no end after {int(timeout)} s: stopped waiting"]
                try:
                    chunk = chan.recv(CHUNK)
                except TimeoutError:  # socket.timeout: nothing came within `poll`
                    on_idle()
                    continue
                if not chunk:
                    break
                *whole, rest = _LINE_END.split(rest + chunk)
                for raw in whole:
                    take(raw)
                on_idle()
            take(rest)
            if interrupted():  # a closed channel ends like a command's end
                return -1, [*lines, "interrupted"]
            code = chan.recv_exit_status()
    except (OSError, EOFError, paramiko.SSHException) as exc:
        if interrupted():
            return -1, [*lines, "interrupted"]
        return -1, [*lines, f"the connection to the device failed: {exc}"]
    return code, lines
