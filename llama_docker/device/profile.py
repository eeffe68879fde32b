"""Which family of device is this? Decided from facts only (uname and os-release)."""

from __future__ import annotations

from collections.abc import Mapping

from llama_docker.knobs.errors import RefusedError

DEBIAN_IDS = {"debian", "raspbian", "ubuntu", "armbian", "linuxmint", "pop", "devuan"}
ARCH_IDS = {"arch", "archarm", "manjaro", "manjaro-arm", "endeavouros"}
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def detect(kernel: str, release_meta: Mapping[str, str] | None) -> str:
    """Return 'debian', 'steamos', 'arch' or 'macos'; refuse anything else by name."""
    if kernel == "Darwin":
        return "macos"
    meta = release_meta or {}
    os_id = meta.get("ID", "").strip('"').lower()
    like = set(meta.get("ID_LIKE", "").strip('"').lower().split())
    if os_id == "steamos":
        return "steamos"
    if os_id in DEBIAN_IDS or "debian" in like or "ubuntu" in like:
        return "debian"
    if os_id in ARCH_IDS or "arch" in like:
        return "arch"
    found = meta.get("PRETTY_NAME") or os_id or kernel or "an unknown system"
    raise RefusedError(f"unsupported OS: {found} (supported: Debian family, SteamOS, "
                       "Arch/Manjaro, macOS)")


def image_arch(machine: str, packages: str | None = None) -> str:
    """Debian's name for the device's CPU; refuse CPUs Debian's llama.cpp is not built for,
    and an OS whose packages (`packages`, dpkg's architecture) are not the kernel's."""
    arch = ARCHES.get(machine)
    if arch is None:
        hint = " (a 32-bit OS: install the 64-bit one)" if machine.startswith("arm") else ""
        raise RefusedError(f"no server image for CPU {machine}{hint}; supported: x86_64, aarch64")
    if packages and packages != arch:
        # 32-bit Raspberry Pi OS boots a 64-bit kernel on a Pi 4 or 5: uname says aarch64,
        # but its docker is armhf and would build and run a 32-bit server.
        raise RefusedError(f"this OS is 32-bit ({packages} packages on a 64-bit {machine} "
                           f"kernel): the server image is {arch}; install the 64-bit OS "
                           "(on a Raspberry Pi: Raspberry Pi OS (64-bit))")
    return arch
