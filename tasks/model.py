"""Model: the verified file in the device's content-addressed store, `current` switched."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gevent
from pyinfra import host
from pyinfra.api.operation import operation
from pyinfra.operations import python

from llama_docker.device.store import (
    LINKS,
    Store,
    after_switch,
    forget_command,
    link_commands,
    to_prune,
)
from llama_docker.knobs.errors import LlamaDockerError
from llama_docker.knobs.spec import ModelFile
from llama_docker.transfer.direct import fetch_on_device
from llama_docker.transfer.interrupt import stoppable
from llama_docker.transfer.local_model import LocalFile
from llama_docker.transfer.push import SshTarget, push, stopped_line

from . import converge, relay
from .common import deploy, errors, say, say_error
from .facts import StoreState
from .plan import Switch
from .summary import note_move

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from .batch import Wanted
    from .plan import Plan


def _keepalive(host) -> None:  # noqa: ANN001
    # A long transfer keeps pyinfra's own connection idle: without keepalives NAT boxes and
    # Wi-Fi power saving drop it (paramiko then fails with EOFError on the next command).
    transport = host.connector.client.get_transport()
    if transport is not None:
        transport.set_keepalive(15)


# Pushes started beside the server image's step, by (host, sha256); the model step waits.
_EARLY: dict[tuple[str, str], gevent.Greenlet] = {}


def _send(host, local: LocalFile, store: Store, aes: bool) -> tuple[bool, str]:  # noqa: ANN001
    """The file onto the device: from a peer that has it (tasks/relay.py), else pushed."""
    if relay.joined(host.name, local.sha256):
        return relay.obtain(host, local.sha256, lambda: _push_once(host, local, store, aes))
    return _push_once(host, local, store, aes)


def _push_once(host, local: LocalFile, store: Store, aes: bool) -> tuple[bool, str]:  # noqa: ANN001
    """One push: (verified and stored, the line that says what happened)."""
    assert local.path is not None  # pushed from this controller: it has the file
    _keepalive(host)
    target = SshTarget.from_data(host.name, host.data)
    try:
        sent, offset = push(host.connector.client, local.path, local.sha256, store, host.name,
                            target, aes)
    except LlamaDockerError as exc:
        return False, str(exc)
    via = "ssh" if target else "paramiko"
    resumed = f", resumed from byte {offset}" if offset else ""
    return True, f"sent {sent} bytes of {local.path.name} via {via}{resumed}; sha256 verified"


def _start(state, host, files: list[LocalFile], store: Store, aes: bool  # noqa: ANN001
           ) -> bool:
    """Start the pushes and return: their bytes move while the image is built or shipped.
    Through the OpenSSH client only: paramiko's fallback shares pyinfra's own connection,
    so there the push waits for its step."""
    if SshTarget.from_data(host.name, host.data) is None:
        return True
    for local in files:
        _EARLY[(host.name, local.sha256)] = gevent.spawn(_beside, host, local, store, aes)
    return True


def _beside(host, local: LocalFile, store: Store, aes: bool) -> tuple[bool, str]:  # noqa: ANN001
    """_send while other steps run: a failure is said when it happens (the summary's reason
    for the host), and Ctrl-C names the push it stopped even if pyinfra exits before this
    greenlet runs again."""
    part = store.part(local.sha256)

    def stopped() -> None:
        errors.setdefault(host.name, stopped_line(part))

    with stoppable(stopped):
        ok, line = _send(host, local, store, aes)
    if not ok:
        say_error(host, line)
        return False, ""
    return True, line


def _push(state, host, local: LocalFile, store: Store, aes: bool) -> bool:  # noqa: ANN001
    started = _EARLY.pop((host.name, local.sha256), None)
    ok, line = started.get() if started is not None else _send(host, local, store, aes)
    if line:  # an early push that failed has said so already
        (say if ok else say_error)(host, line)
    return ok


@operation()
def switch_link(store: Store, link: str, sha: str, previous: str | None = None):
    """
    Point `link` at `<sha>.gguf`, keeping what it pointed at before as `previous`.

    + link: the link's name inside the store, e.g. ``current.gguf``
    + sha: the sha256 of the verified model file to point at
    + previous: the link that keeps the old target, e.g. ``previous.gguf``
    """
    now = host.get_fact(StoreState, root=store.root)["links"].get(link)
    if now == f"{sha}.gguf":
        return
    if now and previous:
        yield link_commands(store.root, previous, now)
    yield link_commands(store.root, link, f"{sha}.gguf")


@operation()
def prune(store: Store, names: list[str]):
    """
    Delete stored model files and their verified markers.

    + names: model file names in the store, ``<sha256>.gguf``
    """
    for name in names:
        sha = name.removesuffix(".gguf")
        yield forget_command(store, sha)


def _direct(state, host, url: str, local: LocalFile, store: Store, filename: str  # noqa: ANN001
            ) -> bool:
    _keepalive(host)
    try:
        got, offset = fetch_on_device(host.connector.client, url, local.sha256,
                                      local.size or None, store, filename)
    except LlamaDockerError as exc:
        say_error(host, str(exc))
        return False
    resumed = f", resumed from byte {offset}" if offset else ""
    say(host, f"downloaded {got} bytes of {filename} on the device{resumed}; sha256 verified")
    return True


def _place(plan: Plan, local: LocalFile, source: ModelFile, stored: list[str]) -> None:
    if f"{local.sha256}.ok" in stored:
        relay.hold(plan, host, local, source.filename)  # a source for the relay's others
        return  # verified on an earlier run: nothing moves, nothing is rehashed
    if not relay.need(plan, host, local, source.filename):
        note_move(host.name, source.filename, local.size)
    if local.path is None:  # direct mode
        python.call(name=f"Download {source.filename} ({local.size} bytes) on the device, "
                         "verify sha256", function=_direct, url=source.source, local=local,
                    store=plan.store, filename=source.filename)
        return
    python.call(name=f"Push {local.path.name} ({local.size} bytes), verify sha256 on device",
                function=_push, local=local, store=plan.store, aes=plan.aes)


def sources(plan: Plan) -> list[tuple[LocalFile, ModelFile]]:
    """Every model (and projector) file the knobs name, with where it comes from, each
    once (a file two models of a set share is placed once)."""
    pairs = ([pair for m in plan.models for pair in ((m.model, m.spec.file),
                                                      (m.mmproj, m.spec.mmproj))]
             if plan.models else [(plan.model, plan.cfg.model.file),
                                  (plan.mmproj, plan.cfg.model.mmproj)])
    files: dict[str, tuple[LocalFile, ModelFile]] = {}
    for local, source in pairs:
        if local is not None and source is not None:
            files.setdefault(local.sha256, (local, source))
    return list(files.values())


def to_push(plan: Plan) -> list[LocalFile]:
    """The files this run sends from the controller: not verified on the device yet."""
    stored = plan.known.get(StoreState, root=plan.store.root)["files"]
    return [local for local, _ in sources(plan)
            if local.path is not None and f"{local.sha256}.ok" not in stored]


@deploy("Model")
def early(plan: Plan) -> None:
    """The model store, then the model's pushes started before the server image's step, so
    a first deploy moves the model's bytes while a device builds the image or receives its
    archive (on a Pi, minutes of each), instead of after it. The model step waits for them
    and reports each where it always has."""
    # Rootless devices create it as the user already; root ones hand it to the SSH user so
    # pushes need no sudo.
    converge.directory(plan.known, name="Model store", path=plan.store.root, mode="755",
                       user=plan.user if plan.target.sudo else None, _sudo=plan.target.sudo)
    files = to_push(plan)
    if files and not plan.target.native:
        names = ", ".join(f.path.name for f in files if f.path is not None)
        python.call(name=f"Start the push of {names}, beside the server image",
                    function=_start, files=files, store=plan.store, aes=plan.aes)


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    return converge.dir_facts(tgt.models_dir)  # the store's listing is read by preflight


def _serve(plan: Plan, name: str, link: str, sha: str, previous: str,
           links: dict[str, str]) -> bool:
    if links.get(link) == f"{sha}.gguf":
        return False  # already served: no operation, no round trip
    return switch_link(name=name, store=plan.store, link=link, sha=sha,
                       previous=previous).will_change


@deploy("Model")
def model(plan: Plan) -> Switch:
    """Put the model (and projector) on the device and switch `current` to it."""
    assert plan.model is not None  # None only on a gateway-only box, which has no store
    root = plan.store.root
    stored = plan.known.get(StoreState, root=root)
    before = {link: stored["links"].get(link) for link in LINKS}
    _place(plan, plan.model, plan.cfg.model.file, stored["files"])
    changed = _serve(plan, f"Serve {plan.cfg.model.name}", "current.gguf", plan.model.sha256,
                     "previous.gguf", stored["links"])
    if plan.mmproj:
        assert plan.cfg.model.mmproj is not None
        _place(plan, plan.mmproj, plan.cfg.model.mmproj, stored["files"])
        changed |= _serve(plan, "Serve its projector", "current-mmproj.gguf",
                          plan.mmproj.sha256, "previous-mmproj.gguf", stored["links"])
    return Switch(changed=changed, before=before)


@deploy("Prune old models")
def prune_store(plan: Plan) -> None:
    """Keep `models_keep` models, counting the one this run serves (and never a linked one),
    so the run after a model change has nothing left to prune."""
    assert plan.model is not None
    stored = plan.known.get(StoreState, root=plan.store.root)
    serve = {"current.gguf": f"{plan.model.sha256}.gguf"}
    if plan.mmproj:
        serve["current-mmproj.gguf"] = f"{plan.mmproj.sha256}.gguf"
    files, links = after_switch(stored["files"], stored["links"], serve)
    names = to_prune(files, set(links.values()), plan.cfg.models_keep)
    if names:
        prune(name=f"Keep {plan.cfg.models_keep} models", store=plan.store, names=names)
