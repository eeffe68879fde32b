"""Container runtime: one module per device family, chosen by the detected profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra.api import deploy

from . import runtime_arch, runtime_debian, runtime_macos, runtime_rootful, runtime_steamos

if TYPE_CHECKING:
    from llama_docker.config import Config
    from llama_docker.target import Target

    from .batch import Known, Wanted
    from .preflight import Plan

INSTALLERS = {"debian": runtime_debian.install, "steamos": runtime_steamos.install,
              "arch": runtime_arch.install, "macos": runtime_macos.install}


FACTS = {"debian": runtime_debian.wants, "steamos": runtime_steamos.wants,
         "arch": runtime_arch.wants}


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    """What the family's installer checks (read with the other steps' facts at preflight)."""
    return FACTS[tgt.profile](cfg, tgt) if tgt.profile in FACTS else []


def check(cfg: Config, tgt: Target, known: Known) -> None:
    """Refuse (RefusedError) what the installer would have to break: a user's runtime
    configuration it cannot read. Runs in preflight, before anything changes."""
    if tgt.profile in ("debian", "arch"):
        runtime_rootful.check(cfg, tgt, known)


@deploy("Container runtime")
def runtime(plan: Plan) -> bool:
    """Install and start the runtime; True when its configuration changed this run."""
    return INSTALLERS[plan.profile](plan)
