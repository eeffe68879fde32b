"""Facts the stock pyinfra facts do not cover. Every command exits 0: absence is a value."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from pyinfra.api import FactBase

from llama_docker.device import listeners
from llama_docker.device.probes import free_kib
from llama_docker.device.store import LINKS
from llama_docker.transfer.image_ship import inspect_command

if TYPE_CHECKING:
    from llama_docker.device.target import Target


class FreeBytes(FactBase):
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""

    def command(self, path: str) -> str:
        return free_kib(shlex.quote(path))

    def process(self, output: list[str]) -> int | None:
        return int(output[0]) * 1024 if output and output[0].isdigit() else None


class SudoWorks(FactBase):
    """"yes" when sudo runs without asking, else sudo's own first line of complaint."""

    def command(self) -> str:
        return "out=$(sudo -n true 2>&1) && echo yes || echo \"${out:-sudo failed}\" | head -1"

    def process(self, output: list[str]) -> str:
        return output[0] if output else "sudo failed"


class PhysicalCores(FactBase):
    """Physical CPU cores: llama.cpp runs best with one thread per core, not per SMT sibling."""

    def command(self) -> str:
        return ("n=$(lscpu -p=core,socket 2>/dev/null | grep -v '^#' | sort -u | wc -l); "
                "[ \"$n\" -gt 0 ] 2>/dev/null && echo $n || nproc 2>/dev/null || echo 1")

    def process(self, output: list[str]) -> int:
        return int(output[0]) if output and output[0].isdigit() else 1


class PackageArch(FactBase):
    """The architecture of the OS's packages (dpkg's), None where there is no dpkg. Not
    always the kernel's: a 32-bit Raspberry Pi OS runs armhf packages on an aarch64 kernel."""

    def command(self) -> str:
        return "dpkg --print-architecture 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


class PathExists(FactBase):
    """True when something (a file, folder or link) is at `path`."""

    def command(self, path: str) -> str:
        return f"[ -e {shlex.quote(path)} ] || [ -L {shlex.quote(path)} ] && echo yes || true"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0] == "yes"


class ImageId(FactBase):
    """A local container image as `<id>|<layers>|<llama.cpp version>`
    (image_archive.DeviceImage.parse reads it), or None when the tag is absent."""

    def command(self, runtime: str, tag: str) -> str:
        return inspect_command(runtime, tag)

    def process(self, output: list[str]) -> str | None:
        return output[0] if output and output[0] else None


class HttpStatus(FactBase):
    """The HTTP status a URL answers on the device itself, or 0 when nothing answers."""

    def command(self, url: str) -> str:
        return (f"curl -s -o /dev/null --max-time 5 -w '%{{http_code}}' {shlex.quote(url)} "
                "2>/dev/null || true")

    def process(self, output: list[str]) -> int:
        text = output[0] if output else ""
        return int(text) if text.isdigit() else 0



class CpuHasAes(FactBase):
    """Whether the device's CPU has AES instructions (picks the SSH cipher for pushes)."""

    def command(self) -> str:
        return ("grep -qiwE 'aes|aes-gcm' /proc/cpuinfo 2>/dev/null && echo yes || "
                "(sysctl -n hw.optional.arm.FEAT_AES machdep.cpu.features 2>/dev/null "
                "| grep -qiwE '1|aes' && echo yes || echo no)")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0] == "yes"



class NumericOwner(FactBase):
    """`uid:gid` of a path, or None when it is absent. (pyinfra's File fact names the owner,
    and a uid without a passwd entry, like the container's server user, is `UNKNOWN`.)"""

    def command(self, path: str) -> str:
        p = shlex.quote(path)
        return f"stat -c '%u:%g' {p} 2>/dev/null || stat -f '%u:%g' {p} 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        return output[0] if output and output[0] else None


class UserId(FactBase):
    """The SSH user's numeric uid (its user manager lives at /run/user/<uid>)."""

    def command(self) -> str:
        return "id -u"

    def process(self, output: list[str]) -> int:
        return int(output[0])


class DeviceClock(FactBase):
    """The device's clock in seconds since the epoch (compared with the controller's)."""

    def command(self) -> str:
        return "date +%s"

    def process(self, output: list[str]) -> int | None:
        text = output[0].strip() if output else ""
        return int(text) if text.isdigit() else None


class MemoryBytes(FactBase):
    """RAM in bytes: /proc/meminfo on Linux, sysctl on macOS. (pyinfra's Memory fact runs
    `vmstat -s`, a second here, and is None on a Mac.)"""

    def command(self) -> str:
        return ("awk '/^MemTotal:/ {print \"kB\", $2}' /proc/meminfo 2>/dev/null | grep . || "
                "echo \"B $(sysctl -n hw.memsize 2>/dev/null)\"")

    def process(self, output: list[str]) -> int | None:
        unit, _, value = (output[0] if output else "").partition(" ")
        if not value.isdigit():
            return None
        return int(value) * (1024 if unit == "kB" else 1)


class MacPhysicalCores(FactBase):
    """Performance cores of a Mac (all physical cores on Intel): llama.cpp's own choice."""

    def command(self) -> str:
        return ("sysctl -n hw.perflevel0.physicalcpu 2>/dev/null || "
                "sysctl -n hw.physicalcpu 2>/dev/null || echo 1")

    def process(self, output: list[str]) -> int:
        return int(output[0]) if output and output[0].isdigit() else 1


def cores_fact(tgt: Target) -> type[PhysicalCores | MacPhysicalCores]:
    """The fact that counts the cores llama.cpp gets a thread each on: a Mac has no lscpu,
    and its performance cores are llama.cpp's own choice there."""
    return MacPhysicalCores if tgt.is_macos else PhysicalCores


class HomebrewPrefix(FactBase):
    """Where Homebrew lives (/opt/homebrew on Apple Silicon, /usr/local on Intel), or None.

    SSH sessions do not read the shell profile that puts brew on PATH: look, do not ask PATH.
    """

    def command(self) -> str:
        return ("if [ -x /opt/homebrew/bin/brew ]; then echo /opt/homebrew; "
                "elif [ -x /usr/local/bin/brew ]; then echo /usr/local; fi")

    def process(self, output: list[str]) -> str | None:
        return output[0] if output and output[0] else None


class LaunchdDomain(FactBase):
    """`gui/<uid>` when the SSH user is the one logged in at the screen, else `user/<uid>`.

    Homebrew decides the same way: an SSH session cannot bootstrap into the gui/ domain of a
    login session it does not own (or that does not exist).
    """

    def command(self) -> str:
        return ('u=$(id -u); if [ "$(stat -f %u /dev/console 2>/dev/null)" = "$u" ]; '
                'then echo "gui/$u"; else echo "user/$u"; fi')

    def process(self, output: list[str]) -> str:
        return output[0]


class LaunchAgentLoaded(FactBase):
    """Whether launchd has the agent `<domain>/<label>` loaded."""

    def command(self, target: str) -> str:
        return f"launchctl print {shlex.quote(target)} >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0] == "yes"


class ColimaRunning(FactBase):
    """Whether colima's VM for `profile` runs (`colima status` exits 0); needs brew's PATH."""

    def command(self, profile: str) -> str:
        return (f"colima status {shlex.quote(profile)} >/dev/null 2>&1 "
                "&& echo yes || echo no")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0] == "yes"



class StoreState(FactBase):
    """The model store in one round trip: its names, newest first, and each link's target
    (as written, not resolved)."""

    def command(self, root: str) -> str:
        return (f"cd {shlex.quote(root)} 2>/dev/null || exit 0; ls -1t | sed 's/^/F /'; "
                f"for l in {' '.join(LINKS)}; do t=$(readlink \"$l\") && echo \"L $l $t\"; "
                "done; true")

    def process(self, output: list[str]) -> dict:
        files = [line[2:] for line in output if line.startswith("F ")]
        links = dict(line[2:].split(" ", 1) for line in output if line.startswith("L "))
        return {"files": files, "links": links}

    @staticmethod
    def default() -> dict:
        return {"files": [], "links": {}}


class PortListeners(FactBase):
    """Who listens on a TCP port: `ss` on Linux, `lsof` (this user's) and `netstat` (anyone's,
    unnamed) on macOS. Run with sudo where the deploy has it, so other users' names show."""

    def command(self, port: int) -> str:
        return (f"if command -v ss >/dev/null 2>&1; then ss -ltnp 'sport = :{port}' 2>/dev/null "
                "| sed 's/^/ss /'; else "
                f"lsof -nP -iTCP:{port} -sTCP:LISTEN -Fpcn 2>/dev/null | sed 's/^/lsof /'; "
                f"netstat -an -p tcp 2>/dev/null | grep -E '[.:]{port} .*LISTEN' "
                "| sed 's/^/netstat /'; fi; true")

    def process(self, output: list[str]) -> list[listeners.Listener]:
        return listeners.parse(output)

    @staticmethod
    def default() -> list:
        return []


class PublishedPorts(FactBase):
    """Host ports a container publishes (`docker port`, `podman port`); empty when it is not
    running or the runtime is not installed yet."""

    def command(self, runtime: str, container: str) -> str:
        return f"{runtime} port {shlex.quote(container)} 2>/dev/null || true"

    def process(self, output: list[str]) -> set[int]:
        return listeners.published_ports(output)

    @staticmethod
    def default() -> set:
        return set()


class HostNetwork(FactBase):
    """Whether a container runs on the host's network (a split's head: its llama-server holds
    the port itself, with no publisher); False when it is not running or there is no runtime."""

    def command(self, runtime: str, container: str) -> str:
        return (f"{runtime} inspect -f '{{{{.HostConfig.NetworkMode}}}}' "
                f"{shlex.quote(container)} 2>/dev/null || true")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "host"

    @staticmethod
    def default() -> bool:
        return False


class AgentPid(FactBase):
    """The pid launchd runs for an agent of this user, or None when it runs nothing."""

    def command(self, label: str) -> str:
        return (f"launchctl list {shlex.quote(label)} 2>/dev/null "
                "| awk '/\"PID\" =/ {gsub(\";\", \"\", $3); print $3}'; true")

    def process(self, output: list[str]) -> int | None:
        return int(output[0]) if output and output[0].isdigit() else None


class TextFile(FactBase):
    """A small text file of the user's, read to merge into it: ("absent", ""), ("file",
    its text) or ("other", "") for something that is not a readable regular file."""

    def command(self, path: str) -> str:
        p = shlex.quote(path)
        return (f"if [ ! -e {p} ] && [ ! -L {p} ]; then echo absent; "
                f"elif [ -f {p} ] && [ -r {p} ]; then echo file; cat {p}; "
                "else echo other; fi")

    def process(self, output: list[str]) -> tuple[str, str]:
        kind = output[0] if output else "absent"
        return kind, "\n".join(output[1:])

    @staticmethod
    def default() -> tuple[str, str]:
        return "absent", ""
