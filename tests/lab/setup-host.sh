#!/usr/bin/env bash
# Prepares this machine for the lab: Debian packages, the Python project, a running dockerd.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for pair in docker:docker.io dockerd:docker.io mmdebstrap:mmdebstrap skopeo:skopeo \
            ssh:openssh-client ssh-keygen:openssh-client curl:curl iptables:iptables \
            tc:iproute2 chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${need[@]}" uidmap ca-certificates fonts-liberation
fi

# The project must be installed from *this* checkout: pyinfra puts the current folder last on
# sys.path, so an install from another folder would shadow this one.
here=$(pwd -P)
installed=$(cd / && python3 -c 'import pyinfra, paramiko, gguf, pytest, mypy, llama_docker, os; print(os.path.dirname(os.path.dirname(os.path.realpath(llama_docker.__file__))))' 2>/dev/null || true)
if [ "$installed" != "$here" ]; then
  echo "setup: pip install -e .[test]"
  python3 -m pip install -q -e '.[test]'
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start, see /var/log/dockerd.log" >&2; exit 1; }
fi

# arm64 devices and images (a Raspberry Pi) run here through qemu-user. The F flag makes the
# kernel open the emulator once, at registration, so it works inside containers and chroots
# that do not have it. binfmt_misc is the kernel's, shared by the whole machine: register once.
if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  echo "setup: apt-get install qemu-user-static"
  timeout 300 apt-get update -q
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends \
    qemu-user-static
fi
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  echo "setup: registering qemu-aarch64 with binfmt_misc (F flag)"
  conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  case "$(awk -F: '{print $NF}' "$conf")" in *F*) ;; *)
    echo "setup: $conf lacks the F flag" >&2; exit 1 ;; esac
  cat "$conf" > "$binfmt/register"
fi
grep -q '^flags:.*F' "$binfmt/qemu-aarch64" \
  || { echo "setup: qemu-aarch64 is registered without the F flag" >&2; exit 1; }
echo "setup: ready"
