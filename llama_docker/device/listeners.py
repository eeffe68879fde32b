"""Who listens on the server's port, and whether it is our own server: pure text in, a verdict out.

A port held by someone else's service means llama-server cannot bind, and the health check
would then wait its whole timeout talking to the wrong program (a 404 for every try). The
preflight reads the listeners (`ss -ltnp` on Linux, `lsof` on macOS) and refuses the host in
one line, naming the process, before anything is installed.

Our own server is recognised by what holds the port for it, not by a name alone: a port
publisher (docker-proxy, conmon, rootlessport, pasta, ...) counts as ours only while our
container publishes that very port; on a Mac running llama-server natively, only the pid
launchd runs for our agent counts. Another container publishing the port is someone else's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Processes that hold a published port on behalf of a container (docker's userland proxy,
# podman's conmon for rootful ports, rootless podman's rootlessport / pasta / slirp4netns,
# colima's port forwarder on a Mac).
PUBLISHERS = ("docker-proxy", "conmon", "rootlessport", "rootlessport-child", "pasta",
              "pasta.avx2", "slirp4netns", "limactl", "ssh")
_USER = re.compile(r'\("([^"]*)",pid=(\d+)')
_WILDCARDS = ("0.0.0.0", "*", "::", "[::]")


@dataclass(frozen=True)
class Listener:
    """One process listening on the port ('' and 0 when this user may not see which)."""

    address: str
    name: str
    pid: int


def parse(lines: list[str]) -> list[Listener]:
    """The PortListeners fact's output: each line tagged with the tool that printed it."""
    tagged: dict[str, list[str]] = {"ss": [], "lsof": [], "netstat": []}
    for line in lines:
        tag, _, rest = line.partition(" ")
        if tag in tagged:
            tagged[tag].append(rest)
    found = parse_ss(tagged["ss"]) + parse_lsof(tagged["lsof"])
    # macOS: lsof sees only this user's processes; netstat sees every socket, not its owner.
    seen = {x.address for x in found}
    return found + [x for x in parse_netstat(tagged["netstat"]) if x.address not in seen]


def parse_ss(lines: list[str]) -> list[Listener]:
    """`ss -ltnp` lines: State Recv-Q Send-Q Local:Port Peer:Port [users:(("name",pid=N,..))]."""
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue  # the header, or a line of something else
        address = fields[3].rsplit(":", 1)[0]
        users = _USER.findall(line)
        found += [Listener(address, name, int(pid)) for name, pid in users] \
            or [Listener(address, "", 0)]
    return found


def parse_lsof(lines: list[str]) -> list[Listener]:
    """`lsof -F pcn` lines: p<pid>, c<command>, n<address:port> (one process, then its files)."""
    found, pid, name = [], 0, ""
    for line in lines:
        tag, value = line[:1], line[1:]
        if tag == "p":
            pid, name = int(value) if value.isdigit() else 0, ""
        elif tag == "c":
            name = value
        elif tag == "n":
            found.append(Listener(value.rsplit(":", 1)[0], name, pid))
    return found


def parse_netstat(lines: list[str]) -> list[Listener]:
    """macOS `netstat -an -p tcp` LISTEN lines: the local address is `*.8080` / `a.b.c.d.8080`."""
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[-1] == "LISTEN":
            found.append(Listener(fields[3].rsplit(".", 1)[0], "", 0))
    return found


def published_ports(lines: list[str]) -> set[int]:
    """Host ports from `docker port <container>` / `podman port`: `8080/tcp -> 0.0.0.0:8080`."""
    ports = set()
    for line in lines:
        _, arrow, host = line.partition("->")
        port = host.strip().rsplit(":", 1)[-1]
        if arrow and port.isdigit():
            ports.add(int(port))
    return ports


def _overlaps(address: str, bind: str) -> bool:
    """Whether a socket on `address` keeps us from binding `bind` (a wildcard meets all)."""
    address = address.strip("[]").split("%", 1)[0]  # [::1], fe80::1%eth0
    return address in _WILDCARDS or bind in _WILDCARDS or address == bind


def _ours(listener: Listener, port: int, published: set[int], agent_pid: int | None) -> bool:
    if agent_pid and listener.pid == agent_pid:
        return True
    return port in published and (listener.name in PUBLISHERS or not listener.name)


def foreign(listeners: list[Listener], port: int, bind: str, published: set[int],
            agent_pid: int | None = None) -> Listener | None:
    """The first listener that would keep our server from binding `bind:port`, if any."""
    for listener in listeners:
        if _overlaps(listener.address, bind) and not _ours(listener, port, published,
                                                             agent_pid):
            return listener
    return None


def refusal(listener: Listener, port: int, user: str) -> str:
    """The one line a refused host gets."""
    who = (f"{listener.name} (pid {listener.pid})" if listener.name
           else f"a process {user} cannot see")
    return f"port {port} is in use by {who}: set the port knob to a free port"
