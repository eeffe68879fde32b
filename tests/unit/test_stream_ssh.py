"""The stream that shows a long device command as it runs, over a real paramiko connection:
an SSH server in this process (paramiko's own) runs the command with `sh -c`, so the
channel's timeouts, stdin, stderr and exit status are paramiko's, not a fake's."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import paramiko
import pytest

from llama_docker.transfer import stream


class _Server(paramiko.ServerInterface):
    def __init__(self) -> None:
        self.command = b""
        self.asked = threading.Event()

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.command = command
        self.asked.set()
        return True


def _serve(sock: socket.socket, key: paramiko.PKey) -> None:
    conn, _ = sock.accept()
    transport = paramiko.Transport(conn)
    transport.add_server_key(key)
    server = _Server()
    transport.start_server(server=server)
    chan = transport.accept(20)
    if chan is None or not server.asked.wait(20):
        return
    proc = subprocess.Popen(["sh", "-c", server.command.decode()], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    def feed() -> None:
        while data := chan.recv(4096):
            proc.stdin.write(data)
            proc.stdin.flush()
        proc.stdin.close()

    def pump(src, send) -> None:  # noqa: ANN001
        for chunk in iter(lambda: src.read1(4096), b""):
            send(chunk)

    threading.Thread(target=feed, daemon=True).start()
    out = [threading.Thread(target=pump, args=(proc.stdout, chan.sendall)),
           threading.Thread(target=pump, args=(proc.stderr, chan.sendall_stderr))]
    for t in out:
        t.start()
    for t in out:
        t.join()
    chan.send_exit_status(proc.wait())
    time.sleep(0.2)
    chan.close()
    transport.close()


@pytest.fixture
def client() -> Iterator[paramiko.SSHClient]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    threading.Thread(target=_serve, args=(sock, paramiko.RSAKey.generate(2048)),
                     daemon=True).start()
    c = paramiko.SSHClient()
    c.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # this test's own server
    c.connect("127.0.0.1", sock.getsockname()[1], username="u", password="p",
              look_for_keys=False, allow_agent=False)
    yield c
    c.close()
    sock.close()


def test_lines_come_as_they_are_printed_and_idle_ticks_between(
        client: paramiko.SSHClient) -> None:
    started = time.monotonic()
    seen: list[tuple[float, str]] = []
    idle: list[float] = []
    code, lines = stream.run(
        client, "read pw; echo \"got $pw\"; echo 'Step 1/2 : FROM x'; sleep 2.5; "
                "echo 'E: bad' >&2; sleep 0.3; printf 'a\\rb\\n'; exit 3", "s3cret",
        lambda line: seen.append((time.monotonic() - started, line)),
        lambda: idle.append(time.monotonic() - started), timeout=30)
    assert code == 3
    assert lines == ["got s3cret", "Step 1/2 : FROM x", "E: bad", "a", "b"]
    assert seen[1][0] < 2 and seen[2][0] >= 2.4  # each line when it came, not at the end
    assert len([t for t in idle if t < 2.4]) >= 2  # ticks while nothing came


def test_a_command_that_outlives_its_timeout_is_left(client: paramiko.SSHClient) -> None:
    started = time.monotonic()
    code, lines = stream.run(client, "echo started; sleep 6", None, lambda line: None,
                             lambda: None, timeout=2)
    assert code == -1 and lines == ["started", "no end after 2 s: stopped waiting"]
    assert time.monotonic() - started < 10


def test_a_shown_command_is_pyinfras_command_and_says_its_progress(
        client: paramiko.SSHClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """tasks/progress.py: the text run_as would send (pyinfra's shell and `_env`), read as
    it comes, one line per interval through the host's log."""
    from types import SimpleNamespace

    from pyinfra.api import Config, Inventory, State

    from llama_docker.device.progress import Ticker
    from llama_docker.tasks import progress

    inventory = Inventory((["pi"], {}))
    State(inventory, Config())
    host = inventory.get_host("pi")
    monkeypatch.setattr(host, "connector", SimpleNamespace(client=client))
    said: list[str] = []
    monkeypatch.setattr(progress, "say", lambda h, line: said.append(f"[{h.name}] {line}"))
    ok, lines = progress.run_shown(
        host, "echo \"$WHO\"; echo 'Unpacking llama.cpp-tools (1:0.7.0) ...'; sleep 1.6; "
              "echo done", False, Ticker("building x", every=1), env={"WHO": "the deck"})
    assert (ok, lines) == (True, ["the deck", "Unpacking llama.cpp-tools (1:0.7.0) ...", "done"])
    assert said and said[0] == "[pi] building x: 1 s, Unpacking llama.cpp-tools (1:0.7.0) ..."
