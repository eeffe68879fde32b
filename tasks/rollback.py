"""Rollback: swap `current` and `previous` on a device, restart, check health."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host
from pyinfra.operations import server, systemd

from llama_docker.device.router_preset import CURRENT_SET, PREVIOUS_SET
from llama_docker.device.store import link_commands
from llama_docker.knobs.errors import LlamaDockerError

from .agents import restart_and_logs
from .common import deploy, fail_host, say
from .facts import StoreState
from .health import health
from .preflight import device_target


@deploy("Rollback")
def rollback(knobs: Mapping[str, Any] | None = None) -> bool:
    """Serve the previous model again (and keep the current one as the new previous)."""
    try:
        cfg, t, uid, _ = device_target(knobs)
    except LlamaDockerError as exc:
        fail_host(str(exc))
        return False
    if cfg.gateway_only:
        say(host, "gateway only: no model to roll back on this host")
        return False
    root = t.models_dir
    cmds = []
    links = host.get_fact(StoreState, root=root)["links"]
    # Several models (the models knob): the set's preset links, as one model's links.
    pairs = [(CURRENT_SET, PREVIOUS_SET)] if cfg.models else [
        ("current.gguf", "previous.gguf"), ("current-mmproj.gguf", "previous-mmproj.gguf")]
    for i, (current, previous) in enumerate(pairs):
        cur = links.get(current)
        prev = links.get(previous)
        if i == 0 and not prev:
            what = "set of models" if cfg.models else "model"
            fail_host(f"no previous {what} in {root} to roll back to")
            return False
        if cur and prev and cur != prev:
            cmds += [link_commands(root, current, prev),
                     link_commands(root, previous, cur)]
    if not cmds:
        return False
    env = t.unit_env(uid)
    server.shell(name="Swap current and previous model", commands=cmds)
    if t.launchd:
        restart, _ = restart_and_logs(t)
        server.shell(name=f"Restart {cfg.service_name} (launchd)", commands=[restart])
    else:
        systemd.service(name=f"Restart {cfg.service_name}",
                        service=t.unit_name, running=True, restarted=True,
                        user_mode=t.rootless, _sudo=t.sudo, _env=env)
    health(cfg, t, env, restarted=True)
    return True
