"""Stock operations, skipped when a batch already saw their end state (tasks/batch.py).

Each helper answers from `Known` whether the operation would change anything; only then
does it call the stock operation, which reads its own facts again and does the work. The
check is the operation's own, so a skip never hides a change.
"""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO
from typing import Any

from pyinfra.facts.files import Directory, File, Sha1File
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from pyinfra.operations import files, server, systemd

from .batch import Known, Wanted
from .facts import NumericOwner


def file_facts(path: str) -> list[Wanted]:
    return [(File, {"path": path}), (Sha1File, {"path": path})]


def dir_facts(path: str) -> list[Wanted]:
    return [(Directory, {"path": path})]


def unit_facts(service: str, user_mode: bool) -> list[Wanted]:
    kwargs = {"user_mode": user_mode, "machine": None, "user_name": None,
              "services": [service]}
    return [(SystemdStatus, kwargs), (SystemdEnabled, kwargs)]


def _owned(found: Any, mode: str, user: str | None, group: str | None) -> bool:
    return (bool(found) and found["mode"] == int(mode)
            and user in (None, found["user"]) and group in (None, found["group"]))


def put_text(known: Known, *, name: str, text: str, dest: str, mode: str,
             user: str | None = None, group: str | None = None, **op_args: Any) -> bool:
    """files.put of generated text; True when it changes the device."""
    found = known.get(File, path=dest)
    if (_owned(found, mode, user, group)
            and known.get(Sha1File, path=dest) == hashlib.sha1(text.encode()).hexdigest()):
        return False
    owner: dict[str, Any] = {k: v for k, v in (("user", user), ("group", group)) if v}
    return files.put(name=name, src=StringIO(text), dest=dest, mode=mode, **owner,
                     **op_args).will_change


def owner(known: Known, *, name: str, path: str, uid_gid: str, force: bool = False,
          **op_args: Any) -> bool:
    """chown to a numeric owner (one the device has no name for); True when it changes."""
    if not force and known.get(NumericOwner, path=path) == uid_gid:
        return False
    server.shell(name=name, commands=[f"chown {uid_gid} {shlex.quote(path)}"], **op_args)
    return True


def directory(known: Known, *, name: str, path: str, mode: str, user: str | None = None,
              **op_args: Any) -> bool:
    """files.directory; True when it changes the device."""
    if _owned(known.get(Directory, path=path), mode, user, None):
        return False
    owner: dict[str, Any] = {"user": user} if user else {}
    return files.directory(name=name, path=path, mode=mode, **owner, **op_args).will_change


def absent(known: Known, *, name: str, path: str, **op_args: Any) -> bool:
    """files.file(present=False); True when it removes something."""
    if known.get(File, path=path) is None:
        return False
    return files.file(name=name, path=path, present=False, **op_args).will_change


def removed_unit(*, why: str, service: str, paths: tuple[tuple[str, str], ...],
                 user_mode: bool = False, **op_args: Any) -> None:
    """A unit that has to go: stopped and disabled, its files (path, what) removed, then
    systemd told. The caller checks it is there; op names start with `why`."""
    systemd.service(name=f"{why}: stop {service}", service=service, running=False,
                    enabled=False, user_mode=user_mode, **op_args)
    for path, what in paths:
        files.file(name=f"{why}: remove {what}", path=path, present=False, **op_args)
    systemd.daemon_reload(name=f"{why}: systemd forgets the unit", user_mode=user_mode,
                          **op_args)


def running(known: Known, *, name: str, service: str, restarted: bool = False,
            daemon_reload: bool = False, user_mode: bool = False, **op_args: Any) -> bool:
    """systemd.service running and enabled; True when it (re)starts or enables the unit."""
    status, enabled = (known.get(cls, **kw) for cls, kw in unit_facts(service, user_mode))
    if status.get(service) and enabled.get(service) and not (restarted or daemon_reload):
        return False
    return systemd.service(name=name, service=service, running=True, enabled=True,
                           restarted=restarted, daemon_reload=daemon_reload,
                           user_mode=user_mode, **op_args).will_change

