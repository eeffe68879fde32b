"""Bytes of a long stream shown as they come (an image archive saved into the cache): tqdm's
bar on a terminal, as the download and the push draw theirs; where no bar can be drawn (a
log file, a CI job, PYINFRA_PROGRESS=off) one line at least every 30 s instead, through the
caller's `say`, so a run that is not watched live still shows it is moving."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from tqdm import tqdm

from llama_docker.device.progress import Ticker


def size(n: int) -> str:
    """`512 KiB`, `289.6 MiB`, `4.1 GiB`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


class ByteProgress:
    """Call it with each chunk's length; `close` (or leave the `with`) at the end. `label`
    names the bar (`raspi image save`), `what` begins the lines (`saving <tag>`)."""

    def __init__(self, label: str, what: str, say: Callable[[str], None],
                 total: int | None = None, every: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        off = os.environ.get("PYINFRA_PROGRESS") == "off"
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                        leave=False, disable=True if off else None, file=sys.stderr)
        self.ticker = Ticker(what, every, clock=clock) if self.bar.disable else None
        self.say, self.n = say, 0

    def __call__(self, n: int) -> None:
        self.n += n
        if self.ticker is None:
            self.bar.update(n)
            return
        self.ticker.note(f"{size(self.n)} so far")
        line = self.ticker.due()
        if line:
            self.say(line)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ByteProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
