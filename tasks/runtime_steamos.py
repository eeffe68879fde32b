"""SteamOS: podman is preinstalled and `/` is read-only. Nothing is installed: everything
lives under the user's home, and the user's systemd runs the server without a login."""

from __future__ import annotations

import io

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.facts.server import Which
from pyinfra.operations import files, server

from .common import fail_host
from .preflight import Plan
from .runtime_rootful import registries_conf


def install(plan: Plan) -> bool:
    if not host.get_fact(Which, command="podman"):
        fail_host("podman is missing: SteamOS 3.5 and newer ship it; update SteamOS "
                  "(this deploy never installs packages on its read-only root)")
        return False
    # SteamOS updates may reset linger: apply it on every run (no change when already set).
    if not host.get_fact(File, path=f"/var/lib/systemd/linger/{plan.user}"):
        server.shell(name=f"Let {plan.user}'s services run without a login (linger)",
                     commands=[f"loginctl enable-linger {plan.user} 2>/dev/null || "
                               f"sudo -n loginctl enable-linger {plan.user}"])
    if not plan.cfg.registry_mirror:
        return False
    home = plan.target.home
    return files.put(name="Pull docker.io through the registry mirror (user config)",
                     src=io.StringIO(registries_conf(plan.cfg.registry_mirror)),
                     dest=f"{home}/.config/containers/registries.conf.d/50-llama-docker.conf",
                     mode="644").will_change
