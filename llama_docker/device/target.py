"""Where and how a device runs the server, from its profile and the knobs: pure decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llama_docker.device.gateway_config import HEALTH_PATH
from llama_docker.device.gpu import CPU, Gpu
from llama_docker.device.launchd import label
from llama_docker.knobs.errors import RefusedError

if TYPE_CHECKING:
    from llama_docker.knobs.config import Config

ROOT_PROFILES = ("debian", "arch")


@dataclass(frozen=True)
class Target:
    """The per-family choices every later step follows."""

    profile: str
    home: str
    runtime: str     # docker | podman | native (macOS: llama-server from Homebrew)
    rootless: bool   # True: everything as the SSH user, no sudo (SteamOS, macOS)
    manager: str     # systemd | systemd-user | launchd
    models_dir: str
    build_dir: str
    config_dir: str  # API key files
    unit_path: str
    service: str     # the service_name knob: the server's unit or agent is named after it
    gpu: Gpu = CPU   # the backend that serves (llama_docker/device/gpu.py), decided at preflight

    @property
    def sudo(self) -> bool:
        return not self.rootless

    @property
    def is_macos(self) -> bool:
        return self.profile == "macos"

    @property
    def native(self) -> bool:
        """Homebrew's llama-server on the Mac itself: no container, no image."""
        return self.runtime == "native"

    @property
    def hash_command(self) -> str:
        """sha256 of a file on the device: macOS has shasum, not coreutils' sha256sum."""
        return "shasum -a 256" if self.is_macos else "sha256sum"

    @property
    def launchd(self) -> bool:
        """A LaunchAgent runs the server (macOS); a systemd unit, system or user, otherwise."""
        return self.manager == "launchd"

    @property
    def agent_label(self) -> str:
        """The server's LaunchAgent label (macOS)."""
        return label(self.service)

    @property
    def system_units(self) -> bool:
        """Units of the system's own systemd, written as root (Debian, Arch): where the
        gateway runs, and what a gateway-only box retires."""
        return self.manager == "systemd"

    @property
    def user_units(self) -> bool:
        """The server is the SSH user's own systemd unit (SteamOS), not the system's."""
        return self.manager == "systemd-user"

    @property
    def unit_name(self) -> str:
        """The server's systemd unit, as systemctl and journalctl name it."""
        return _unit(self.service)

    @property
    def systemctl(self) -> str:
        return "systemctl --user" if self.user_units else "systemctl"

    @property
    def journalctl(self) -> str:
        return "journalctl --user" if self.user_units else "journalctl"

    def unit_env(self, uid: int) -> dict[str, str]:
        """What `systemctl --user` needs over SSH when no login session set it up."""
        return {"XDG_RUNTIME_DIR": f"/run/user/{uid}"} if self.user_units else {}


def device_url(bind: str, port: int) -> str:
    """Where a server bound to `bind` answers on the device itself (the wildcard binds answer
    on loopback): what health checks, the web UI step and the status probe call."""
    addr = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    return f"http://[{addr}]:{port}" if ":" in addr else f"http://{addr}:{port}"


def server_url(cfg: Config) -> str:
    """The server's address on the device, from the bind and port knobs: one answer for the
    health wait, the web UI's restart and the status probe."""
    return device_url(cfg.bind, cfg.port)


def gateway_health_url(cfg: Config) -> str:
    """The gateway's health page on the device: what its wait after a restart and the status
    probe ask."""
    return device_url(cfg.bind, cfg.gateway_port) + HEALTH_PATH


def choose(profile: str, runtime: str, models_dir: str, home: str, service: str) -> Target:
    """Decide the target; refuse combinations that cannot work, naming the fix."""
    unit = _unit(service)
    if profile in ROOT_PROFILES:
        if runtime == "native":
            raise RefusedError("runtime 'native' is for macOS; use 'docker' or 'podman' here")
        return Target(
            profile=profile, home=home, runtime="docker" if runtime == "auto" else runtime,
            rootless=False, manager="systemd",
            models_dir=_dir(models_dir, "/var/lib/llama-docker/models"),
            build_dir="/opt/llama-docker/build", config_dir="/etc/llama-docker",
            unit_path=f"/etc/systemd/system/{unit}", service=service)
    if profile == "steamos":
        if runtime not in ("auto", "podman"):
            raise RefusedError(f"SteamOS ships podman and its root filesystem is read-only: "
                               f"runtime {runtime!r} cannot be installed; use 'podman' or 'auto'")
        share = f"{home}/.local/share/llama-docker"
        return Target(
            profile=profile, home=home, runtime="podman", rootless=True, manager="systemd-user",
            models_dir=_dir(models_dir, f"{share}/models"), build_dir=f"{share}/build",
            config_dir=f"{home}/.config/llama-docker",
            unit_path=f"{home}/.config/systemd/user/{unit}", service=service)
    if profile == "macos":
        if runtime == "podman":
            raise RefusedError("on macOS use runtime 'docker' (colima) or 'native' (Metal)")
        base = f"{home}/.llama-docker"
        return Target(
            profile=profile, home=home, runtime="docker" if runtime == "auto" else runtime,
            rootless=True, manager="launchd", models_dir=_dir(models_dir, f"{base}/models"),
            build_dir=f"{base}/build", config_dir=base,
            unit_path=f"{home}/Library/LaunchAgents/{label(service)}.plist", service=service)
    raise RefusedError(f"no target for profile {profile!r}")


def _unit(service: str) -> str:
    return f"{service}.service"


def _dir(knob: str, default: str) -> str:
    return default if knob == "auto" else knob
