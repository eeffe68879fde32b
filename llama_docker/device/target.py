"""Where and how a device runs the server, from its profile and the knobs: pure decisions."""

from __future__ import annotations

from dataclasses import dataclass

from llama_docker.device.gpu import CPU, Gpu
from llama_docker.knobs.errors import RefusedError

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
    gpu: Gpu = CPU   # the backend that serves (llama_docker/device/gpu.py), decided at preflight

    @property
    def sudo(self) -> bool:
        return not self.rootless

    def unit_env(self, uid: int) -> dict[str, str]:
        """What `systemctl --user` needs over SSH when no login session set it up."""
        return {"XDG_RUNTIME_DIR": f"/run/user/{uid}"} if self.manager == "systemd-user" else {}


def choose(profile: str, runtime: str, models_dir: str, home: str, service: str) -> Target:
    """Decide the target; refuse combinations that cannot work, naming the fix."""
    if profile in ROOT_PROFILES:
        if runtime == "native":
            raise RefusedError("runtime 'native' is for macOS; use 'docker' or 'podman' here")
        return Target(
            profile=profile, home=home, runtime="docker" if runtime == "auto" else runtime,
            rootless=False, manager="systemd",
            models_dir=_dir(models_dir, "/var/lib/llama-docker/models"),
            build_dir="/opt/llama-docker/build", config_dir="/etc/llama-docker",
            unit_path=f"/etc/systemd/system/{service}.service")
    if profile == "steamos":
        if runtime not in ("auto", "podman"):
            raise RefusedError(f"SteamOS ships podman and its root filesystem is read-only: "
                               f"runtime {runtime!r} cannot be installed; use 'podman' or 'auto'")
        share = f"{home}/.local/share/llama-docker"
        return Target(
            profile=profile, home=home, runtime="podman", rootless=True, manager="systemd-user",
            models_dir=_dir(models_dir, f"{share}/models"), build_dir=f"{share}/build",
            config_dir=f"{home}/.config/llama-docker",
            unit_path=f"{home}/.config/systemd/user/{service}.service")
    if profile == "macos":
        if runtime == "podman":
            raise RefusedError("on macOS use runtime 'docker' (colima) or 'native' (Metal)")
        base = f"{home}/.llama-docker"
        return Target(
            profile=profile, home=home, runtime="docker" if runtime == "auto" else runtime,
            rootless=True, manager="launchd", models_dir=_dir(models_dir, f"{base}/models"),
            build_dir=f"{base}/build", config_dir=base,
            unit_path=f"{home}/Library/LaunchAgents/com.llama-docker.{service}.plist")
    raise RefusedError(f"no target for profile {profile!r}")


def _dir(knob: str, default: str) -> str:
    return default if knob == "auto" else knob
