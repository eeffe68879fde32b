"""Web UI: llama.cpp's own UI of the image's build, verified, in the device's store, served
through `webui/current`; SimpleChat (the image's own UI) until it can be had.

The build number is in the image (llama_docker/device/webui.py BUILD_FILE), which may only be
built later in this same run, so the work happens when the run executes: read the build
from the image (and remember it beside the store, per image tag), get the verified tarball
on the controller, push it like a model, unpack it read-only, move the link, restart the
server if it runs. A converged device is recognised from preflight's one batch: its store,
its link and the build it remembered, so a run with nothing to do adds no round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.operations import python

from llama_docker.device import webui as ui
from llama_docker.device.health import wait_script
from llama_docker.device.target import server_url
from llama_docker.knobs import apikey
from llama_docker.knobs.errors import LlamaDockerError
from llama_docker.transfer import webui_fetch
from llama_docker.transfer.push import SshTarget, push

from . import lock
from .common import deploy, is_dry, run_as, say, say_error
from .image import server_tag
from .summary import note_move

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config
    from llama_docker.transfer.webui_fetch import UiFile

    from .batch import Wanted
    from .plan import Plan


class UiState(FactBase):
    """The UI store: its names, where `current` points, and the build the image with `tag`
    holds, as recorded by an earlier run (None until then)."""

    def command(self, root: str, tag: str) -> str:
        return ui.state_command(root, tag)

    def process(self, output: list[str]) -> dict:
        found = self.default()
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "F":
                found["files"].append(rest)
            elif kind == "L":
                found["link"] = rest
            elif kind == "B":
                found["build"] = ui.parse_build(rest)
        return found

    @staticmethod
    def default() -> dict:
        return {"files": [], "link": None, "build": None}


def root(tgt: Target) -> str:
    return f"{tgt.models_dir}/{ui.STORE}"


def served_here(cfg: Config, tgt: Target) -> bool:
    """Whether this step has work: a UI from the store, on a device whose server runs in a
    container from a systemd unit (macOS runs Homebrew's llama-server, with its own UI)."""
    return cfg.webui not in ("simplechat", "none") and not tgt.launchd


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    # The tag of the image this device runs (pins and GPU variant included): the UI's build
    # is the one that image holds.
    return ([(UiState, {"root": root(tgt), "tag": server_tag(cfg, tgt)})]
            if served_here(cfg, tgt) else [])


def _run(h, command: str, sudo: bool, env: dict[str, str]) -> str:  # noqa: ANN001
    ok, out = run_as(h, command, sudo, _env=env) if env else run_as(h, command, sudo)
    text = " ".join(out.stdout_lines + out.stderr_lines).strip()
    if not ok:
        raise LlamaDockerError(text or f"{command.split()[0]} failed")
    return text


def _device_build(h, plan: Plan, tag: str) -> str:  # noqa: ANN001
    """The llama.cpp build the image holds (read once per image tag, then remembered)."""
    t = plan.target
    out = _run(h, ui.read_build_command(t.runtime, tag), t.sudo,
               {**t.unit_env(plan.uid), **plan.env})
    build = ui.parse_build(out)
    if build is None:
        raise LlamaDockerError(f"the image {tag} names no llama.cpp build in {ui.BUILD_FILE}")
    _run(h, ui.record_build_command(root(t), tag, build), False, {})
    return build


def _restart(h, plan: Plan) -> None:  # noqa: ANN001
    """Restart a running server so it serves the new link (llama-server resolves --path
    once, at start), then wait for it as the health step does; a stopped one is left."""
    t = plan.target
    unit, ctl = t.unit_name, t.systemctl
    env = t.unit_env(plan.uid)
    ok, _ = (run_as(h, f"{ctl} is-active -q {unit}", t.sudo, _env=env) if env
             else run_as(h, f"{ctl} is-active -q {unit}", t.sudo))
    if not ok:
        return  # not started yet: the service step starts it with the link as it is now
    _run(h, f"{ctl} restart {unit}", t.sudo, env)
    header = apikey.paths(t.config_dir)[1]
    _run(h, wait_script(server_url(plan.cfg), plan.cfg.health_timeout, header), t.sudo, {})


def _place(state, host, plan: Plan, tag: str, local: UiFile | None,  # noqa: ANN001
           found: dict) -> bool:
    cfg, store = plan.cfg, root(plan.target)
    try:
        if local is None:
            build = _device_build(host, plan, tag)
            local = lock.ui_upstream(cfg, build)
    except LlamaDockerError as exc:
        # Whatever the reason, one line; a verified UI already served stays, else the
        # image's own (SimpleChat). Nothing unverified is ever linked.
        keep = _verified_link(found)
        say(host, _cannot_have(exc, keep))
        target, label = (found["link"], "") if keep else (ui.IMAGE_UI, "SimpleChat")
    else:
        target, label = ui.link_target(local.sha256, local.folder), local.label
    try:
        if target != ui.IMAGE_UI and local is not None and label:
            _store(host, plan, local)
        if target != found["link"]:
            _run(host, ui.link_command(store, target), False, {})
            say(host, f"web UI: serving {label}")
            _restart(host, plan)
    except LlamaDockerError as exc:
        say_error(host, f"web UI: {exc}")
        return False
    return True


def _cannot_have(exc: LlamaDockerError, keep: bool) -> str:
    """The one line for a UI that cannot be had, and what is served instead."""
    return (f"web UI: llama.cpp's UI cannot be had ({webui_fetch.unavailable(exc)}); "
            + ("keeping the verified UI it serves" if keep else "serving SimpleChat")
            + ", the next run that can fetch it switches")


def _verified_link(found: dict) -> bool:
    """`current` points into the store at a tarball that was verified on the device."""
    head = (found["link"] or "").split("/", 1)[0]
    return len(head) == 64 and f"{head}.ok" in found["files"]


def _store(h, plan: Plan, local: UiFile) -> None:  # noqa: ANN001
    """Push the tarball like a model (resumable, hashed on the device), unpack it."""
    store = ui.tarballs(root(plan.target))
    # A UI given as a path skips the build record that makes the store for an upstream one:
    # on a fresh device the store is not there yet.
    _run(h, ui.make_store_command(store.root), False, {})
    client = h.connector.client
    sent, offset = push(client, local.path, local.sha256, store, h.name,
                        SshTarget.from_data(h.name, h.data), plan.aes)
    if sent:
        resumed = f", resumed from byte {offset}" if offset else ""
        say(h, f"sent {sent} bytes of {local.label}{resumed}; sha256 verified")
    _run(h, ui.unpack_command(store.root, local.sha256), False, {})


def _converged(plan: Plan, found: dict, local: UiFile | None) -> bool:
    """The device already serves the UI this run would: no operation, no round trip."""
    link = found["link"] or ""
    if local is not None:
        sha: str | None = local.sha256
    elif found["build"]:
        sha = lock.ui_known_digest(plan.cfg, found["build"])
    else:
        sha = None
    return bool(sha) and link.startswith(f"{sha}/") and f"{sha}.ok" in found["files"]


@deploy("Web UI")
def webui(plan: Plan, tag: str) -> None:
    """Serve llama.cpp's own web UI from the device's store (or SimpleChat until it can)."""
    if not served_here(plan.cfg, plan.target) or not tag:
        return
    found = plan.known.get(UiState, root=root(plan.target), tag=tag)
    local = plan.webui
    if _converged(plan, found, local):
        return
    if local is None and found["build"] and not is_dry():
        # The device's build is known: fetch (or find in the cache) its UI now, so a run
        # that cannot have it and finds the device as it should be stays a no-op.
        try:
            local = lock.ui_upstream(plan.cfg, found["build"])
        except LlamaDockerError as exc:
            keep = _verified_link(found)
            if keep or found["link"] == ui.IMAGE_UI:
                say(host, _cannot_have(exc, keep))
                return
        if local is not None and _converged(plan, found, local):
            return
    if local is not None and f"{local.sha256}.ok" not in found["files"]:
        note_move(host.name, local.label, local.size)
    python.call(name="Web UI: llama.cpp's own, verified (else SimpleChat)", function=_place,
                plan=plan, tag=tag, local=local, found=found)
