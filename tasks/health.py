"""Health: wait (bounded) for /health 200 and a first completion; roll a bad model back."""

from __future__ import annotations

import shlex

from pyinfra.operations import python

from llama_docker.device.health import wait_script
from llama_docker.device.progress import WAIT_MARK, Ticker, waited
from llama_docker.device.store import link_commands
from llama_docker.device.target import Target, server_url
from llama_docker.knobs.apikey import paths
from llama_docker.knobs.config import Config

from .agents import restart_and_logs
from .batch import Known, Wanted
from .common import deploy, run_as, say_error
from .facts import HttpStatus
from .plan import Switch
from .progress import run_shown


def _healthy(h, script: str, sudo: bool, url: str = "",  # noqa: ANN001
             timeout: int = 0) -> tuple[bool, str]:
    """The wait, said at least every 30 s while it lasts (what it waits for, how long of
    how long, what /health answers); (healthy, why not)."""
    ticker = Ticker(f"waiting for {url}/health", limit=timeout or None, pick=waited)
    ok, lines = run_shown(h, script, sudo, ticker, timeout=3 * timeout + 120 if timeout
                          else 3600)
    return ok, " ".join(line for line in lines if not line.startswith(WAIT_MARK)).strip()


def _wait(state, host, url: str, script: str, service: str, root: str,  # noqa: ANN001
          rollback: dict[str, str], restart: str, env: dict[str, str], logs: str,
          sudo: bool, timeout: int = 0) -> bool:
    ok, why = _healthy(host, script, sudo, url, timeout)
    if ok:
        return True
    if not rollback:
        say_error(host, f"{why}; see: {logs}")
        return False
    cmds = [link_commands(root, link, target) for link, target in rollback.items()]
    host.run_shell_command(command=" && ".join(cmds))
    run_as(host, restart, sudo, _env=env)
    back, _ = _healthy(host, script, sudo, url, timeout)
    old = rollback.get("current.gguf") or rollback.get("current-set.ini")
    state_now = "it answers again" if back else "it does not answer either"
    say_error(host, f"the new model failed its health check ({why}); rolled back to {old}, "
                    f"{state_now}; see: {logs}")
    return False


def wants(cfg: Config, tgt: Target) -> list[Wanted]:
    return [(HttpStatus, {"url": f"{server_url(cfg)}/health"})]


@deploy("Health")
def health(cfg: Config, t: Target, env: dict[str, str], restarted: bool,
           switch: Switch | None = None, known: Known | None = None) -> None:
    """Skip when nothing was restarted and the server already answered 200 at preflight."""
    url = server_url(cfg)
    if not restarted and known and known.get(HttpStatus, url=f"{url}/health") == 200:
        return
    rollback: dict[str, str] = {}
    if switch and switch.changed and (switch.before.get("current.gguf")
                                      or switch.before.get("current-set.ini")):
        rollback = {link: target for link, target in switch.before.items() if target}
    service = t.unit_name
    restart = f"{t.systemctl} restart {shlex.quote(service)}"
    logs = f"{t.journalctl} -u {service}"
    if t.launchd:
        restart, logs = restart_and_logs(t)
    script = wait_script(url, cfg.health_timeout, paths(t.config_dir)[1],
                         cfg.models[0].name if cfg.models else None, told=True)
    python.call(name=f"Wait for {url}/health and a first completion", function=_wait,
                url=url, script=script, service=service, root=t.models_dir,
                rollback=rollback, restart=restart, env=env, logs=logs, sudo=t.sudo,
                timeout=cfg.health_timeout)
