"""Health: wait (bounded) for /health 200, then ask for a few tokens."""

from __future__ import annotations

import json
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from .facts import HttpStatus
from .preflight import Plan

PROMPT = {"prompt": "Hello", "n_predict": 4}


def local_url(plan: Plan) -> str:
    addr = "127.0.0.1" if plan.cfg.bind in ("0.0.0.0", "::") else plan.cfg.bind
    if ":" in addr:
        addr = f"[{addr}]"
    return f"http://{addr}:{plan.cfg.port}"


def wait_script(url: str, timeout: int) -> str:
    """A bounded poll of /health that names what it waited for, then a short completion."""
    tries = max(timeout // 2, 1)
    body = shlex.quote(json.dumps(PROMPT))
    return (
        f"i=0; code=000; while [ $i -lt {tries} ]; do "
        f"code=$(curl -s -o /dev/null --max-time 2 -w '%{{http_code}}' {url}/health); "
        '[ "$code" = 200 ] && break; i=$((i+1)); sleep 2; done; '
        f'if [ "$code" != 200 ]; then echo "llama-server did not answer {url}/health with 200 '
        f'within {timeout}s (last status $code); see: journalctl -u llama-docker" >&2; '
        "exit 1; fi; "
        f"curl -fsS --max-time 60 -H 'Content-Type: application/json' -d {body} "
        f"{url}/completion | grep -q '\"content\"' || "
        f'{{ echo "llama-server answered /health but {url}/completion failed" >&2; exit 1; }}'
    )


@deploy("Health")
def health(plan: Plan, restarted: bool) -> None:
    """Skip when nothing was restarted and the server already answers 200."""
    url = local_url(plan)
    if not restarted and host.get_fact(HttpStatus, url=f"{url}/health") == 200:
        return
    server.shell(name=f"Wait for {url}/health and a first completion",
                 commands=[wait_script(url, plan.cfg.health_timeout)])
