"""llama.cpp's own web UI on the devices: where its release lives, what a valid one holds,
how the server is told to serve it, and the text of the commands that put it on a device.
Pure logic: no network, no device.

Debian's llama-server can only serve SimpleChat (Debian cannot build the upstream UI); its
postinst can download `llama-bNNNN-ui.tar.gz` of the package's own build from GitHub, with
no checksum. Here the controller downloads it once, verified, and it reaches the devices the
way a model does: `<models_dir>/webui/<sha256>.tar.gz`, unpacked read-only into
`<models_dir>/webui/<sha256>/`, and the link `webui/current` names the folder to serve.
The models folder is already mounted read-only at /models in the container, so the server
gets `--path /models/webui/current`; when there is no verified UI, `current` points at the
image's own UI (SimpleChat) instead, so the unit never changes between the two.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import tarfile
from pathlib import Path

from llama_docker.device.store import Store, link_commands
from llama_docker.knobs.errors import VerifyError

GITHUB_RELEASES = "https://github.com/ggml-org/llama.cpp/releases/download"
GITHUB_API_RELEASE = "https://api.github.com/repos/ggml-org/llama.cpp/releases/tags/{tag}"
# In the image: Debian's llama.cpp packages record the upstream build they were cut from.
BUILD_FILE = "/usr/share/doc/libllama0/nightly-tag.txt"
# In the image: the UI Debian's llama-server serves by default (a link to SimpleChat).
IMAGE_UI = "/usr/share/llama.cpp/llama-server/default-ui"
STORE = "webui"  # under models_dir
SERVED = f"/models/{STORE}/current"  # what --path names inside the container
MODES = ("upstream", "simplechat", "none")
BUILD = re.compile(r"^b[0-9]{1,7}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def asset(build: str) -> str:
    """The release asset's name, e.g. llama-b11669-ui.tar.gz (llama.cpp's release.yml)."""
    return f"llama-{build}-ui.tar.gz"


def release_url(mirror: str, build: str) -> str:
    """Where the UI tarball of `build` is: GitHub's release, or the same path on a mirror."""
    base = (mirror or GITHUB_RELEASES).rstrip("/")
    return f"{base}/{build}/{asset(build)}"


def digest_url(mirror: str, build: str) -> str:
    """Where the published sha256 is: GitHub's release API (`assets[].digest`), or on a
    mirror a `<asset>.sha256` file beside the tarball (sha256sum's format)."""
    if not mirror:
        return GITHUB_API_RELEASE.format(tag=build)
    return release_url(mirror, build) + ".sha256"


def parse_build(text: str) -> str | None:
    """The build tag from nightly-tag.txt (`b11669`), or None when it holds none."""
    word = text.strip().split()[0] if text.strip() else ""
    return word if BUILD.match(word) else None


def digest_from_release(release: object, build: str) -> str | None:
    """The sha256 GitHub publishes for the UI asset in a release's JSON, or None."""
    assets = release.get("assets") if isinstance(release, dict) else None
    for item in assets if isinstance(assets, list) else []:
        if isinstance(item, dict) and item.get("name") == asset(build):
            digest = str(item.get("digest") or "")
            algo, _, hexdigest = digest.partition(":")
            if algo == "sha256" and _SHA.match(hexdigest.lower()):
                return hexdigest.lower()
    return None


def digest_from_sums(text: str) -> str | None:
    """The sha256 in a `<asset>.sha256` file (`<hex>  <name>` or the bare hex)."""
    word = text.strip().split()[0].lower() if text.strip() else ""
    return word if _SHA.match(word) else None


def ui_folder(tarball: Path) -> str:
    """The folder inside a UI tarball that holds index.html ("" for the top), after checking
    every member is a plain file or folder that stays inside the unpack folder.

    llama.cpp's release packs its built UI under one folder named like the tarball
    (`tar --transform "s,^\\.,llama-bNNNN,"`): `llama-b11669/index.html`.
    """
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
    except (OSError, tarfile.TarError) as exc:
        raise VerifyError(f"{tarball.name} is not a gzip tarball: {exc}") from None
    names = set()
    for m in members:
        name = posixpath.normpath(m.name)
        if name.startswith(("/", "../")) or name == ".." or not (m.isfile() or m.isdir()):
            raise VerifyError(f"{tarball.name} holds {m.name!r}, which is not a plain file "
                              "or folder inside it: refused")
        names.add(name)
    for folder in sorted({posixpath.dirname(n) for n in names if posixpath.basename(n)
                          == "index.html"}, key=lambda d: (d.count("/"), d)):
        if folder.count("/") == 0:  # the top, or one folder down
            return "" if folder in ("", ".") else folder
    raise VerifyError(f"{tarball.name} has no index.html at its top or one folder down: "
                      "not a built web UI")


def server_args(mode: str) -> tuple[str, ...]:
    """llama-server's UI arguments: the store's link, none (SimpleChat), or no UI at all.

    A local path is served like the upstream UI."""
    if mode == "simplechat":
        return ()
    if mode == "none":
        return ("--no-webui",)
    return ("--path", SERVED)


def link_target(sha: str | None, folder: str) -> str:
    """What `webui/current` points at: the verified UI's folder (relative, so it resolves
    on the device and in the container alike), or the image's own UI (a container path)."""
    if sha is None:
        return IMAGE_UI
    return f"{sha}/{folder}".rstrip("/")


def served(link: str, args: str) -> tuple[str, str | None]:
    """What a device serves, from `webui/current`'s target and the unit's arguments:
    ("llama.cpp", folder) for a verified UI, ("simplechat", None) or ("none", None)."""
    if "--no-webui" in args:
        return "none", None
    if f"--path {SERVED}" not in args:
        return "simplechat", None
    head, _, rest = link.partition("/")
    if _SHA.match(head):
        return "llama.cpp", rest or head[:12]
    return "simplechat", None


# --- the commands that put it on a device (the steps: tasks/webui.py)


def tarballs(root: str) -> Store:
    """The UI's store: the model store's verify-then-rename rules for `<sha256>.tar.gz`."""
    return Store(root, ext="tar.gz")


def build_record(tag: str) -> str:
    """The file beside the store that remembers which build the image `tag` holds."""
    return f"image-{tag.rsplit(':', 1)[-1]}.build"


def state_command(root: str, tag: str) -> str:
    """The store's names (`F <name>`), where `current` points (`L <target>`) and the build
    recorded for the image `tag` (`B <build>`), in one round trip; nothing when no store."""
    return (f"cd {shlex.quote(root)} 2>/dev/null || exit 0; ls -1 | sed 's/^/F /'; "
            "t=$(readlink current) && echo \"L $t\"; "
            f"sed 's/^/B /' {shlex.quote(build_record(tag))} 2>/dev/null; true")


def read_build_command(runtime: str, tag: str) -> str:
    """Print the llama.cpp build the image `tag` holds (BUILD_FILE)."""
    return f"{runtime} run --rm --entrypoint cat {shlex.quote(tag)} {BUILD_FILE}"


def record_build_command(root: str, tag: str, build: str) -> str:
    """Remember beside the store that the image `tag` holds `build`: later runs read it
    with the store's state instead of starting a container."""
    record = shlex.quote(f"{root}/{build_record(tag)}")
    return f"mkdir -p {shlex.quote(root)} && echo {build} > {record}"


def make_store_command(root: str) -> str:
    """Create the store (a UI given as a path has no build record that made it already)."""
    return f"mkdir -p {shlex.quote(root)}"


def unpack_command(store: str, sha: str) -> str:
    """Unpack the verified tarball into `<sha>/` (read-only) unless it is there already: in
    a hidden folder first, so a half-unpacked UI never has the name that gets linked."""
    q = shlex.quote
    tmp = q(f".{sha}.tmp")
    return (f"cd {q(store)} && if [ ! -d {sha} ]; then "
            f"rm -rf {tmp} && mkdir {tmp} && tar -xzf {q(sha + '.tar.gz')} -C {tmp} "
            f"--no-same-owner --no-same-permissions && chmod -R a+rX,a-w {tmp} && "
            f"mv {tmp} {sha}; fi")


def link_command(store: str, target: str) -> str:
    """Point `current` at `target` (link_target) atomically, the store made first. The
    target is a folder, so the store's link builder renames with `mv -T`."""
    link = link_commands(store, "current", target, folder=True)
    return f"mkdir -p {shlex.quote(store)} && {link}"
