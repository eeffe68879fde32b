"""Service: the API key files, then the server as a systemd unit (Linux) or a launchd agent
(macOS), restarted only when something it runs changed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.facts.files import File

from llama_docker.knobs import apikey

from .. import converge
from ..common import deploy, say
from ..facts import NumericOwner
from . import launchd, systemd

if TYPE_CHECKING:
    from llama_docker.device.target import Target
    from llama_docker.knobs.config import Config

    from ..batch import Wanted
    from ..plan import Plan

SERVER_OWNER = "10001:0"  # the Containerfile's non-root user, group root


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    keys = [f for path in apikey.paths(tgt.config_dir) for f in converge.file_facts(path)]
    keys += [*converge.dir_facts(tgt.config_dir),
             (NumericOwner, {"path": apikey.paths(tgt.config_dir)[0]})]
    if tgt.launchd:
        return keys
    return [*keys, *converge.file_facts(tgt.unit_path),
            *converge.unit_facts(tgt.unit_name, tgt.rootless)]


def _api_key(plan: Plan) -> tuple[str | None, bool]:
    """Install or remove the key files; return (key file on the device, files changed)."""
    t, known = plan.target, plan.known
    key_file, header_file = apikey.paths(t.config_dir)
    key = apikey.resolve(plan.cfg.api_key, Path(plan.cfg.cache_dir).expanduser())
    if key is None:
        removed = [converge.absent(known, name=f"No API key file {path}", path=path,
                                   _sudo=t.sudo) for path in (key_file, header_file)]
        return None, any(removed)
    converge.directory(known, name=t.config_dir, path=t.config_dir,
                       mode="755" if t.sudo else "700", _sudo=t.sudo)
    # Files, never arguments: a key on a command line shows in `ps` and in logs.
    key_changed = converge.put_text(known, name="API key for llama-server (0400)",
                                    text=key + "\n", dest=key_file, mode="400", _sudo=t.sudo)
    if t.sudo:  # root-run: the key is for the server's uid, which has no name on the device
        key_changed |= converge.owner(known, name="API key owned by the server user",
                                      path=key_file, uid_gid=SERVER_OWNER, force=key_changed,
                                      _sudo=True)
    header_changed = converge.put_text(known, name="API key header for the health check "
                                       "(0600)", text=f"Authorization: Bearer {key}\n",
                                       dest=header_file, mode="600", _sudo=t.sudo)
    return key_file, key_changed or header_changed


@deploy("Service")
def service(plan: Plan, image: str, changed: bool) -> bool:
    """Return True when the server is (re)started in this run."""
    t = plan.target
    key_file, key_changed = _api_key(plan)
    serve = launchd.serve if t.launchd else systemd.serve
    return serve(plan, image, changed or key_changed, key_file)


def retire_wants(cfg: Config, tgt: Target) -> list[Wanted]:
    """A gateway-only box's one question: is a server unit of an earlier run still there?"""
    if not cfg.gateway_only or not tgt.system_units:
        return []
    return [(File, {"path": tgt.unit_path})]


@deploy("Retire the server")
def retire(plan: Plan) -> None:
    """A host that served a model and now runs the gateway only (`gateway = "only"`): its
    server stops and its unit goes, so it serves nothing and frees its port for the gateway.
    Its models stay in the store: switching back needs no push."""
    t, name = plan.target, plan.target.unit_name
    if not plan.cfg.gateway_only or not t.system_units \
            or plan.known.get(File, path=t.unit_path) is None:
        return
    converge.removed_unit(why="Gateway only", service=name, paths=((t.unit_path, name),),
                          user_mode=t.rootless, _sudo=t.sudo, _env=t.unit_env(plan.uid))
    say(host, f"gateway only: {name} stopped and removed (its models stay in {t.models_dir})")
