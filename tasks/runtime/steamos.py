"""SteamOS: podman is preinstalled and `/` is read-only. Nothing is installed: everything
lives under the user's home, and the user's systemd runs the server without a login."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra.facts.files import File
from pyinfra.facts.server import Which
from pyinfra.operations import server

from .. import converge
from ..common import fail_host, ssh_user
from .rootful import registries_conf

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from ..batch import Wanted
    from ..plan import Plan


def _linger(user: str) -> str:
    return f"/var/lib/systemd/linger/{user}"


def _mirror_conf(home: str) -> str:
    return f"{home}/.config/containers/registries.conf.d/50-llama-docker.conf"


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    mirror = converge.file_facts(_mirror_conf(tgt.home)) if cfg.registry_mirror else []
    return [(Which, {"command": "podman"}), (File, {"path": _linger(ssh_user())}), *mirror]


def install(plan: Plan) -> bool:
    known = plan.known
    if not known.get(Which, command="podman"):
        fail_host("podman is missing: SteamOS 3.5 and newer ship it; update SteamOS "
                  "(this deploy never installs packages on its read-only root)")
        return False
    # SteamOS updates may reset linger: apply it on every run (no change when already set).
    if not known.get(File, path=_linger(plan.user)):
        server.shell(name=f"Let {plan.user}'s services run without a login (linger)",
                     commands=[f"loginctl enable-linger {plan.user} 2>/dev/null || "
                               f"sudo -n loginctl enable-linger {plan.user}"])
    if not plan.cfg.registry_mirror:
        return False
    return converge.put_text(known, name="Pull docker.io through the registry mirror "
                                         "(user config)",
                             text=registries_conf(plan.cfg.registry_mirror),
                             dest=_mirror_conf(plan.target.home), mode="644")
