"""Preflight: facts only. Refuse a host with one line before any byte moves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyinfra import host, logger
from pyinfra.facts.server import Arch, Home, Kernel, LinuxDistribution

from llama_docker.device import clock, fit, gpu, profile, target
from llama_docker.knobs import config
from llama_docker.knobs.errors import LlamaDockerError, RefusedError
from llama_docker.knobs.spec import ModelFile
from llama_docker.transfer import webui_fetch
from llama_docker.transfer.local_model import LocalFile, local_file, remote_file

from . import busy_port, gateway, held, lock, router, runtime, split, steps
from .batch import Known, gather
from .common import deploy, fail_host, host_sudo_password, is_dry, knob_data, run_as, say, ssh_user
from .facts import (
    CpuHasAes,
    DeviceClock,
    FreeBytes,
    MacPhysicalCores,
    MemoryBytes,
    PackageArch,
    PhysicalCores,
    StoreState,
    SudoWorks,
    UserId,
    cores_fact,
)
from .gpu import RenderNodes
from .plan import Plan
from .runtime import macos as runtime_macos
from .split_plan import Rpc

# Who the device is, in one round trip: every family's facts (a Mac's answer to a Linux
# question is empty, and the question is not asked again unless a step needs it).
IDENTITY = (Kernel, LinuxDistribution, Home, UserId, Arch, PackageArch, SudoWorks, MemoryBytes,
            PhysicalCores, MacPhysicalCores, CpuHasAes, DeviceClock, RenderNodes)


def device_target(knobs: Mapping[str, Any] | None = None
                  ) -> tuple[config.Config, target.Target, int, Known]:
    """Knobs checked, family detected, target chosen: facts only, nothing changes."""
    data = knob_data(knobs or {})
    cfg = config.load(data)  # pyinfra names the host on every line it prints
    ignored = config.ignored_keys(config.data_keys(data))
    if ignored:  # other deploys' data in a shared inventory: normal, so only under --debug
        host.log(f"host data not used by llama-docker: {', '.join(sorted(ignored))}",
                 log_func=logger.debug)
    ident = gather([(cls, {}) for cls in IDENTITY])
    kernel = ident.get(Kernel)
    meta = ident.get(LinuxDistribution)["release_meta"] if kernel == "Linux" else {}
    kind = profile.detect(kernel, meta)  # refuses any family but the four
    tgt = target.choose(kind, cfg.runtime, cfg.models_dir,
                        ident.get(Home) or f"/home/{ssh_user()}", cfg.service_name)
    tgt = replace(tgt, gpu=gpu.choose(cfg.gpu, kind, tgt.runtime,
                                      gpu.facts_from_json(ident.get(RenderNodes))))
    return cfg, tgt, ident.get(UserId), ident


def device_state(cfg: config.Config, tgt: target.Target, uid: int, env: dict[str, str]
                 ) -> Known:
    """Everything the steps check on a converged device, in one round trip."""
    root = tgt.models_dir
    if cfg.gateway_only:  # no model store, no server: the runtime's and the gateway's facts
        wanted = steps.wants(cfg, tgt)
    else:
        wanted = [(StoreState, {"root": root}), (FreeBytes, {"path": root}),
                  *steps.wants(cfg, tgt), *busy_port.wants(cfg, tgt), *held.wants(cfg, root)]
    return gather(wanted, _sudo=tgt.sudo, _env={**tgt.unit_env(uid), **env})


def _fits(cfg: config.Config, tgt: target.Target, files: list[LocalFile], ident: Known,
          known: Known) -> None:
    """Refuse unless the files fit the device's RAM (with context) and free disk."""
    weights = sum(f.size for f in files)
    kv = fit.kv_cache_bytes(files[0].shape, cfg.ctx_size, files[0].size)
    why = None if cfg.split_over else fit.ram_refusal(  # a split: fitted over its devices
        weights, kv, cfg.ram_margin_mib, ident.get(MemoryBytes), cfg.model.name)
    if why:
        raise RefusedError(why)
    stored = known.get(StoreState, root=tgt.models_dir)["files"]
    missing = sum(f.size for f in files if f"{f.sha256}.ok" not in stored)
    why = fit.disk_refusal(missing, cfg.disk_margin_mib,
                           known.get(FreeBytes, path=tgt.models_dir), tgt.models_dir)
    if why:
        raise RefusedError(why)


def _check_sudo(works: str, user: str) -> None:
    """Refuse unless sudo works: without a password (NOPASSWD), or with the one pyinfra was
    given (`_sudo_password`, `--same-sudo-password`), or asked for (`--use-sudo-password`)."""
    if works == "yes":
        return
    if "password" not in works:
        raise RefusedError(f"sudo does not work for {user}: {works}")
    if not host_sudo_password(host) and getattr(host.state.config, "USE_SUDO_PASSWORD", False):
        host.run_shell_command(command="true", _sudo=True)  # pyinfra's own prompt, once
    password = host_sudo_password(host)
    if not password:
        raise RefusedError(
            f"sudo asks for a password: set _sudo_password in {user}'s host data, run pyinfra "
            f"with --use-sudo-password (it asks), or allow NOPASSWD (echo '{user} ALL=(ALL) "
            "NOPASSWD:ALL' | sudo tee /etc/sudoers.d/llama-docker on the device)")
    ok, out = run_as(host, "true", True, _timeout=60)
    if not ok:
        why = (out.stderr_lines or out.stdout_lines or ["sudo failed"])[-1].strip()
        raise RefusedError(f"sudo refused the password given for {user}: {why}")


def _check(knobs: Mapping[str, Any]) -> Plan:
    cfg, tgt, uid, ident = device_target(knobs)
    skew = clock.skew_refusal(ident.get(DeviceClock), ident.read_at, tgt.profile)
    if skew:  # before anything else: apt and TLS fail on such a device
        raise RefusedError(skew)
    brew = runtime_macos.homebrew() if tgt.is_macos else None
    env = runtime_macos.device_env(brew, tgt.runtime) if brew else {}
    arch = profile.image_arch(ident.get(Arch), ident.get(PackageArch))
    user = ssh_user()
    if tgt.sudo:
        _check_sudo(ident.get(SudoWorks), user)
    gateway.check(cfg, tgt)
    head = split.check(cfg, tgt)  # refuses a split on, or over, a gateway-only box too
    if cfg.gateway_only:
        return _gateway_box(cfg, tgt, uid, env, arch, user, ident, brew)
    if head:
        return _worker_box(cfg, tgt, uid, env, arch, user, ident, head)
    cfg = lock.pin(cfg)  # the lock's sha256 and size: nothing is asked of the files' hosts
    cache = Path(cfg.cache_dir).expanduser()
    specs = [cfg.model.file] + ([cfg.model.mmproj] if cfg.model.mmproj else [])
    known = device_state(cfg, tgt, uid, env)
    # A file the device holds verified is described from the device: never downloaded.
    holding = [] if cfg.models else [held.held(cfg, f, known, tgt.models_dir) for f in specs]
    # Fit first, from what the URL says (sha256, size): nothing is downloaded for a device
    # that cannot run the model (ollama #10920 downloaded 132 GB, then said no).
    seen = [] if cfg.models else [h or (remote_file(f) if f.is_url else local_file(f, cache))
                                  for f, h in zip(specs, holding, strict=True)]
    busy_port.check(cfg, tgt, known, user)
    runtime.check(cfg, tgt, known)
    if cfg.models:  # several models: the set is fitted and fetched by tasks/router.py
        members, models_max, memory_mib = router.prepare(cfg, tgt, ident.get(MemoryBytes),
                                                         known)
        model, mmproj = members[0].model, None
    else:
        model, mmproj, memory_mib = _one_model(cfg, tgt, specs, seen, holding, cache, ident,
                                               known)
        members, models_max = (), 0
    rpc = (split.prepare_head(cfg, model, mmproj.size if mmproj else 0, tgt.unit_path)
           if cfg.split_over else Rpc())
    say(host, tgt.gpu.line())
    threads = cfg.threads or ident.get(cores_fact(tgt))
    # The user's own UI (a folder or tarball here) is checked before any byte moves.
    own_ui = (webui_fetch.local(cfg.webui, cache, cfg.webui_sha256)
              if cfg.webui.startswith(("/", "~")) else None)
    plan = Plan(cfg=cfg, arch=arch, threads=threads, user=user, model=model, mmproj=mmproj,
                target=tgt, uid=uid, memory_mib=memory_mib, aes=ident.get(CpuHasAes),
                known=known, brew=brew, env=env, models=members, models_max=models_max,
                webui=own_ui, rpc=rpc)
    lock.record(plan)  # what was resolved anew goes into the lock file at the end
    return plan


def _gateway_box(cfg: config.Config, tgt: target.Target, uid: int, env: dict[str, str],
                 arch: str, user: str, ident: Known, brew: str | None) -> Plan:
    """`gateway = "only"`: the runtime and the gateway, nothing of a model server. No model is
    fitted, fetched or pushed, no server image built, no llama-server unit written."""
    known = device_state(cfg, tgt, uid, env)
    runtime.check(cfg, tgt, known)
    say(host, "gateway only: this host serves no model")
    return Plan(cfg=cfg, arch=arch, threads=0, user=user, model=None, mmproj=None,
                target=tgt, uid=uid, memory_mib=0, aes=ident.get(CpuHasAes), known=known,
                brew=brew, env=env)


def _worker_box(cfg: config.Config, tgt: target.Target, uid: int, env: dict[str, str],
                arch: str, user: str, ident: Known, head: str) -> Plan:
    """A device in another host's split_over: the runtime, the server image and the RPC
    worker (tasks/split.py). No model is fitted, fetched or pushed here: the head sends the
    worker its layers over the link."""
    known = device_state(cfg, tgt, uid, env)
    runtime.check(cfg, tgt, known)
    say(host, f"rpc worker for {head}: serves no model of its own")
    return Plan(cfg=cfg, arch=arch, threads=cfg.threads or ident.get(cores_fact(tgt)),
                user=user, model=None, mmproj=None, target=tgt, uid=uid, memory_mib=0,
                aes=ident.get(CpuHasAes), known=known, env=env, rpc=Rpc(worker_of=head))


def _one_model(cfg: config.Config, tgt: target.Target, specs: list[ModelFile],
               seen: list[LocalFile], holding: list[LocalFile | None], cache: Path,
               ident: Known, known: Known) -> tuple[LocalFile, LocalFile | None, int]:
    """The model knob's files, fitted (`seen`: from what the URL says), then fetched unless
    the device holds them (`holding`): (model, projector, memory cap MiB)."""
    _fits(cfg, tgt, seen, ident, known)
    if cfg.model_source == "controller":
        # Downloads once (paths are memoized); a dry run plans from what the URL says.
        seen = [h or local_file(f, cache, dry=is_dry())
                for f, h in zip(specs, holding, strict=True)]
        _fits(cfg, tgt, seen, ident, known)  # again, with the context cache from the file
    model, mmproj = seen[0], (seen[1] if len(seen) > 1 else None)
    weights = sum(f.size for f in seen)
    kv = fit.kv_cache_bytes(model.shape, cfg.ctx_size, model.size)
    note = gpu.fit_note(tgt.gpu, weights + kv, tgt.profile)
    if note:
        host.log_styled(f"llama-docker: {note}", fg="yellow", log_func=logger.warning)
    return model, mmproj, fit.memory_limit_mib(weights, kv)


@deploy("Preflight")
def preflight(knobs: Mapping[str, Any] | None = None) -> Plan | None:
    """Check knobs, OS, CPU, sudo, RAM and disk; None (and a failed host) when refused.

    + knobs: knob values that win over host and group data (the packaged deploys' keywords)
    """
    try:
        return _check(knobs or {})
    except LlamaDockerError as exc:
        fail_host(lock.explain(exc))
        return None
