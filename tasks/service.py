"""Service: a systemd unit from the template, enabled at boot, restarted only on change."""

from __future__ import annotations

import io
from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from llama_docker import apikey
from llama_docker.units import systemd_unit

from .preflight import Plan

SERVER_UID = "10001"  # the Containerfile's non-root user


def _api_key(plan: Plan) -> tuple[bool, bool]:
    """Install or remove the key files; return (key in use, files changed)."""
    key = apikey.resolve(plan.cfg.api_key, Path(plan.cfg.cache_dir).expanduser())
    if key is None:
        ops = [files.file(name=f"No API key file {path}", path=path, present=False, _sudo=True)
               for path in (apikey.KEY_FILE, apikey.HEADER_FILE)]
        return False, any(op.will_change for op in ops)
    files.directory(name=f"{apikey.DEVICE_DIR}", path=apikey.DEVICE_DIR, mode="755",
                    _sudo=True)
    # Files, never arguments: a key on a command line shows in `ps` and in logs.
    ops = [
        files.put(name="API key for llama-server (0400, server user)",
                  src=io.StringIO(key + "\n"), dest=apikey.KEY_FILE, user=SERVER_UID,
                  group="root", mode="400", _sudo=True),
        files.put(name="API key header for the health check (0600, root)",
                  src=io.StringIO(f"Authorization: Bearer {key}\n"), dest=apikey.HEADER_FILE,
                  user="root", group="root", mode="600", _sudo=True),
    ]
    return True, any(op.will_change for op in ops)


@deploy("Service")
def service(plan: Plan, image: str, changed: bool) -> bool:
    """Return True when the server is (re)started in this run."""
    cfg = plan.cfg
    keyed, key_changed = _api_key(plan)
    unit = systemd_unit(
        runtime="docker", image=image, model_name=cfg.model.name, models_dir=cfg.models_dir,
        port=cfg.port, bind=cfg.bind, ctx_size=cfg.ctx_size, threads=plan.threads,
        args=cfg.model.args + cfg.server_args, mmproj=plan.mmproj is not None,
        api_key_file=apikey.KEY_FILE if keyed else None,
    )
    name = f"{cfg.service_name}.service"
    unit_op = files.put(name=f"Unit {name}", src=io.StringIO(unit),
                        dest=f"/etc/systemd/system/{name}", mode="644", _sudo=True)
    unit_changed = unit_op.will_change
    svc = systemd.service(name=f"{name} runs now and at boot", service=name, running=True,
                          enabled=True, restarted=changed or unit_changed or key_changed,
                          daemon_reload=unit_changed, _sudo=True)
    return svc.will_change
