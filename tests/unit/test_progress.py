"""Progress of the long steps: the line picked from a build's output, one line per 30 s with
the elapsed time (a fake clock), the health wait's lines, the stream that reads a device
command as it runs, and a save's byte count off a terminal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from llama_docker.device.health import wait_script
from llama_docker.device.progress import Ticker, duration, shown, waited
from llama_docker.transfer import stream
from llama_docker.transfer.progress import ByteProgress, size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("line", "text"), [
    ("Step 2/4 : RUN if [ -n \"$DEBIAN_SNAPSHOT_URL\" ]; then",
     "step 2/4: RUN if [ -n \"$DEBIAN_SNAPSHOT_URL\" ]; then"),  # docker's legacy builder
    ("STEP 2/4: RUN apt-get update", "step 2/4: RUN apt-get update"),  # podman
    ("#6 [2/4] RUN apt-get update", "step 2/4: RUN apt-get update"),  # BuildKit, plain
    ("#6 12.3 Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ...",
     "Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ..."),
    ("Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ...",
     "Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ..."),
    ("Setting up libggml0:arm64 (0.7.0-2) ...", "Setting up libggml0:arm64 (0.7.0-2) ..."),
    ("Get:12 http://deb.debian.org/debian forky/main arm64 libllama0 arm64 0.7.0-2 [1,204 kB]",
     "Get:12 forky/main arm64 libllama0 arm64 0.7.0-2 [1,204 kB]"),
    ("forky-slim: Pulling from library/debian", "forky-slim: Pulling from library/debian"),
    ("\x1b[1mFetched 48.2 MB in 41s (1,176 kB/s)\x1b[0m", "Fetched 48.2 MB in 41s (1,176 kB/s)"),
    ("0% [Working]\r12% [3 libggml0 320 kB/1,204 kB 27%]", "12% [3 libggml0 320 kB/1,204 kB 27%]"),
    (" ---> Running in 5d1c0b7e2a11", None),
    ("Removing intermediate container 5d1c0b7e2a11", None),
    ("  libggml0 libllama0 llama.cpp-tools", None),  # apt's package list
    ("(Reading database ... 45%", None),
    ("Preparing to unpack .../libggml0_0.7.0-2_arm64.deb ...", None),
    ("debconf: delaying package configuration, since apt-utils is not installed", None),
    ("Successfully built 0123456789ab", None),
    ("", None),
])
def test_the_line_shown_for_each_kind_of_build_output(line: str, text: str | None) -> None:
    assert shown(line) == text


def test_a_long_line_is_cut() -> None:
    got = shown("Unpacking " + "x" * 300)
    assert got is not None and len(got) == 100 and got.endswith("...")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 s"), (45.9, "45 s"), (60, "1 min 0 s"), (270, "4 min 30 s"), (3720, "1 h 2 min")])
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


BUILD = [  # (seconds after the start, the line the builder printed)
    (1, "Step 1/4 : ARG BASE=debian:forky-slim"),
    (2, "Step 2/4 : FROM docker.io/library/debian:forky-slim"),
    (9, " ---> 3f2a9c0d1e4b"),
    (10, "Step 3/4 : RUN apt-get update && apt-get install -y llama.cpp-tools"),
    (11, " ---> Running in 5d1c0b7e2a11"),
    (14, "Get:1 http://deb.debian.org/debian forky InRelease [151 kB]"),
    (29, "Fetched 9,871 kB in 15s (658 kB/s)"),
    (31, "The following NEW packages will be installed:"),
    (31, "  libggml0 libllama0 llama.cpp-tools"),
    (33, "Get:7 http://deb.debian.org/debian forky/main amd64 libggml0 amd64 0.7.0-2 [1 MB]"),
    (58, "Selecting previously unselected package llama.cpp-tools."),
    (59, "Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ..."),
    (59.5, "(Reading database ... 45%"),
    (95, "Setting up llama.cpp-tools (1:0.7.0+dfsg-2) ..."),
]


def test_a_build_is_said_once_per_30_s_with_its_time_step_and_last_line() -> None:
    clock = Clock()
    start = clock.now
    ticker = Ticker("building llama-docker/server:3f2a9c0d1e4b for arm64", clock=clock)
    said: list[tuple[float, str]] = []
    lines = iter(BUILD)
    nxt = next(lines, None)
    for tenth in range(0, 1301):  # 130 s of idle ticks, ten a second, the lines among them
        clock.now = start + tenth / 10
        while nxt is not None and nxt[0] <= clock.now - start:
            ticker.feed(nxt[1])
            if (got := ticker.due()):
                said.append((clock.now - start, got))
            nxt = next(lines, None)
        if (got := ticker.due()):
            said.append((clock.now - start, got))
    what = "building llama-docker/server:3f2a9c0d1e4b for arm64"
    assert said == [
        (30, f"{what}: 30 s, step 3/4, Fetched 9,871 kB in 15s (658 kB/s)"),
        (60, f"{what}: 1 min 0 s, step 3/4, Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ..."),
        (90, f"{what}: 1 min 30 s, step 3/4, Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ..."),
        (120, f"{what}: 2 min 0 s, step 3/4, Setting up llama.cpp-tools (1:0.7.0+dfsg-2) ..."),
    ]


def test_many_lines_at_once_are_one_line() -> None:
    clock = Clock()
    ticker = Ticker("building x", clock=clock)
    clock.now += 31
    said = []
    for n in range(500):
        ticker.feed(f"Unpacking package-{n} (1.0) ...")
        if (got := ticker.due()):
            said.append(got)
    assert said == ["building x: 31 s, Unpacking package-0 (1.0) ..."]


def test_a_silent_command_still_gets_its_line_each_30_s() -> None:
    clock = Clock()
    ticker = Ticker("loading llama-docker/server:3f2a9c0d1e4b from its archive", clock=clock)
    said = []
    for _ in range(65):
        clock.now += 1
        if (got := ticker.due()):
            said.append(got)
    assert said == ["loading llama-docker/server:3f2a9c0d1e4b from its archive: 30 s",
                    "loading llama-docker/server:3f2a9c0d1e4b from its archive: 1 min 0 s"]


def test_the_health_wait_says_what_it_waits_for_and_what_it_hears() -> None:
    clock = Clock()
    ticker = Ticker("waiting for http://127.0.0.1:8080/health", limit=300, pick=waited,
                    clock=clock)
    for code in ("000", "000", "503"):
        clock.now += 15
        ticker.feed(f"llama-docker-wait: {code}")
    assert ticker.due() == ("waiting for http://127.0.0.1:8080/health: 45 s of 5 min 0 s, "
                            "it answers 503 (loading the model)")
    assert waited("llama-docker-wait: 000") == "no answer yet"
    assert waited("Unpacking x") is None and shown("llama-docker-wait: 503") is None


def test_the_wait_script_tells_each_poll_only_when_asked(tmp_path: Path) -> None:
    """The script with a curl that answers 503 twice, then 200 and a completion."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(
        '#!/bin/sh\nn=$(cat "$0.n" 2>/dev/null || echo 0); echo $((n+1)) > "$0.n"\n'
        'case "$*" in *"/health"*) [ "$n" -lt 2 ] && echo 503 || echo 200;;\n'
        '  *) echo \'{"content": "hi"}\';; esac\n')
    (bin_dir / "sleep").write_text("#!/bin/sh\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    url = "http://127.0.0.1:8080"
    for told in (True, False):
        (bin_dir / "curl.n").unlink(missing_ok=True)
        done = subprocess.run(["sh", "-c", wait_script(url, 10, "/nonexistent", told=told)],
                              capture_output=True, text=True, timeout=30, env=env)
        assert done.returncode == 0, done.stderr
        marks = [line for line in done.stderr.splitlines() if line.startswith("llama-docker")]
        assert marks == (["llama-docker-wait: 503"] * 2 + ["llama-docker-wait: 200"]
                         if told else [])


# --- The stream: a fake paramiko channel --------------------------------------------------

class Channel:
    """Hands out `script` in order: bytes, or None for a poll that timed out."""

    def __init__(self, script: list[bytes | None], code: int = 0,
                 clock: Clock | None = None) -> None:
        self.script, self.code, self.clock = list(script), code, clock
        self.command, self.sent, self.combined = "", b"", False

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def set_combine_stderr(self, on: bool) -> None:
        self.combined = on

    def settimeout(self, t: float) -> None:
        pass

    def exec_command(self, command: str) -> None:
        self.command = command

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def shutdown_write(self) -> None:
        pass

    def close(self) -> None:
        pass

    def recv(self, n: int) -> bytes:
        if self.clock is not None:
            self.clock.now += 1
        if not self.script:
            return b""
        got = self.script.pop(0)
        if got is None:
            raise TimeoutError
        return got

    def recv_exit_status(self) -> int:
        return self.code


class Client:
    def __init__(self, chan: Channel) -> None:
        self.chan = chan

    def get_transport(self) -> Client:
        return self

    def open_session(self) -> Channel:
        return self.chan


def test_the_stream_hands_over_whole_lines_as_they_come_and_ticks_when_idle() -> None:
    chan = Channel([b"Step 1/2 : FR", b"OM debian\r\nGet:1 x", None, None,
                    b" y\nhalf-way\r12% [x]\n", b"last line, no newline"], code=0)
    seen: list[str] = []
    idle: list[int] = []
    code, lines = stream.run(Client(chan), "build it", "s3cret", seen.append,
                             lambda: idle.append(1), timeout=60)  # type: ignore[arg-type]
    assert code == 0 and chan.command == "build it" and chan.sent == b"s3cret\n"
    assert chan.combined  # stderr in the same stream, in order
    assert seen == lines == ["Step 1/2 : FROM debian", "Get:1 x y", "half-way", "12% [x]",
                             "last line, no newline"]
    assert len(idle) >= 2 + 3  # each timed-out poll, and after each chunk


def test_the_stream_says_a_failure_and_an_outlived_timeout() -> None:
    code, lines = stream.run(Client(Channel([b"E: Unable to locate package x\n"], code=100)),
                             "c", None, lambda line: None, lambda: None, timeout=60)  # type: ignore[arg-type]
    assert (code, lines) == (100, ["E: Unable to locate package x"])
    clock = Clock()
    code, lines = stream.run(Client(Channel([None] * 100, clock=clock)), "c", None,  # type: ignore[arg-type]
                             lambda line: None, lambda: None, timeout=10, clock=clock)
    assert code == -1 and lines == ["no end after 10 s: stopped waiting"]


def test_a_save_off_a_terminal_says_its_bytes_each_30_s(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("PYINFRA_PROGRESS", "off")  # no bar: lines
    clock = Clock()
    said: list[str] = []
    with ByteProgress("pi image save", "saving llama-docker/server:abc into the "
                      "controller's cache", said.append, clock=clock) as bar:
        for _ in range(70):
            clock.now += 1
            bar(1 << 20)
    assert said == [
        "saving llama-docker/server:abc into the controller's cache: 30 s, 30.0 MiB so far",
        "saving llama-docker/server:abc into the controller's cache: 1 min 0 s, 60.0 MiB so far"]
    assert size(512) == "512 B" and size(4_400_000_000) == "4.1 GiB"


def test_the_lab_can_shorten_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_docker.device.progress import interval

    monkeypatch.delenv("LLAMA_DOCKER_PROGRESS_EVERY", raising=False)
    assert interval() == 30.0
    monkeypatch.setenv("LLAMA_DOCKER_PROGRESS_EVERY", "1")
    assert interval() == 1.0 and Ticker("x").every == 1.0
    monkeypatch.setenv("LLAMA_DOCKER_PROGRESS_EVERY", "soon")
    assert interval() == 30.0
