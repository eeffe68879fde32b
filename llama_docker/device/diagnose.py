"""One line that says why a host failed, picked from what the device printed: pure text rules.

A failed image build prints hundreds of lines; the summary carries the one that names the
cause (apt's `E:` line, the builder's error) and, where one knob or one command fixes it, that.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines that name a cause, best first: our own images' words (which name the fix), apt's
# errors, then a builder's or a shell's.
_CAUSES = (
    re.compile(r"^llama-docker[ :]"),
    re.compile(r"^E: "),
    re.compile(r"\b(error|Error|ERROR)\b[: ]"),
    re.compile(r"\b(failed|not found|denied|refused|No space left)\b", re.IGNORECASE),
)
# Where one knob or one command fixes the cause.
_HINTS = (
    (re.compile(r"is not valid yet"),
     "the device's clock is behind: enable NTP (timedatectl set-ntp true) or set the date"),
    (re.compile(r"(is expired|Valid-Until)"),
     "the package mirror serves an expired Release file: fix the mirror, or set "
     "apt_check_valid_until = False for a snapshot mirror you trust"),
    (re.compile(r"No space left on device"),
     "the device's disk is full: free space, or set models_dir to a bigger disk"),
    (re.compile(r"(Temporary failure resolving|Could not resolve)"),
     "the device cannot resolve names: check its DNS, or set registry_mirror to a LAN mirror"),
)
_MAX = 200


def plain(text: str) -> str:
    """Text without terminal colours, on one line."""
    return " ".join(_ANSI.sub("", text).split())


def cause(lines: list[str]) -> str:
    """The line that best says what went wrong (the last of the best kind), or ''."""
    clean = [plain(line) for line in lines]
    clean = [line for line in clean if line]
    for rule in _CAUSES:
        hits = [line for line in clean if rule.search(line)]
        if hits:
            return _short(hits[-1])
    return _short(clean[-1]) if clean else ""


def hint(lines: list[str]) -> str:
    """What to do about it, when the output names a cause with a known fix."""
    text = "\n".join(lines)
    return next((fix for rule, fix in _HINTS if rule.search(text)), "")


def explain(step: str, lines: list[str]) -> str:
    """`<step> failed: <cause> (<fix>)` in one line."""
    why = cause(lines)
    fix = hint(lines)
    out = f"{step} failed" + (f": {why}" if why else "")
    return out + (f" ({fix})" if fix else "")


def _short(line: str) -> str:
    return line if len(line) <= _MAX else line[: _MAX - 3] + "..."
