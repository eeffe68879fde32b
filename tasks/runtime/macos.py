"""macOS: Homebrew's colima + docker (a Linux VM), or Homebrew's llama.cpp (Metal, no VM).

Everything runs as the SSH user, nothing with sudo: formulae from Homebrew (its PATH set
explicitly: SSH sessions do not have it), LaunchAgents under ~/Library/LaunchAgents.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.operations import brew, files, server

from llama_docker.device import fit, launchd
from llama_docker.knobs.errors import RefusedError

from ..agents import ensure_agent
from ..common import say
from ..facts import ColimaRunning, HomebrewPrefix, LaunchdDomain

if TYPE_CHECKING:
    from ..plan import Plan

BREW_INSTALL = ('/bin/bash -c "$(curl -fsSL '
                'https://raw.githubusercontent.com/Homebrew/install/HEAD/install.sh)"')
FORMULAE = {"docker": ("colima", "docker"), "native": ("llama.cpp",)}
COLIMA_START_SECONDS = 600  # the first start downloads colima's VM image


def homebrew() -> str:
    """Homebrew's prefix; refuses the Mac, before anything changes, when there is none."""
    prefix = host.get_fact(HomebrewPrefix)
    if prefix is None:
        raise RefusedError("Homebrew is missing (no /opt/homebrew/bin/brew nor "
                           f"/usr/local/bin/brew); install it on the Mac: {BREW_INSTALL}")
    return prefix


def device_env(prefix: str, runtime: str) -> dict[str, str]:
    """What every command on the Mac needs: brew's PATH and, for docker, colima's context."""
    env = {"PATH": launchd.brew_path(prefix)}
    if runtime == "docker":
        env["DOCKER_CONTEXT"] = launchd.colima_context()
    return env


def vm_memory_gib(plan: Plan) -> int:
    """colima's VM holds the model, its context cache and the margin, plus 1 GiB of its own."""
    assert plan.model is not None  # None only on a gateway-only box, which runs no server
    weights = plan.model.size + (plan.mmproj.size if plan.mmproj else 0)
    need = (weights + fit.kv_cache_bytes(plan.model.shape, plan.cfg.ctx_size)
            + plan.cfg.ram_margin_mib * fit.MIB)
    return max(2, math.ceil(need / fit.GIB) + 1)  # 2 GiB: colima's own default


def install(plan: Plan) -> bool:
    """Install the formulae; for docker, run colima from an agent. True when colima started."""
    t, env = plan.target, plan.env
    wanted = FORMULAE[t.runtime]
    brew.packages(name=f"Install {' and '.join(wanted)} from Homebrew", packages=list(wanted),
                  _env=env)
    files.directory(name="Log folder", path=f"{t.home}/{launchd.LOG_DIR}", mode="755")
    if host.get_fact(LaunchdDomain).startswith("user/"):
        say(host, "nobody is logged in at this Mac's screen: the server runs now, and after a "
                  "restart from your login on (or turn on automatic login)")
    if t.native:
        return False
    return _colima(plan, env)


def _colima(plan: Plan, env: dict[str, str]) -> bool:
    assert plan.brew is not None  # preflight refuses a Mac without Homebrew
    home = plan.target.home
    agent = launchd.colima_agent(brew=plan.brew, home=home, cpus=plan.threads,
                                 memory_gib=vm_memory_gib(plan))
    started = ensure_agent(agent, f"{home}/Library/LaunchAgents/{agent.label}.plist",
                           before=(launchd.colima_stop_command(plan.brew),))
    # `brew services start colima` says "started" without a running VM: ask colima itself.
    if started or not host.get_fact(ColimaRunning, profile=launchd.COLIMA_PROFILE, _env=env):
        server.shell(name="Wait for colima's VM and its docker",
                     commands=[launchd.colima_wait(COLIMA_START_SECONDS, agent.log)], _env=env)
        return True
    return False
