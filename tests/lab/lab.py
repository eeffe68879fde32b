"""Bring the lab up and down: a network, a DNS forwarder, a registry mirror and devices.

Everything the tests touch is published on 127.0.0.1; devices reach the forwarder and the
mirror only over the lab network, which has a fixed subnet clear of docker's default bridge
inside the devices.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import paramiko

from . import images
from .sh import docker, log, out, run, wait_for

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("LLAMA_LAB_DIR", REPO / ".lab"))
NET = "llama-lab"
SUBNET = "198.18.0.0/24"
DNS_IP = "198.18.0.2"
REGISTRY_IP = "198.18.0.3"
REGISTRY = f"{REGISTRY_IP}:5000"
PREFIX = "llama-lab-"

DEVICE_RUN_FLAGS = [
    # `--privileged` is refused on these machines; this is the working equivalent.
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined", "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "--device", "/dev/net/tun", "--device", "/dev/fuse",
]


@dataclass
class Device:
    """One lab device as the controller sees it."""

    name: str
    ip: str
    ssh_port: int
    http_port: int
    user: str = images.DEVICE_USER

    @property
    def container(self) -> str:
        return PREFIX + self.name

    def exec(self, *cmd: str, check: bool = True, timeout: float = 300) -> str:
        """Run a command inside the device as root (the test's view, not the deploy's)."""
        return docker("exec", self.container, *cmd, check=check, capture=True,
                      timeout=timeout).stdout

    def write(self, path: str, data: bytes) -> None:
        """Put bytes into a file on the device, as root, bypassing the deploy."""
        subprocess.run(["docker", "exec", "-i", self.container, "sh", "-c", f"cat > {path}"],
                       input=data, check=True, timeout=120)

    def limit_rate(self, mbit: int | None) -> None:
        """Shape the link from this machine into the device (a slow Wi-Fi); None lifts it."""
        index = self.exec("cat", "/sys/class/net/eth0/iflink").strip()
        veth = next(p.name for p in Path("/sys/class/net").iterdir()
                    if (p / "ifindex").read_text().strip() == index)
        run(["tc", "qdisc", "del", "dev", veth, "root"], check=False, capture=True)
        if mbit:
            run(["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", f"{mbit}mbit",
                 "burst", "256kb", "latency", "100ms"], capture=True)

    def paramiko(self) -> paramiko.SSHClient:
        """A paramiko client made the way pyinfra makes its own: key, pinned known_hosts,
        paramiko's default algorithms."""
        c = paramiko.SSHClient()
        c.load_host_keys(str(STATE / "known_hosts"))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.connect("127.0.0.1", port=self.ssh_port, username=self.user,
                  key_filename=str(STATE / "id_ed25519"), look_for_keys=False,
                  allow_agent=False, timeout=30)
        return c

    def host_data(self) -> dict:
        return {
            "ssh_hostname": "127.0.0.1",
            "ssh_port": self.ssh_port,
            "ssh_user": self.user,
            "ssh_key": str(STATE / "id_ed25519"),
            "ssh_known_hosts_file": str(STATE / "known_hosts"),
            "ssh_strict_host_key_checking": "yes",
        }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _running(name: str) -> bool:
    proc = docker("inspect", "-f", "{{.State.Running}}", name, check=False, capture=True)
    return proc.stdout.strip() == "true"


def _ssh_banner(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        return s.recv(64).startswith(b"SSH-")


def ensure_network() -> None:
    if docker("network", "inspect", NET, check=False, capture=True).returncode != 0:
        docker("network", "create", "--subnet", SUBNET, NET, capture=True)


def ensure_keys() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    key = STATE / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llama-lab", "-f", str(key)])
    resolv, text = STATE / "resolv.conf", f"nameserver {DNS_IP}\n"
    if not resolv.exists() or resolv.read_text() != text:  # running devices mount it
        resolv.write_text(text)


def ensure_dns(infra: str) -> None:
    name = PREFIX + "dns"
    if _running(name):
        return
    docker("rm", "-f", name, check=False, capture=True)
    # Forwards to docker's embedded resolver: the lab never names an outside resolver.
    docker("run", "-d", "--name", name, "--network", NET, "--ip", DNS_IP,
           "--cap-add", "NET_ADMIN", infra, "dnsmasq", "--keep-in-foreground",
           "--no-resolv", "--server=127.0.0.11", f"--listen-address={DNS_IP}",
           "--bind-interfaces", "--cache-size=1000", "--log-facility=-", capture=True)


def ensure_registry(infra: str, forky: str) -> int:
    """Start the registry mirror and put debian:forky-slim in it; return its local port."""
    name = PREFIX + "registry"
    if not _running(name):
        docker("rm", "-f", name, check=False, capture=True)
        docker("run", "-d", "--name", name, "--network", NET, "--ip", REGISTRY_IP,
               "-p", "127.0.0.1::5000", infra, "docker-registry", "serve",
               "/etc/docker/registry/config.yml", capture=True)
    port = int(out("port", name, "5000/tcp").splitlines()[0].rsplit(":", 1)[1])
    wait_for("registry", lambda: _http_ok(f"http://127.0.0.1:{port}/v2/"), seconds=30)
    run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-daemon:{forky}",
         f"docker://127.0.0.1:{port}/library/debian:forky-slim"], capture=True)
    return port


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


@contextmanager
def locked(name: str) -> Iterator[None]:
    """An exclusive lock on STATE/NAME.lock: test workers running side by side share the
    lab's state (devices.json, known_hosts) and its one-time set-up."""
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / f"{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _load_devices() -> dict[str, Device]:
    path = STATE / "devices.json"
    if not path.exists():
        return {}
    return {d["name"]: Device(**d) for d in json.loads(path.read_text())}


def _save_devices(devices: dict[str, Device]) -> None:
    _write_atomic(STATE / "devices.json", json.dumps([asdict(d) for d in devices.values()]))


def _write_atomic(path: Path, text: str) -> None:
    """Readers (pyinfra reading known_hosts) never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# SteamOS: `/` read-only, /etc, /var and /home writable (as on a Deck, where /etc is an
# overlay and updates replace the rest). Named volumes start as copies of the image's folders.
STEAMOS_FLAGS = ["--read-only", "--tmpfs", "/tmp"]
STEAMOS_VOLUMES = ("etc", "var", "home")


def start_device(name: str, image: str, index: int, fresh: bool = False,
                 profile: str = "debian", own_keys: bool = False,
                 run_flags: tuple[str, ...] = ()) -> Device:
    """Start (or reuse, unless `fresh`) a device container and wait until sshd answers.

    `own_keys`: the user's authorized_keys is the device's own file (a copy of the lab's
    key), which a deploy may edit, as on a real device; else the lab's key file mounted
    read-only. `run_flags`: more `docker run` flags, e.g. ("--memory", "700m") for a small
    device (its /proc/meminfo still shows this machine's RAM; its cgroup says the limit)."""
    known = _load_devices()
    dev = known.get(name)
    if dev and _running(dev.container) and not fresh:
        return dev
    user = images.STEAMOS_USER if profile == "steamos" else images.DEVICE_USER
    hostkey = STATE / name / "ssh_host_ed25519_key"
    hostkey.parent.mkdir(parents=True, exist_ok=True)
    if not hostkey.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(hostkey)])
    # Free ports are picked and taken under one lock: workers side by side never pick the same.
    with locked("ports"):
        dev = Device(name=name, ip=f"198.18.0.{10 + index}", ssh_port=_free_port(),
                     http_port=_free_port(), user=user)
        extra: list[str] = [*run_flags]
        if profile == "steamos":
            extra += STEAMOS_FLAGS
            for vol in STEAMOS_VOLUMES:
                extra += ["-v", f"{dev.container}-{vol}:/{vol}"]
        remove_device(dev)
        docker(
            "run", "-d", "--name", dev.container, "--hostname", name,
            "--network", NET, "--ip", dev.ip, *DEVICE_RUN_FLAGS,
            "-v", f"{dev.container}-docker:/var/lib/docker",
            "-v", f"{dev.container}-containers:/var/lib/containers",
            # containerd's own store (docker's containerd image store): overlayfs cannot sit
            # on the device container's own overlay root.
            "-v", f"{dev.container}-containerd:/var/lib/containerd", *extra,
            "-v", f"{hostkey}:/etc/ssh/ssh_host_ed25519_key:ro",
            "-v", f"{STATE / 'id_ed25519.pub'}:" + (
                "/etc/llama-lab-controller.pub:ro" if own_keys
                else f"/home/{dev.user}/.ssh/authorized_keys:ro"),
            "-v", f"{STATE / 'resolv.conf'}:/etc/resolv.conf:ro",
            "-p", f"127.0.0.1:{dev.ssh_port}:22", "-p", f"127.0.0.1:{dev.http_port}:8080",
            image, capture=True,
        )
    if own_keys:
        u = dev.user
        docker("exec", dev.container, "sh", "-c",
               f"install -d -o {u} -m 700 /home/{u}/.ssh && install -o {u} -m 600 "
               f"/etc/llama-lab-controller.pub /home/{u}/.ssh/authorized_keys", capture=True)
    wait_for(f"sshd on {name}", lambda: _ssh_banner(dev.ssh_port), seconds=60)
    with locked("devices"):
        known = _load_devices()
        known[name] = dev
        _save_devices(known)
        _write_known_hosts(known)
    return dev


def _write_known_hosts(devices: dict[str, Device]) -> None:
    lines = []
    for dev in devices.values():
        pub = (STATE / dev.name / "ssh_host_ed25519_key.pub").read_text().split()
        lines.append(f"[127.0.0.1]:{dev.ssh_port} {pub[0]} {pub[1]}")
    _write_atomic(STATE / "known_hosts", "\n".join(lines) + "\n")


def restart_device(dev: Device) -> None:
    """A reboot, as far as a container allows: stop and start, then wait for sshd."""
    docker("restart", "-t", "20", dev.container, capture=True, timeout=120)
    wait_for(f"sshd on {dev.name}", lambda: _ssh_banner(dev.ssh_port), seconds=60)


def remove_device(dev: Device) -> None:
    docker("rm", "-f", "-v", dev.container, check=False, capture=True)
    for vol in ("docker", "containers", "containerd", *STEAMOS_VOLUMES):
        docker("volume", "rm", f"{dev.container}-{vol}", check=False, capture=True)
    with locked("devices"):
        known = _load_devices()
        known.pop(dev.name, None)
        _save_devices(known)


def up(names: list[str]) -> list[Device]:
    tags = images.build_all()
    ensure_network()
    ensure_keys()
    ensure_dns(tags["infra"])
    ensure_registry(tags["infra"], tags["debian-forky"])
    return [start_device(n, tags["device-debian"], i) for i, n in enumerate(names)]


def down() -> None:
    names = docker("ps", "-aq", "--filter", f"name=^{PREFIX}", capture=True).stdout.split()
    if names:
        docker("rm", "-f", "-v", *names, capture=True)
    vols = docker("volume", "ls", "-q", "--filter", f"name=^{PREFIX}", capture=True).stdout.split()
    if vols:
        docker("volume", "rm", *vols, check=False, capture=True)
    docker("network", "rm", NET, check=False, capture=True)
    (STATE / "devices.json").unlink(missing_ok=True)
    log("lab is down")


def write_inventory(devices: list[Device], model: dict, path: Path | None = None) -> Path:
    """A pyinfra inventory for the lab devices, with the lab's own knob values."""
    path = path or STATE / "inventory.py"
    hosts = [(d.name, d.host_data()) for d in devices]
    text = (
        '"""The lab devices, written by `python -m tests.lab up`."""\n\n'
        f"lab = {hosts!r}\n"
    )
    path.write_text(text)
    # pyinfra reads group data from the inventory's folder: keep the lab knobs there.
    (path.parent / "group_data").mkdir(exist_ok=True)
    (path.parent / "group_data" / "lab.py").write_text(
        "# The lab mirror stands in for Docker Hub; its forky snapshot has an expired Release.\n"
        "# The lab reaches nothing but Debian's mirror: Debian's SimpleChat, not GitHub's UI.\n"
        f"registry_mirror = {REGISTRY!r}\napt_check_valid_until = False\nmodel = {model!r}\n"
        'webui = "simplechat"\n'
        f"cache_dir = {str(STATE / 'cache')!r}\n"
    )
    return path


def logs(dev: Device, unit: str = "llama-docker") -> str:
    proc = subprocess.run(
        ["docker", "exec", dev.container, "journalctl", "-u", unit, "-n", "40", "--no-pager"],
        capture_output=True, text=True, timeout=30,
    )
    return proc.stdout + proc.stderr
