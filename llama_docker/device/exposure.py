"""Who can use a device's API: anyone on the LAN (`open`), the LAN with the key (`key`), or
the device alone (`local only`). Decided from the bind address and whether a key is set, so
the run and `status` say the same thing; no device is asked.

The default (all interfaces, no key, as the original llama-docker) is `open`: public scans
count hundreds of thousands of LLM servers left that way, so it is said where it is seen.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

OPEN, KEY, LOCAL = "open", "key", "local only"
CLOSE_IT = 'set api_key = "generate" (or bind = "127.0.0.1" to keep it to the device)'


def is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


def lan_access(bind: str | None, key: bool | None) -> str | None:
    """`open`, `key` or `local only`; None when it cannot be told (the key unknown)."""
    if not bind:
        return None
    if is_loopback(bind):
        return LOCAL
    if key is None:
        return None
    return KEY if key else OPEN


def open_line(ports: Mapping[str, list[str]]) -> str | None:
    """The run's one line naming every host that serves the whole LAN without a key (host ->
    what it serves so, e.g. [":8080", ":4000 (gateway)"]), and the knob that closes it."""
    named = [f"{name} {' and '.join(what)}" for name, what in ports.items() if what]
    if not named:
        return None
    return f"open to the whole LAN without a key: {', '.join(named)}; {CLOSE_IT}"
