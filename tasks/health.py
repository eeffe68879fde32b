"""Health: wait (bounded) for /health 200 and a first completion; roll a bad model back."""

from __future__ import annotations

import json
import shlex

from pyinfra.operations import python

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

PROMPT = {"prompt": "Hello", "n_predict": 4}


def wait_script(url: str, timeout: int, header: str, model: str | None = None,
                told: bool = False) -> str:
    """A bounded poll of /health that names what it waited for, then a short completion.

    The completion sends the API key header when the device has one (curl reads it from the
    file: the key never appears on a command line). On a rootful device that file is root's,
    so the whole script runs as root (tasks/common.py run_as: sudo with its password on
    stdin, when it needs one).
    `model`: a router (several models) needs a name in the request: this one when the
    router lists it, else the first it lists (a rollback's set may not have it).
    `told`: each poll's status on stderr (`llama-docker-wait: 503`), for the progress lines.
    """
    tries = max(timeout // 2, 1)
    body = shlex.quote(json.dumps(PROMPT))
    pick = ""
    if model is not None:
        pick = (f"m=$($auth -s --max-time 10 {url}/models | grep -o '\"id\":\"[^\"]*\"' "
                "| cut -d'\"' -f4); "
                f'want={shlex.quote(model)}; echo "$m" | grep -qxF "$want" || '
                'want=$(echo "$m" | head -1); ')
        body = '"{\\"prompt\\": \\"Hello\\", \\"n_predict\\": 4, \\"model\\": \\"$want\\"}"'
    return (
        f"i=0; code=000; while [ $i -lt {tries} ]; do "
        f"code=$(curl -s -o /dev/null --max-time 2 -w '%{{http_code}}' {url}/health); "
        + (f'echo "{WAIT_MARK} $code" >&2; ' if told else "") +
        '[ "$code" = 200 ] && break; i=$((i+1)); sleep 2; done; '
        f'if [ "$code" != 200 ]; then echo "{url}/health did not answer 200 within {timeout}s '
        '(last status $code)"; exit 1; fi; '
        f"if test -f {header}; then auth='curl -H @{header}'; "
        "else auth=curl; fi; "
        f"{pick}$auth -fsS --max-time 60 -H 'Content-Type: application/json' -d {body} "
        f"{url}/completion | grep -q '\"content\"' || "
        f'{{ echo "{url}/health answers but /completion failed"; exit 1; }}'
    )


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
