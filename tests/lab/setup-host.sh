#!/usr/bin/env bash
# Prepares this machine for the lab: Debian packages, the Python project, a running dockerd.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Every command the lab, the tests and the benchmarks call, with the Debian package that has
# it. Recommends are not installed, so each one is named here (arch-test is only a Recommends
# of mmdebstrap, yet mmdebstrap needs it for --architectures=arm64). The list is checked again
# at the end: a command still missing stops the set-up with its name.
commands="docker:docker.io dockerd:docker.io mmdebstrap:mmdebstrap arch-test:arch-test
  skopeo:skopeo ssh:openssh-client scp:openssh-client ssh-keygen:openssh-client curl:curl
  iptables:iptables tc:iproute2 ip:iproute2 chromium:chromium newuidmap:uidmap
  openssl:openssl sha256sum:coreutils tar:tar qemu-aarch64-static:qemu-user-static"
need=()
for pair in $commands; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  timeout 300 apt-get update -q
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
    "${need[@]}" ca-certificates fonts-liberation
fi

# The project must be installed from *this* checkout: pyinfra puts the current folder last on
# sys.path, so an install from another folder would shadow this one.
here=$(pwd -P)
installed=$(cd / && python3 -c 'import pyinfra, paramiko, gguf, pytest, xdist, mypy, wheel, openai, llama_docker.tasks, llama_docker, os; print(os.path.dirname(os.path.dirname(os.path.realpath(llama_docker.__file__))))' 2>/dev/null || true)
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

# arm64 devices and images (a Raspberry Pi) run here through qemu-user, registered with
# binfmt_misc, which is the kernel's and shared by the whole machine. Flags beyond Debian's
# OPF: F (the kernel opens the emulator at registration, so containers and chroots without it
# run arm64 programs) and C (credentials from the program: setuid sudo works, as on a Pi).
binfmt=/proc/sys/fs/binfmt_misc
[ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
entry=$binfmt/qemu-aarch64
has_flags() { grep -q "^flags: .*$1" "$entry"; }
if [ -e "$entry" ] && ! { has_flags F && has_flags C; }; then
  echo "setup: qemu-aarch64 lacks the F or C flag: registering it again"
  echo -1 > "$entry"
fi
if [ ! -e "$entry" ]; then
  echo "setup: registering qemu-aarch64 with binfmt_misc"
  line=$(cat /usr/lib/binfmt.d/qemu-aarch64.conf)
  flags=${line##*:}
  for f in F C; do case "$flags" in *$f*) ;; *) flags=$flags$f ;; esac; done
  echo "${line%:*}:$flags" > "$binfmt/register"
fi
has_flags F && has_flags C || { echo "setup: qemu-aarch64 registration failed" >&2; exit 1; }
missing=()
for pair in $commands; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair%%:*} (apt package ${pair#*:})")
done
for mod in pyinfra paramiko gguf numpy pytest xdist wheel openai llama_docker.tasks; do
  (cd / && python3 -c "import $mod") >/dev/null 2>&1 || missing+=("python module $mod")
done
for tool in ruff mypy lint-imports pyinfra; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool (pip)")
done
if [ ${#missing[@]} -gt 0 ]; then
  printf 'setup: still missing after the set-up: %s\n' "${missing[*]}" >&2
  exit 1
fi
echo "setup: ready"
