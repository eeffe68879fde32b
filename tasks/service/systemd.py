"""Linux service: a systemd unit (system, or user on SteamOS) from the template, enabled at
boot, restarted only when the unit, image, model or key changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llama_docker.gpu import container_flags
from llama_docker.units import server_args, systemd_unit

from .. import converge

if TYPE_CHECKING:
    from ..plan import Plan


def serve(plan: Plan, image: str, changed: bool, key_file: str | None) -> bool:
    """Run llama-server from a systemd unit; True when it was (re)started in this run."""
    cfg, t = plan.cfg, plan.target
    unit = systemd_unit(
        runtime=t.runtime, image=image, model_name=cfg.model.name, models_dir=t.models_dir,
        port=cfg.port, bind=cfg.bind, ctx_size=cfg.ctx_size, threads=plan.threads,
        args=server_args(cfg.cors_origins, cfg.model.args, cfg.server_args),
        mmproj=plan.mmproj is not None,
        api_key_file=key_file, rootless=t.rootless, memory_mib=plan.memory_mib,
        gpu_flags=container_flags(t.gpu, t.rootless, cfg.n_gpu_layers,
                                  cfg.lab_only_vk_visible_devices),
    )
    name = f"{cfg.service_name}.service"
    unit_changed = converge.put_text(plan.known, name=f"Unit {name}", text=unit,
                                     dest=t.unit_path, mode="644", _sudo=t.sudo)
    return converge.running(plan.known, name=f"{name} runs now and at boot", service=name,
                            restarted=changed or unit_changed, daemon_reload=unit_changed,
                            user_mode=t.rootless, _sudo=t.sudo, _env=t.unit_env(plan.uid))
