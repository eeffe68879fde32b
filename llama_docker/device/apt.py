"""apt on a Debian device: the waits for the locks another apt holds.

A device's first minutes often belong to apt-daily and unattended-upgrades, which hold apt's
locks (Ansible's apt module waits 60 s for the same reason). dpkg's lock has apt's own
timeout; `apt-get update`'s lock has none, so it is retried while only the lock fails.
"""

from __future__ import annotations

APT_WAIT = 300
APT_LOCK_WAIT = f"-o DPkg::Lock::Timeout={APT_WAIT}"  # apt-get install's own wait


def update_waiting(seconds: int = APT_WAIT, every: int = 5) -> str:
    """`apt-get update`, tried again every `every` s for up to `seconds` while another apt
    holds its lock; any other failure, or the lock still held then, fails at once."""
    return (
        f"end=$(($(date +%s) + {seconds})); while ! out=$(apt-get update 2>&1); do "
        f'case "$out" in *"Could not get lock"*) ;; *) printf "%s\\n" "$out" >&2; exit 100;; '
        f'esac; if [ "$(date +%s)" -ge "$end" ]; then printf "%s\\n" "$out" >&2; exit 100; '
        f'fi; [ -n "${{said:-}}" ] || echo "another apt holds the lock: waiting up to '
        f'{seconds} s" >&2; said=1; sleep {every}; done')
