"""Facts of a split model: free memory as a process sees it, a file's text, and the link
keys a device has authorized."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase

from llama_docker.device import memory
from llama_docker.device.link import MARK


class FreeMemory(FactBase):
    """Bytes a model may take (llama_docker/device/memory.py): the smaller of MemAvailable
    and any cgroup limit above this shell, plus what llama-docker's own processes hold."""

    def command(self) -> str:
        return memory.COMMAND

    def process(self, output: list[str]) -> memory.Free | None:
        return memory.parse(output)


class TextOf(FactBase):
    """A file's text as the login user reads it; "" when there is none."""

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null; true"

    def process(self, output: list[str]) -> str:
        return "\n".join(output)

    @staticmethod
    def default() -> str:
        return ""


class LinkKeys(FactBase):
    """The deploy user's authorized_keys lines of llama-docker's device links."""

    def command(self) -> str:
        return f"grep -F ' {MARK}:' ~/.ssh/authorized_keys 2>/dev/null; true"

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]

    @staticmethod
    def default() -> list:
        return []


class SplitState(FactBase):
    """What a split left on a device, in one command: link units in `folder` matching
    `pattern`, the RPC link key's public half at `pub`, and the link keys authorized in
    `keys` (the deploy user's authorized_keys by its path: preflight reads this fact with
    sudo, where `~` is root's)."""

    def command(self, folder: str, pattern: str, pub: str, keys: str) -> str:
        return (f"(cd {shlex.quote(folder)} 2>/dev/null && for f in {pattern}; do "
                "[ -e \"$f\" ] && echo \"unit $f\"; done); "
                f"[ -r {shlex.quote(pub)} ] && echo \"pub $(cat {shlex.quote(pub)})\"; "
                f"grep -F ' {MARK}:' {shlex.quote(keys)} 2>/dev/null | sed 's/^/key /'; true")

    def process(self, output: list[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {"unit": [], "pub": [], "key": []}
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind in found and rest:
                found[kind].append(rest)
        return found

    @staticmethod
    def default() -> dict:
        return {"unit": [], "pub": [], "key": []}
