"""Preflight: facts only. Refuse a host with one line before any byte moves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.hardware import Memory
from pyinfra.facts.server import Arch, Kernel, LinuxDistribution

from llama_docker import config, fit, profile
from llama_docker.controller import LocalFile, local_file
from llama_docker.errors import LlamaDockerError, RefusedError
from llama_docker.push import Store

from .common import fail_host
from .facts import FreeBytes, PhysicalCores, SudoWorks


@dataclass(frozen=True)
class Plan:
    """What the later steps need, decided once per host."""

    cfg: config.Config
    profile: str
    arch: str
    threads: int
    user: str
    model: LocalFile
    mmproj: LocalFile | None
    store: Store


def _present(store: Store, sha: str) -> bool:
    from pyinfra.facts.files import File

    return bool(host.get_fact(File, path=store.marker(sha)))


def _check() -> Plan:
    cfg = config.load(host.data, host.name)
    kind = profile.detect(host.get_fact(Kernel), host.get_fact(LinuxDistribution)["release_meta"])
    if kind != "debian":
        raise RefusedError(f"{kind} devices are not supported by this version")
    arch = profile.image_arch(host.get_fact(Arch))
    if not host.get_fact(SudoWorks):
        raise RefusedError("sudo asks for a password: allow NOPASSWD for this user "
                           "(echo 'USER ALL=(ALL) NOPASSWD:ALL' | sudo tee "
                           "/etc/sudoers.d/llama-docker) or run pyinfra with --sudo-password")
    cache = Path(cfg.cache_dir).expanduser()
    model = local_file(cfg.model.file, cache)
    mmproj = local_file(cfg.model.mmproj, cache) if cfg.model.mmproj else None
    files = [model] + ([mmproj] if mmproj else [])
    weights = sum(f.size for f in files)
    kv = fit.kv_cache_bytes(model.shape, cfg.ctx_size)
    ram_mb = host.get_fact(Memory)
    why = fit.ram_refusal(weights, kv, cfg.ram_margin_mib,
                          ram_mb * fit.MIB if ram_mb else None, cfg.model.name)
    if why:
        raise RefusedError(why)
    store = Store(cfg.models_dir)
    missing = sum(f.size for f in files if not _present(store, f.sha256))
    why = fit.disk_refusal(missing, cfg.disk_margin_mib,
                           host.get_fact(FreeBytes, path=cfg.models_dir), cfg.models_dir)
    if why:
        raise RefusedError(why)
    threads = cfg.threads or host.get_fact(PhysicalCores)
    user = host.data.get("ssh_user") or "root"
    return Plan(cfg=cfg, profile=kind, arch=arch, threads=threads, user=user, model=model,
                mmproj=mmproj, store=store)


@deploy("Preflight")
def preflight() -> Plan | None:
    """Check knobs, OS, CPU, sudo, RAM and disk; None (and a failed host) when refused."""
    try:
        return _check()
    except LlamaDockerError as exc:
        fail_host(str(exc))
        return None
