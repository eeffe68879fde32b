"""The device's own download of a model (direct mode): a resumable curl loop.

curl before 8.17 throws a partial file away when its own `--retry` retries with `-C -`, so
the retry loop is ours: bounded, resuming from the bytes on disk.
"""

from __future__ import annotations

import shlex

ATTEMPTS = 10


def download_script(url: str, part: str, size: int | None) -> str:
    """A bounded `curl -C -` loop: 2xx or a full `.part` ends it, 4xx (but 416) fails it,
    a server that cannot resume (exit 33) restarts the file, anything else is retried."""
    u, p = shlex.quote(url), shlex.quote(part)
    full = f'[ "$(wc -c < {p} 2>/dev/null || echo 0)" -ge {size} ] && exit 0; ' if size else ""
    return (
        f"i=0; while [ $i -lt {ATTEMPTS} ]; do {full}"
        f"code=$(curl -sS -f -L --connect-timeout 15 --speed-limit 1024 --speed-time 60 "
        f"-C - -o {p} -w '%{{http_code}}' {u}); rc=$?; "
        '[ $rc = 0 ] && exit 0; '
        f'[ $rc = 33 ] && rm -f {p}; '
        'case "$code" in 416) exit 0 ;; 4??) echo "HTTP $code" >&2; exit 22 ;; esac; '
        'i=$((i+1)); sleep $((i < 5 ? i : 5)); done; '
        f'echo "gave up after {ATTEMPTS} attempts" >&2; exit 75'
    )
