"""Model: the verified file in the device's content-addressed store, `current` switched."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import operation
from pyinfra.facts.files import File
from pyinfra.operations import files, python

from llama_docker.controller import LocalFile
from llama_docker.errors import LlamaDockerError
from llama_docker.push import Store, push

from .common import say_error
from .facts import LinkTarget
from .preflight import Plan


def _push(state, host, local: LocalFile, store: Store) -> bool:  # noqa: ANN001
    try:
        push(host.connector.client, local.path, local.sha256, store, host.name)
    except LlamaDockerError as exc:
        say_error(host, str(exc))
        return False
    return True


@operation()
def switch_link(store: Store, link: str, sha: str, previous: str | None = None):
    """
    Point `link` at `<sha>.gguf` atomically (a new link renamed over the old one).

    + link: the link's name inside the store, e.g. ``current.gguf``
    + sha: the sha256 of the verified model file to point at
    + previous: a second link kept pointing at what `link` pointed at before
    """
    path = f"{store.root}/{link}"
    target = f"{sha}.gguf"
    now = host.get_fact(LinkTarget, path=path)
    if now == target:
        return
    if now and previous:
        yield (f"ln -sfn {shlex.quote(now)} {shlex.quote(store.root)}/.{previous}.tmp && "
               f"mv -Tf {shlex.quote(store.root)}/.{previous}.tmp "
               f"{shlex.quote(store.root + '/' + previous)}")
    tmp = f"{store.root}/.{link}.tmp"
    yield f"ln -sfn {shlex.quote(target)} {shlex.quote(tmp)} && mv -Tf {shlex.quote(tmp)} " \
          f"{shlex.quote(path)}"


def _place(plan: Plan, local: LocalFile) -> None:
    if host.get_fact(File, path=plan.store.marker(local.sha256)):
        return  # verified on an earlier run: nothing moves, nothing is rehashed
    python.call(name=f"Push {local.path.name} ({local.size} bytes), verify sha256 on device",
                function=_push, local=local, store=plan.store)


@deploy("Model")
def model(plan: Plan) -> bool:
    """Return True when the served model (or projector) changes in this run."""
    files.directory(name="Model store", path=plan.store.root, user=plan.user, group=plan.user,
                    mode="755", _sudo=True)
    _place(plan, plan.model)
    changed = switch_link(name=f"Serve {plan.cfg.model.name}", store=plan.store,
                          link="current.gguf", sha=plan.model.sha256,
                          previous="previous.gguf").will_change
    if plan.mmproj:
        _place(plan, plan.mmproj)
        changed |= switch_link(name="Serve its projector", store=plan.store,
                               link="current-mmproj.gguf", sha=plan.mmproj.sha256,
                               previous="previous-mmproj.gguf").will_change
    return changed
