"""The server image: its tag is a hash of everything that goes into the build."""

from __future__ import annotations

import hashlib

from .units import FILES

BUILD_FILES = ("Containerfile", "entrypoint.sh")
REPO = "llama-docker/server"


def build_args(base: str, check_valid_until: bool) -> dict[str, str]:
    return {"BASE": base, "APT_CHECK_VALID_UNTIL": str(check_valid_until).lower()}


def gpu_build_args(args: dict[str, str], backend: str) -> dict[str, str]:
    """The GPU image adds the Vulkan backend and Mesa; a CPU device keeps the small image."""
    return {**args, "GPU": "vulkan"} if backend == "vulkan" else args


def image_tag(args: dict[str, str]) -> str:
    """`llama-docker/server:<12 hex>`: a changed Containerfile or arg means a new tag."""
    h = hashlib.sha256()
    for name in BUILD_FILES:
        h.update(name.encode() + b"\0" + (FILES / name).read_bytes() + b"\0")
    for key in sorted(args):
        h.update(f"{key}={args[key]}\0".encode())
    return f"{REPO}:{h.hexdigest()[:12]}"
