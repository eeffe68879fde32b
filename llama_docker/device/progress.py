"""What a long device command is doing, said at least every 30 s: pure text rules and a clock.

An image build on a Pi runs for many minutes, most of it apt downloading and unpacking; a
health wait, minutes while a big model loads. The controller reads the command's output as
it comes and says one line per interval with the elapsed time, the build's step and the last
line that says something (`Unpacking llama.cpp-tools (1:0.7.0+dfsg-2) ...`), never more
often: a build's hundreds of lines are not repeated, and a command that prints nothing still
gets its line, with the time, from the caller's idle ticks.

    building llama-docker/server:3f2a9c0d1e4b for arm64: 4 min 30 s, step 2/4, Unpacking ...
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable

EVERY = 30.0  # seconds between two lines of one command
EVERY_ENV = "LLAMA_DOCKER_PROGRESS_EVERY"  # a lab hook: its builds take seconds, not minutes
WIDTH = 100  # characters of a shown output line

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# A builder's step: docker's legacy builder, podman/buildah, BuildKit's plain progress.
_STEP = (re.compile(r"^Step (\d+/\d+) ?: ?(.*)$"),
         re.compile(r"^STEP (\d+/\d+): ?(.*)$"),
         re.compile(r"^#\d+ \[(?:[\w.-]+ )?(\d+/\d+)\] (.*)$"))
# Lines that say nothing a person would want as the one line: the builder's bookkeeping,
# apt's and dpkg's chatter around the lines that name a package.
_NOISE = re.compile(
    r"^(?:---> |Removing intermediate container|Running in |Successfully (?:built|tagged) "
    r"|debconf: |\(Reading database|Preparing to unpack |Selecting previously unselected "
    r"|#\d+ (?:DONE|CACHED|sha256:|transferring|resolve )|Sending build context"
    r"|COMMIT|--> |Writing manifest|Storing signatures|Copying (?:blob|config) )")
_APT_GET = re.compile(r"^(Get:\d+) \S+://\S+ (.*)$")  # the mirror's URL says nothing here
_KIT_OUT = re.compile(r"^#\d+ \d+\.\d+ ")  # BuildKit's plain output: `#7 12.3 <the line>`
# The health wait's own lines (device/health.py's wait_script prints one per poll).
WAIT_MARK = "llama-docker-wait:"


def plain(line: str) -> str:
    """A line without terminal colours or a carriage return's overwritten text."""
    return _ANSI.sub("", line.rsplit("\r", 1)[-1]).strip()


def _cut(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def step_of(line: str) -> tuple[str, str] | None:
    """(`3/7`, what the step runs) for a builder's step line, else None."""
    for rule in _STEP:
        m = rule.match(line)
        if m:
            return m.group(1), m.group(2)
    return None


def shown(line: str) -> str | None:
    """The text a build's output line is shown as, or None for a line that says nothing."""
    raw = _KIT_OUT.sub("", line.rsplit("\r", 1)[-1])
    text = plain(raw)
    if not text or raw[:1].isspace() or _NOISE.match(text) or text.startswith(WAIT_MARK):
        return None  # indented lines are apt's package lists
    step = step_of(text)
    if step is not None:
        return _cut(f"step {step[0]}: {step[1]}")
    m = _APT_GET.match(text)
    if m:
        text = f"{m.group(1)} {m.group(2)}"
    return _cut(text)


def waited(line: str) -> str | None:
    """The health wait's line (`llama-docker-wait: 503`) as shown, or None for another."""
    text = plain(line)
    if not text.startswith(WAIT_MARK):
        return None
    code = text[len(WAIT_MARK):].strip()
    if code in ("", "000"):
        return "no answer yet"
    return f"it answers {code}" + (" (loading the model)" if code == "503" else "")


def interval() -> float:
    """EVERY, or the seconds LLAMA_DOCKER_PROGRESS_EVERY gives (the lab's tests)."""
    try:
        return max(float(os.environ.get(EVERY_ENV, "")), 0.1)
    except ValueError:
        return EVERY


def duration(seconds: float) -> str:
    """`45 s`, `4 min 30 s`, `1 h 2 min`."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class Ticker:
    """The one line of a long command, due at most (and, ticked, at least) once per `every`
    seconds (interval()): `<what>: <elapsed>[ of <limit>][, step N/M][, <last line shown>]`.

    `feed` each output line; `due` (call it on every line and on idle ticks) gives the line
    to say when its time has come, else None. `pick` turns an output line into the text to
    show (None: nothing to show); `clock` is time.monotonic but for tests.
    """

    def __init__(self, what: str, every: float | None = None, limit: float | None = None,
                 pick: Callable[[str], str | None] = shown,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.limit, self.pick, self.clock = what, limit, pick, clock
        self.every = interval() if every is None else every
        self.started = self.said_at = clock()
        self.step = ""
        self.last = ""

    def feed(self, line: str) -> None:
        for part in line.split("\r"):
            text = plain(part)
            if not text:
                continue
            step = step_of(text)
            if step is not None:
                self.step = step[0]
            got = self.pick(part)
            if got:
                self.last = got

    def note(self, text: str) -> None:
        """Set the shown text directly (a byte count, say)."""
        self.last = text

    def line(self) -> str:
        elapsed = duration(self.clock() - self.started)
        if self.limit:
            elapsed += f" of {duration(self.limit)}"
        bits = [elapsed]
        if self.step and not self.last.lower().startswith("step"):
            bits.append(f"step {self.step}")
        if self.last:
            bits.append(self.last)
        return f"{self.what}: {', '.join(bits)}"

    def due(self) -> str | None:
        now = self.clock()
        if now - self.said_at < self.every:
            return None
        self.said_at = now
        return self.line()
