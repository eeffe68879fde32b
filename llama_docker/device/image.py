"""The server image: its tag is a hash of everything that goes into the build."""

from __future__ import annotations

import hashlib
import shlex

from llama_docker.device.units import FILES

BUILD_FILES = ("Containerfile", "entrypoint.sh")
REPO = "llama-docker/server"


def build_args(base: str, check_valid_until: bool) -> dict[str, str]:
    return {"BASE": base, "APT_CHECK_VALID_UNTIL": str(check_valid_until).lower()}


def build_command(runtime: str, args: dict[str, str], tag: str, context: str) -> str:
    """Build `tag` on the device from the Containerfile in `context` (the server's image and
    the gateway's alike)."""
    flags = " ".join(f"--build-arg {k}={shlex.quote(v)}" for k, v in sorted(args.items()))
    # docker 20.10's legacy builder is what Debian ships; BuildKit is not assumed.
    env = "DOCKER_BUILDKIT=0 " if runtime == "docker" else ""
    return (f"{env}{runtime} build {flags} -t {tag} -f {context}/Containerfile "
            f"{shlex.quote(context)}")


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


# The label that records which llama.cpp package an image holds (read from dpkg at build).
VERSION_LABEL = "org.llama-docker.llama-cpp-version"
SNAPSHOT_URL = "http://snapshot.debian.org/archive/debian"


def snapshot_url(snapshot: str) -> str:
    """The apt archive a pinned build uses: a snapshot.debian.org date, or a URL as given
    (a snapshot mirror of your own); "" when unpinned."""
    if not snapshot or "://" in snapshot:
        return snapshot.rstrip("/")
    return f"{SNAPSHOT_URL}/{snapshot}"


def pinned_build_args(base: str, check_valid_until: bool, llama_cpp_version: str = "",
                      debian_snapshot: str = "", rebuild: str = "") -> dict[str, str]:
    """build_args plus the pins and the rebuild mark, each only when set: an unpinned
    build keeps the tag it had, a new pin or rebuild mark means a new tag (a new build)."""
    args = build_args(base, check_valid_until)
    extra = {"LLAMA_CPP_VERSION": llama_cpp_version,
             "DEBIAN_SNAPSHOT_URL": snapshot_url(debian_snapshot), "REBUILD": rebuild}
    return {**args, **{k: v for k, v in extra.items() if v}}
