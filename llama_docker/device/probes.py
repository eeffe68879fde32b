"""Shell text that reads a fact from a device, written once: the deploy's facts
(tasks/facts.py) and the status probe (llama_docker/status/probe.py) send the same command,
so both see the same number."""

from __future__ import annotations


def free_kib(path: str) -> str:
    """Shell printing the free KiB on the filesystem that holds `path`, or its nearest
    existing parent (the store's folder may not exist yet on a first deploy).

    + path: a shell word, already quoted (`shlex.quote(...)`, or `"$d"` for a variable)
    """
    return (f"p={path}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
            "df -Pk \"$p\" | awk 'NR==2 {print $4}'")
