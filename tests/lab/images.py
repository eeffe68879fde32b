"""Lab images built locally with mmdebstrap, cached as docker images tagged by recipe hash.

Nothing is pulled from a registry: these machines cannot reach Docker Hub, so every image
the lab runs is bootstrapped from Debian's own packages.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .sh import docker, log, run

# Forky's Release file on the package mirror may be past its Valid-Until date.
NO_VALID_UNTIL = 'Acquire::Check-Valid-Until "false"'

DEVICE_SSHD = """\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
ClientAliveInterval 30
"""

# Containers never reach network-online.target by themselves; podman user units wait on it.
NETWORK_ONLINE_UNIT = """\
[Unit]
Description=Lab: mark the network online inside a container
DefaultDependencies=no
Before=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true

[Install]
WantedBy=network-online.target
"""

# Nested docker/podman hand their containers 8.8.8.8 when resolv.conf points at loopback.
# The lab forbids outside resolvers: every port-53 packet goes to the lab forwarder.
DNS_GUARD_SCRIPT = """\
#!/bin/sh
set -eu
ns=$(awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf)
for chain in OUTPUT PREROUTING; do
  for proto in udp tcp; do
    rule="-p $proto --dport 53 ! -d $ns -j DNAT --to-destination $ns:53"
    iptables -t nat -C $chain $rule 2>/dev/null || iptables -t nat -I $chain 1 $rule
  done
done
"""

DNS_GUARD_UNIT = """\
[Unit]
Description=Lab: send every DNS packet to the lab forwarder
DefaultDependencies=no
Before=network.target docker.service podman.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-dns-guard

[Install]
WantedBy=multi-user.target
"""

REGISTRY_CONFIG = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/docker-registry
  delete:
    enabled: true
http:
  addr: :5000
"""


@dataclass(frozen=True)
class Recipe:
    """An mmdebstrap recipe; its hash names the cached image."""

    name: str
    suite: str
    packages: tuple[str, ...]
    files: dict[str, str] = field(default_factory=dict)
    hooks: tuple[str, ...] = ()
    aptopts: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ("/lib/systemd/systemd",)
    arch: str = ""

    def digest(self) -> str:
        blob = json.dumps(self.__dict__, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def tag(self) -> str:
        return f"llama-lab/{self.name}:{self.digest()}"


def _file_hooks(files: dict[str, str], staging: Path) -> list[str]:
    hooks = []
    for i, (path, text) in enumerate(sorted(files.items())):
        src = staging / f"f{i}"
        src.write_text(text)
        hooks.append(f'mkdir -p "$1{Path(path).parent}" && cp {src} "$1{path}"')
    return hooks


DEVICE_USER = "pi"

DEVICE = Recipe(
    name="device-debian",
    suite="bookworm",
    packages=(
        "systemd", "systemd-sysv", "openssh-server", "sudo", "curl", "ca-certificates",
        "iproute2", "dbus", "iptables", "procps", "less",
    ),
    files={
        "/etc/ssh/sshd_config.d/lab.conf": DEVICE_SSHD,
        "/etc/systemd/system/lab-network-online.service": NETWORK_ONLINE_UNIT,
        "/etc/systemd/system/lab-dns-guard.service": DNS_GUARD_UNIT,
        "/usr/local/sbin/lab-dns-guard": DNS_GUARD_SCRIPT,
        f"/etc/sudoers.d/{DEVICE_USER}": f"{DEVICE_USER} ALL=(ALL) NOPASSWD:ALL\n",
    },
    hooks=(
        'chmod 755 "$1/usr/local/sbin/lab-dns-guard"; chmod 440 "$1/etc/sudoers.d/pi"',
        'rm -f "$1"/etc/ssh/ssh_host_*',
        f'chroot "$1" useradd -m -s /bin/bash -G sudo {DEVICE_USER}',
        f'install -d -m 700 -o 1000 -g 1000 "$1/home/{DEVICE_USER}/.ssh"',
        'chroot "$1" systemctl enable lab-network-online.service lab-dns-guard.service',
        'chroot "$1" systemctl mask systemd-modules-load.service getty@tty1.service',
        'echo "raspberrypi" > "$1/etc/hostname"',
    ),
)

INFRA = Recipe(
    name="infra",
    suite="bookworm",
    packages=("docker-registry", "dnsmasq-base", "ca-certificates"),
    files={"/etc/docker/registry/config.yml": REGISTRY_CONFIG},
    cmd=("/bin/sh",),
)

# Stands in for docker.io/library/debian:forky-slim, served by the lab registry mirror.
FORKY = Recipe(
    name="debian-forky",
    suite="forky",
    packages=(),
    aptopts=(NO_VALID_UNTIL,),
    hooks=('rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',),
    cmd=("bash",),
)


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, capture=True).returncode == 0


def build(recipe: Recipe) -> str:
    """Build the recipe's image unless a cached one with the same hash exists."""
    tag = recipe.tag
    if image_exists(tag):
        return tag
    log(f"building lab image {tag} with mmdebstrap ({recipe.suite})")
    with tempfile.TemporaryDirectory(prefix="lab-img-") as tmp:
        staging = Path(tmp)
        tar = staging / "rootfs.tar"
        cmd = ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root"]
        if recipe.arch:
            cmd.append(f"--architectures={recipe.arch}")
        if recipe.packages:
            cmd.append("--include=" + ",".join(recipe.packages))
        cmd += [f"--aptopt={opt}" for opt in recipe.aptopts]
        hooks = _file_hooks(recipe.files, staging) + list(recipe.hooks)
        cmd += [f"--customize-hook={hook}" for hook in hooks]
        cmd += [recipe.suite, str(tar)]
        run(cmd)
        change = "CMD " + json.dumps(list(recipe.cmd))
        docker("import", "-c", change, str(tar), tag)
    return tag


def build_all() -> dict[str, str]:
    return {r.name: build(r) for r in (DEVICE, INFRA, FORKY)}


if __name__ == "__main__":  # pragma: no cover - manual use
    print(build_all())
    subprocess.run(["docker", "images", "llama-lab/*"], check=False)
