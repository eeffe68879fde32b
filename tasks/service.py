"""Service: a systemd unit from the template, enabled at boot, restarted only on change."""

from __future__ import annotations

import io

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from llama_docker.units import systemd_unit

from .preflight import Plan


@deploy("Service")
def service(plan: Plan, image: str, changed: bool) -> bool:
    """Return True when the server is (re)started in this run."""
    cfg = plan.cfg
    unit = systemd_unit(
        runtime="docker", image=image, model_name=cfg.model.name, models_dir=cfg.models_dir,
        port=cfg.port, bind=cfg.bind, ctx_size=cfg.ctx_size, threads=plan.threads,
        args=cfg.model.args + cfg.server_args, mmproj=plan.mmproj is not None,
    )
    name = f"{cfg.service_name}.service"
    unit_op = files.put(name=f"Unit {name}", src=io.StringIO(unit),
                        dest=f"/etc/systemd/system/{name}", mode="644", _sudo=True)
    unit_changed = unit_op.will_change
    svc = systemd.service(name=f"{name} runs now and at boot", service=name, running=True,
                          enabled=True, restarted=changed or unit_changed,
                          daemon_reload=unit_changed, _sudo=True)
    return svc.will_change
