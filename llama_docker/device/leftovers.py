"""What llama-docker leaves on a device, for `llama-docker remove`: pure paths and commands.

Exactly what the deploy puts there: the server's unit (systemd, systemd --user or a launchd
agent), the gateway's unit and colima's agent, the containers `llama` and `llama-gateway`,
the images `llama-docker/server:*` and `llama-docker/gateway:*`, the build folders and the
API key files. The model store goes only with `purge`. The container runtime, its packages
and its registry mirror setting stay: they are the device's, and other containers use them.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

from llama_docker.device import gateway_config, image, launchd, units
from llama_docker.device.target import Target
from llama_docker.knobs import apikey

CONTAINERS = (units.CONTAINER, gateway_config.CONTAINER)
REPOS = (image.REPO, gateway_config.REPO)
RUNTIMES = ("docker", "podman")
GATEWAY_UNIT_PATH = f"/etc/systemd/system/{gateway_config.UNIT}"
_OURS = ("llama-docker", ".llama-docker")  # folders named by the deploy, whatever is in them


@dataclass(frozen=True)
class Unit:
    """A unit or agent the deploy installed: its file and what its manager calls it."""

    path: str
    name: str  # systemd: the unit's name; launchd: the agent's label
    user_mode: bool = False


def units_of(tgt: Target) -> list[Unit]:
    """The server's unit, and the gateway's unit or colima's agent where the target has one."""
    if tgt.launchd:
        colima = launchd.label("colima")
        return [Unit(tgt.unit_path, tgt.agent_label),
                Unit(f"{tgt.home}/Library/LaunchAgents/{colima}.plist", colima)]
    found = [Unit(tgt.unit_path, tgt.unit_name, user_mode=tgt.rootless)]
    if tgt.system_units:
        found.append(Unit(GATEWAY_UNIT_PATH, gateway_config.UNIT))
    return found


def _inside(path: str, folder: str) -> bool:
    return posixpath.commonpath([path, folder]) == folder


def _keep_outermost(paths: list[str]) -> list[str]:
    """Each path once, none inside another of the list."""
    clean = sorted({posixpath.normpath(p) for p in paths})
    return [p for p in clean if not any(o != p and _inside(p, o) for o in clean)]


def folders(tgt: Target, purge: bool) -> list[str]:
    """Folders to delete whole: the build contexts and the key folder; with `purge` the
    store, or the folder of the deploy's own name that holds it and the image archives
    beside it (/var/lib/llama-docker), and a Mac's logs."""
    store, config = posixpath.normpath(tgt.models_dir), posixpath.normpath(tgt.config_dir)
    found = [tgt.build_dir, f"{tgt.build_dir}-gateway"]
    build_root = posixpath.dirname(tgt.build_dir)
    if posixpath.basename(build_root) in _OURS and not _inside(store, build_root):
        found = [build_root]  # /opt/llama-docker: both build folders
    if not _inside(store, config):  # a Mac keeps its keys beside the store: files() has them
        found.append(config)
    if purge:
        root = posixpath.dirname(store)
        ours = posixpath.basename(root) in _OURS
        found.append(root if ours else store)  # a folder of the user's holds their own too
        if tgt.launchd:
            found.append(f"{tgt.home}/{launchd.LOG_DIR}")
    return _keep_outermost(found)


def files(tgt: Target, purge: bool) -> list[str]:
    """Single files to delete, outside the folders: a Mac's API key files."""
    gone = folders(tgt, purge)
    return [f for f in apikey.paths(tgt.config_dir) if not any(_inside(f, d) for d in gone)]


def purge_refusal(models_dir: str, home: str) -> str:
    """Why `--purge` will not delete this store ('' when it may): a store set to `/`, a
    home or a top-level folder is somebody's data, not only models."""
    path = posixpath.normpath(models_dir)
    if path.count("/") < 2 or _inside(home, path):
        return (f"--purge would delete {path}, which holds more than models: delete the "
                "model files in it by hand")
    return ""


# One listing of both runtimes: the containers of ours that exist and the images of ours.
LIST_SCRIPT = " ".join(
    f"if command -v {rt} >/dev/null 2>&1; then "
    f"{rt} ps -a --format '{{{{.Names}}}}' 2>/dev/null | grep -xE "
    f"'{'|'.join(CONTAINERS)}' | sed 's/^/C {rt} /'; "
    f"{rt} images --format '{{{{.Repository}}}}:{{{{.Tag}}}} {{{{.ID}}}}' 2>/dev/null | "
    f"grep -E '^(localhost/)?({'|'.join(REPOS)}):' | sed 's/^/I {rt} /'; fi;"
    for rt in RUNTIMES) + " true"


def parse_listing(lines: list[str]) -> dict[str, dict[str, list[str]]]:
    """LIST_SCRIPT's output as {runtime: {"containers": [...], "images": [...]}}; an image
    whose tag has moved on (`<none>`) by its ID, which `rmi` takes where the name fails."""
    found: dict[str, dict[str, list[str]]] = {}
    for line in lines:
        kind, runtime, name, image_id = (line.split() + ["", "", "", ""])[:4]
        if kind not in ("C", "I") or runtime not in RUNTIMES or not name:
            continue
        ours = found.setdefault(runtime, {"containers": [], "images": []})
        if kind == "C":
            ours["containers"].append(name)
            continue
        ref = image_id if name.endswith(":<none>") and image_id else name
        if ref not in ours["images"]:
            ours["images"].append(ref)
    return found


def remove_commands(runtime: str, containers: list[str], images: list[str]) -> list[str]:
    """Containers first (an image in use cannot go). The units' own stop has usually removed
    them (`--rm`), though the engine may still be at it: each is asked for again, removed
    while there, for at most 10 s, and must be gone."""
    cmds = []
    for c in containers:
        there = f"{runtime} container inspect {shlex.quote(c)} >/dev/null 2>&1"
        cmds.append(f"for i in 1 2 3 4 5 6 7 8 9 10; do {there} || break; "
                    f"{runtime} rm -f {shlex.quote(c)} >/dev/null 2>&1 || sleep 1; done; "
                    f"! {there}")
    if images:
        cmds.append(f"{runtime} rmi {' '.join(shlex.quote(i) for i in images)}")
    return cmds
