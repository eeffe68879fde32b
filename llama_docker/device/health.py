"""Bounded waits on the device for an answer, as shell text: the server's /health and a first
completion, and the gateway's health page. The steps run them (tasks/health.py after a
restart, tasks/webui.py after a new UI, tasks/gateway.py after the gateway's restart)."""

from __future__ import annotations

import json
import shlex

from llama_docker.device.progress import WAIT_MARK

PROMPT = {"prompt": "Hello", "n_predict": 4}
GATEWAY_WAIT = 60  # seconds for HAProxy to answer after a (re)start: it starts in well under 1
CHECK_GRACE = 10  # seconds for its first checks (every 2 s) to find each model's devices up


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


def gateway_wait(url: str) -> str:
    """A bounded wait for the gateway's health answer on the device: 200 once every model has
    a device whose check passed. A model still without one after CHECK_GRACE seconds (its
    devices are down) is the status table's news, not a failed run."""
    return (f"for i in $(seq {GATEWAY_WAIT}); do "
            f"c=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 {shlex.quote(url)}); "
            f'[ "$c" = 200 ] && exit 0; [ "$c" = 503 ] && [ $i -gt {CHECK_GRACE} ] && exit 0; '
            f"sleep 1; done; "
            f"echo 'gateway did not answer {url} within {GATEWAY_WAIT}s' >&2; exit 1")
