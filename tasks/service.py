"""Service: a systemd unit from the template, enabled at boot, restarted only on change."""

from __future__ import annotations

import io
from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from llama_docker import apikey
from llama_docker.units import systemd_unit

from .preflight import Plan
from .service_launchd import serve

SERVER_UID = "10001"  # the Containerfile's non-root user


def _api_key(plan: Plan) -> tuple[str | None, bool]:
    """Install or remove the key files; return (key file on the device, files changed)."""
    t = plan.target
    key_file, header_file = apikey.paths(t.config_dir)
    key = apikey.resolve(plan.cfg.api_key, Path(plan.cfg.cache_dir).expanduser())
    if key is None:
        ops = [files.file(name=f"No API key file {path}", path=path, present=False,
                          _sudo=t.sudo) for path in (key_file, header_file)]
        return None, any(op.will_change for op in ops)
    files.directory(name=t.config_dir, path=t.config_dir, mode="755" if t.sudo else "700",
                    _sudo=t.sudo)
    # Files, never arguments: a key on a command line shows in `ps` and in logs.
    owner = {"user": SERVER_UID, "group": "root"} if t.sudo else {}
    ops = [
        files.put(name="API key for llama-server (0400, server user)",
                  src=io.StringIO(key + "\n"), dest=key_file, mode="400", _sudo=t.sudo,
                  **owner),
        files.put(name="API key header for the health check (0600)",
                  src=io.StringIO(f"Authorization: Bearer {key}\n"), dest=header_file,
                  mode="600", _sudo=t.sudo),
    ]
    return key_file, any(op.will_change for op in ops)


@deploy("Service")
def service(plan: Plan, image: str, changed: bool) -> bool:
    """Return True when the server is (re)started in this run."""
    cfg, t = plan.cfg, plan.target
    key_file, key_changed = _api_key(plan)
    if t.manager == "launchd":
        return serve(plan, image, changed or key_changed, key_file)
    unit = systemd_unit(
        runtime=t.runtime, image=image, model_name=cfg.model.name, models_dir=t.models_dir,
        port=cfg.port, bind=cfg.bind, ctx_size=cfg.ctx_size, threads=plan.threads,
        args=cfg.model.args + cfg.server_args, mmproj=plan.mmproj is not None,
        api_key_file=key_file, rootless=t.rootless, memory_mib=plan.memory_mib,
    )
    name = f"{cfg.service_name}.service"
    unit_op = files.put(name=f"Unit {name}", src=io.StringIO(unit), dest=t.unit_path,
                        mode="644", _sudo=t.sudo)
    unit_changed = unit_op.will_change
    svc = systemd.service(name=f"{name} runs now and at boot", service=name, running=True,
                          enabled=True, restarted=changed or unit_changed or key_changed,
                          daemon_reload=unit_changed, user_mode=t.rootless,
                          _sudo=t.sudo, _env=t.unit_env(plan.uid))
    return svc.will_change
