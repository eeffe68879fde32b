"""Container runtime: one module per device family, chosen by the detected profile."""

from __future__ import annotations

from pyinfra.api import deploy

from . import runtime_arch, runtime_debian, runtime_macos, runtime_steamos
from .preflight import Plan

INSTALLERS = {"debian": runtime_debian.install, "steamos": runtime_steamos.install,
              "arch": runtime_arch.install, "macos": runtime_macos.install}


@deploy("Container runtime")
def runtime(plan: Plan) -> bool:
    """Install and start the runtime; True when its configuration changed this run."""
    return INSTALLERS[plan.profile](plan)
