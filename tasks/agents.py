"""launchd agents on a Mac: upload a plist, (re)load it only when it changed, restart it.

pyinfra's launchd.service only starts and stops jobs, and launchd keeps its own copy of a
loaded plist: a changed plist means bootout + bootstrap; a new model or key with the same
plist means a kickstart. Used by colima's agent (runtime) and the server's (service).
"""

from __future__ import annotations

import io
import shlex

from pyinfra import host
from pyinfra.operations import files, server

from llama_docker.device import launchd
from llama_docker.device.target import Target

from .facts import LaunchAgentLoaded, LaunchdDomain


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


def restart_and_logs(t: Target) -> tuple[str, str]:
    """How health restarts the server after a rollback, and where its log is."""
    domain = host.get_fact(LaunchdDomain)
    return (launchd.kickstart_command(domain, t.agent_label),
            f"tail -n 50 {shlex.quote(launchd.log_path(t.home, t.service))}")
