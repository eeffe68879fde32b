"""Container runtime: one module per device family, chosen by the detected profile."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common import deploy
from . import arch, debian, macos, rootful, steamos

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from ..batch import Known, Wanted
    from ..plan import Plan

INSTALLERS = {"debian": debian.install, "steamos": steamos.install,
              "arch": arch.install, "macos": macos.install}


FACTS = {"debian": debian.wants, "steamos": steamos.wants,
         "arch": arch.wants}
# Families whose installer could break the user's own runtime configuration.
CHECKS = {"debian": debian.check, "arch": rootful.check}


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    """What the family's installer checks (read with the other steps' facts at preflight)."""
    return FACTS[tgt.profile](cfg, tgt) if tgt.profile in FACTS else []


def check(cfg: Config, tgt: Target, known: Known) -> None:
    """Refuse (RefusedError) what the installer would have to break: a user's runtime
    configuration it cannot read. Runs in preflight, before anything changes."""
    if tgt.profile in CHECKS:
        CHECKS[tgt.profile](cfg, tgt, known)


@deploy("Container runtime")
def runtime(plan: Plan) -> bool:
    """Install and start the runtime; True when its configuration changed this run."""
    return INSTALLERS[plan.profile](plan)
