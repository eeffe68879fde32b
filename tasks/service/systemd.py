"""Linux service: a systemd unit (system, or user on SteamOS) from the template, enabled at
boot, restarted only when the unit, image, model or key changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_docker.device import webui
from llama_docker.device.gpu import container_flags
from llama_docker.device.router_preset import CURRENT_SET
from llama_docker.device.units import server_args, systemd_unit

from .. import converge
from ..gpu import lab_visible_devices
from ..router import MOUNT

if TYPE_CHECKING:
    from ..plan import Plan


def router_unit(plan: Plan) -> dict[str, Any]:
    """What a unit serving several models changes: the preset instead of a model, and each
    model's own args in the preset rather than on the command line."""
    return {"preset": f"{MOUNT}/{CURRENT_SET}", "models_max": plan.models_max,
            "model_name": ", ".join(m.spec.name for m in plan.models), "mmproj": False,
            "args": (*webui.server_args(plan.cfg.webui),
                     *server_args(plan.cfg.cors_origins, (), plan.cfg.server_args))}


def serve(plan: Plan, image: str, changed: bool, key_file: str | None) -> bool:
    """Run llama-server from a systemd unit; True when it was (re)started in this run."""
    cfg, t = plan.cfg, plan.target
    # A split's head: on the device's network, to reach its links on 127.0.0.1 (tasks/split.py).
    split = (("--host", cfg.bind, "--port", str(cfg.port), *plan.rpc.server_args)
             if plan.rpc.is_head else ())
    unit = systemd_unit(**{
        **dict(runtime=t.runtime, image=image, model_name=cfg.model.name,
               models_dir=t.models_dir, port=cfg.port, bind=cfg.bind, ctx_size=cfg.ctx_size,
               threads=plan.threads,
               args=(*webui.server_args(cfg.webui), *split,
                     *server_args(cfg.cors_origins, cfg.model.args, cfg.server_args,
                                  alias=cfg.model.name)),
               mmproj=plan.mmproj is not None, host_network=plan.rpc.is_head,
               api_key_file=key_file, rootless=t.rootless, memory_mib=plan.memory_mib,
               gpu_flags=container_flags(t.gpu, t.rootless, cfg.n_gpu_layers,
                                         lab_visible_devices())),
        **(router_unit(plan) if plan.models else {}),
    })
    name = t.unit_name
    unit_changed = converge.put_text(plan.known, name=f"Unit {name}", text=unit,
                                     dest=t.unit_path, mode="644", _sudo=t.sudo)
    return converge.running(plan.known, name=f"{name} runs now and at boot", service=name,
                            restarted=changed or unit_changed, daemon_reload=unit_changed,
                            user_mode=t.rootless, _sudo=t.sudo, _env=t.unit_env(plan.uid))
