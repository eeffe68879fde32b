"""macOS service: llama-server (in colima's docker, or Homebrew's with Metal) from a
LaunchAgent rendered from the template."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llama_docker.device import launchd
from llama_docker.device.units import server_args

from ..agents import ensure_agent

if TYPE_CHECKING:
    from ..plan import Plan


def server_program(plan: Plan, image: str, key_file: str | None) -> tuple[str, ...]:
    cfg, t = plan.cfg, plan.target
    common: dict[str, Any] = dict(models_dir=t.models_dir, port=cfg.port, bind=cfg.bind,
                  ctx_size=cfg.ctx_size, threads=plan.threads, mmproj=plan.mmproj is not None,
                  api_key_file=key_file,
                  args=server_args(cfg.cors_origins, cfg.model.args, cfg.server_args,
                                   alias=cfg.model.name))
    assert plan.brew is not None  # preflight refuses a Mac without Homebrew
    if t.native:
        return launchd.native_args(brew=plan.brew, metal=plan.arch == "arm64", **common)
    return launchd.docker_args(brew=plan.brew, image=image, uid=plan.uid, **common)


def serve(plan: Plan, image: str, changed: bool, key_file: str | None) -> bool:
    """Run llama-server from a LaunchAgent; True when it was (re)started in this run."""
    agent = launchd.server_agent(service=plan.cfg.service_name, home=plan.target.home,
                                 program=server_program(plan, image, key_file), env=plan.env)
    return ensure_agent(agent, plan.target.unit_path, restart=changed)

