"""Lab images built locally with mmdebstrap, cached as docker images tagged by recipe hash.

Nothing is pulled from a registry: these machines cannot reach Docker Hub, so every image
the lab runs is bootstrapped from Debian's own packages.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from .sh import docker, log, out, run

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

STEAMOS_RELEASE = """\
NAME="SteamOS"
PRETTY_NAME="SteamOS"
VERSION_CODENAME=holo
ID=steamos
ID_LIKE=arch
VARIANT_ID=steamdeck
VERSION_ID=3.6.19
BUILD_ID=lab
HOME_URL="https://www.steampowered.com/"
"""

# SteamOS has no apt and must never be given packages: these stubs log and fail, so a deploy
# that takes a wrong branch fails loudly. Queries (podman info runs `dpkg -S`) still work.
FORBIDDEN_STUB = """\
#!/bin/sh
echo "$(date -Is) $0 $*" >> /var/log/lab-forbidden.log
echo "lab: $0 is not available on SteamOS" >&2
exit 100
"""

DPKG_STUB = """\
#!/bin/sh
case "$1" in
  -S|--search|-s|--status|-l|--list|-L|--listfiles|--print-architecture|-W|--show)
    exec /usr/lib/lab/dpkg.real "$@" ;;
esac
echo "$(date -Is) dpkg $*" >> /var/log/lab-forbidden.log
echo "lab: dpkg is not available on SteamOS" >&2
exit 100
"""

PACMAN_STUB = """\
#!/bin/sh
case "$1" in -Q*) exit 1 ;; esac
echo "$(date -Is) pacman $*" >> /var/log/lab-forbidden.log
echo "lab: pacman must not be used on SteamOS (read-only root)" >&2
exit 100
"""

# /dev is fresh at every container start; rootless podman needs these two.
DEVICE_NODES_UNIT = """\
[Unit]
Description=Lab: let users open /dev/net/tun and /dev/fuse (rootless podman)
DefaultDependencies=no

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/chmod 666 /dev/net/tun /dev/fuse

[Install]
WantedBy=multi-user.target
"""

# Overlay on the host's overlay fails; vfs always works (and the lab's images are small).
VFS_STORAGE = '[storage]\ndriver = "vfs"\n'

STEAMOS_USER = "deck"

STEAMOS = Recipe(
    name="device-steamos",
    suite="trixie",
    packages=(
        "systemd", "systemd-sysv", "openssh-server", "sudo", "curl", "ca-certificates",
        "iproute2", "dbus", "dbus-user-session", "libpam-systemd", "iptables", "procps",
        "podman", "uidmap", "passt", "catatonit",
    ),
    files={
        "/etc/ssh/sshd_config.d/lab.conf": DEVICE_SSHD,
        "/etc/systemd/system/lab-network-online.service": NETWORK_ONLINE_UNIT,
        "/etc/systemd/system/lab-dns-guard.service": DNS_GUARD_UNIT,
        "/etc/systemd/system/lab-device-nodes.service": DEVICE_NODES_UNIT,
        "/usr/local/sbin/lab-dns-guard": DNS_GUARD_SCRIPT,
        f"/etc/sudoers.d/{STEAMOS_USER}": f"{STEAMOS_USER} ALL=(ALL) NOPASSWD:ALL\n",
        "/usr/lib/os-release": STEAMOS_RELEASE,
        f"/home/{STEAMOS_USER}/.config/containers/storage.conf": VFS_STORAGE,
        "/usr/lib/lab/forbidden": FORBIDDEN_STUB,
        "/usr/lib/lab/dpkg": DPKG_STUB,
        "/usr/lib/lab/pacman": PACMAN_STUB,
    },
    hooks=(
        'chmod 755 "$1/usr/local/sbin/lab-dns-guard" "$1"/usr/lib/lab/*',
        f'chmod 440 "$1/etc/sudoers.d/{STEAMOS_USER}"',
        'rm -f "$1"/etc/ssh/ssh_host_*',
        'rm -f "$1/etc/os-release" && ln -s ../usr/lib/os-release "$1/etc/os-release"',
        f'chroot "$1" useradd -m -u 1000 -s /bin/bash -G sudo {STEAMOS_USER}',
        f'grep -q {STEAMOS_USER} "$1/etc/subuid" || echo "{STEAMOS_USER}:100000:65536" '
        '>> "$1/etc/subuid"',
        f'grep -q {STEAMOS_USER} "$1/etc/subgid" || echo "{STEAMOS_USER}:100000:65536" '
        '>> "$1/etc/subgid"',
        f'install -d -m 700 -o 1000 -g 1000 "$1/home/{STEAMOS_USER}/.ssh"',
        f'chown -R 1000:1000 "$1/home/{STEAMOS_USER}"',
        'chroot "$1" systemctl enable lab-network-online.service lab-dns-guard.service'
        " lab-device-nodes.service",
        'chroot "$1" systemctl mask systemd-modules-load.service getty@tty1.service',
        'echo "steamdeck" > "$1/etc/hostname"',
        # Last: no package manager from here on.
        'mv "$1/usr/bin/dpkg" "$1/usr/lib/lab/dpkg.real" && cp "$1/usr/lib/lab/dpkg" '
        '"$1/usr/bin/dpkg"',
        'for t in apt apt-get; do cp "$1/usr/lib/lab/forbidden" "$1/usr/bin/$t"; done',
        'cp "$1/usr/lib/lab/pacman" "$1/usr/bin/pacman"',
    ),
)

INFRA = Recipe(
    name="infra",
    suite="bookworm",
    packages=("docker-registry", "dnsmasq-base", "ca-certificates", "python3"),
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


# A Raspberry Pi: the same Debian device, arm64, run on this machine through qemu-user
# (tests/lab/setup-host.sh registers it). Good for facts and preflight; no container runtime
# works inside it (dockerd fails on iptables under qemu-user).
DEVICE_ARM64 = replace(DEVICE, name="device-debian-arm64", arch="arm64")

# debian:forky-slim for arm64: the base of the arm64 server image, built on this machine.
FORKY_ARM64 = replace(FORKY, name="debian-forky-arm64", arch="arm64")


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


def set_arch(tag: str, arch: str) -> None:
    """Label an imported image with the CPU its files are for.

    Debian's docker 20.10 imports every rootfs as amd64 (`--platform` included), and
    `docker build FROM` it inherits that label: an arm64 image would say amd64. The config is
    rewritten through save/load; the layers stay as they are.
    """
    if out("image", "inspect", "-f", "{{.Architecture}}", tag) == arch:
        return
    old = out("image", "inspect", "-f", "{{.Id}}", tag)
    with tempfile.TemporaryDirectory(prefix="lab-arch-") as tmp:
        root = Path(tmp) / "image"
        root.mkdir()
        docker("save", "-o", f"{tmp}/in.tar", tag)
        run(["tar", "-xf", f"{tmp}/in.tar", "-C", str(root)])
        manifest = json.loads((root / "manifest.json").read_text())
        config_file = root / manifest[0]["Config"]
        config = json.loads(config_file.read_text())
        config["architecture"] = arch
        blob = json.dumps(config).encode()
        config_file.unlink()
        manifest[0]["Config"] = hashlib.sha256(blob).hexdigest() + ".json"
        (root / manifest[0]["Config"]).write_bytes(blob)
        (root / "manifest.json").write_text(json.dumps(manifest))
        run(["tar", "-cf", f"{tmp}/out.tar", "-C", str(root), "."])
        docker("load", "-q", "-i", f"{tmp}/out.tar", capture=True)
    docker("rmi", old, check=False, capture=True)


def build_foreign(recipe: Recipe) -> str:
    """build() for another CPU (qemu-user runs it here), labelled with that CPU."""
    tag = build(recipe)
    set_arch(tag, recipe.arch)
    return tag

def build_all() -> dict[str, str]:
    """The session's base images, side by side: each mmdebstrap waits mostly on apt's
    downloads, so a fresh machine builds the three in about the time of the longest."""
    recipes = (DEVICE, INFRA, FORKY)
    with ThreadPoolExecutor(len(recipes)) as pool:
        tags = list(pool.map(build, recipes))
    return {r.name: tag for r, tag in zip(recipes, tags, strict=True)}


def build_steamos() -> str:
    return build(STEAMOS)


if __name__ == "__main__":  # pragma: no cover - manual use
    print(build_all())
    subprocess.run(["docker", "images", "llama-lab/*"], check=False)
