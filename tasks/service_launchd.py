"""macOS service: launchd agents from the template, (re)loaded only when they change.

pyinfra's launchd.service only starts and stops jobs, and launchd keeps its own copy of a
loaded plist: a changed plist means bootout + bootstrap; a new model or key with the same
plist means a kickstart.
"""

from __future__ import annotations

import io
import shlex
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.operations import files, server

from llama_docker import launchd
from llama_docker.target import Target
from llama_docker.units import server_args

from .facts import LaunchAgentLoaded, LaunchdDomain

if TYPE_CHECKING:
    from .preflight import Plan


def ensure_agent(agent: launchd.Agent, path: str, restart: bool = False,
                 before: tuple[str, ...] = ()) -> bool:
    """Upload the agent's plist and make launchd run it; True when it was (re)started.

    + before: commands run between bootout and bootstrap when the plist changed
    """
    text = launchd.render(agent)  # raises PlistError before anything is uploaded
    domain = host.get_fact(LaunchdDomain)
    changed = files.put(name=f"Agent {agent.label}", src=io.StringIO(text), dest=path,
                        mode="644").will_change
    loaded = host.get_fact(LaunchAgentLoaded, target=f"{domain}/{agent.label}")
    if changed or not loaded:
        out, enable, boot = launchd.reload_commands(domain, agent.label, path)
        server.shell(name=f"Load {agent.label} ({domain})",
                     commands=[out, *(before if changed else ()), enable, boot])
        return True
    if restart:
        server.shell(name=f"Restart {agent.label}",
                     commands=[launchd.kickstart_command(domain, agent.label)])
        return True
    return False


def server_program(plan: Plan, image: str, key_file: str | None) -> tuple[str, ...]:
    cfg, t = plan.cfg, plan.target
    common = dict(models_dir=t.models_dir, port=cfg.port, bind=cfg.bind,
                  ctx_size=cfg.ctx_size, threads=plan.threads, mmproj=plan.mmproj is not None,
                  api_key_file=key_file,
                  args=server_args(cfg.cors_origins, cfg.model.args, cfg.server_args))
    assert plan.brew is not None  # preflight refuses a Mac without Homebrew
    if t.runtime == "native":
        return launchd.native_args(brew=plan.brew, metal=plan.arch == "arm64", **common)
    return launchd.docker_args(brew=plan.brew, image=image, uid=plan.uid, **common)


def serve(plan: Plan, image: str, changed: bool, key_file: str | None) -> bool:
    """Run llama-server from a LaunchAgent; True when it was (re)started in this run."""
    agent = launchd.server_agent(service=plan.cfg.service_name, home=plan.target.home,
                                 program=server_program(plan, image, key_file), env=plan.env)
    return ensure_agent(agent, plan.target.unit_path, restart=changed)


def restart_and_logs(t: Target, service: str) -> tuple[str, str]:
    """How health restarts the server after a rollback, and where its log is."""
    domain = host.get_fact(LaunchdDomain)
    return (launchd.kickstart_command(domain, launchd.label(service)),
            f"tail -n 50 {shlex.quote(launchd.log_path(t.home, service))}")
