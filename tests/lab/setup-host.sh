#!/usr/bin/env bash
# Prepares this machine for the lab: Debian packages, the project in a venv of the checkout
# (.venv: apt's Python refuses pip installs, PEP 668), a running dockerd.
#   setup-host.sh demo   only what `make demo` needs (one device, one deploy)
#   setup-host.sh test   everything the tests and benchmarks need (the default)
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-test}
venv=${VENV:-.venv}

# Every command the lab calls, with the Debian package that has it. Recommends are not
# installed, so each one is named here (arch-test is only a Recommends of mmdebstrap, yet
# mmdebstrap needs it for --architectures=arm64). The list is checked again at the end: a
# command still missing stops the set-up with its name.
commands="docker:docker.io dockerd:docker.io mmdebstrap:mmdebstrap skopeo:skopeo
  ssh:openssh-client ssh-keygen:openssh-client curl:curl tar:tar sha256sum:coreutils"
if [ "$what" = test ]; then
  commands="$commands arch-test:arch-test scp:openssh-client iptables:iptables tc:iproute2
  ip:iproute2 chromium:chromium newuidmap:uidmap openssl:openssl
  qemu-aarch64-static:qemu-user-static"
fi
need=()
for pair in $commands; do
  pkg=${pair#*:}
  command -v "${pair%%:*}" >/dev/null 2>&1 || case " ${need[*]} " in
    *" $pkg "*) ;;
    *) need+=("$pkg") ;;
  esac
done
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  timeout 300 apt-get update -q
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
    "${need[@]}" ca-certificates $([ "$what" = test ] && echo fonts-liberation)
fi

# The project goes into a venv of this checkout, installed editable from *this* folder.
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: python3 -m venv $venv"
  python3 -m venv "$venv"
fi
here=$(pwd -P)
extra=""; [ "$what" = test ] && extra="[test]"
probe='import pyinfra, paramiko, gguf, numpy, llama_docker.tasks, llama_docker, os'
[ "$what" = test ] && probe="$probe, pytest, xdist, mypy, wheel, openai, importlinter"
installed=$(cd / && "$here/$venv/bin/python" -c "$probe; print(os.path.dirname(os.path.dirname(os.path.realpath(llama_docker.__file__))))" 2>/dev/null || true)
# A new console script (pyproject's [project.scripts]) needs the install run again.
if [ "$installed" != "$here" ] || [ ! -x "$venv/bin/llama-docker" ]; then
  echo "setup: $venv/bin/pip install -e .$extra"
  "$venv/bin/python" -m pip install -q -e ".$extra"
fi

if ! docker info >/dev/null 2>&1; then
  echo "setup: starting dockerd"
  setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "setup: dockerd did not start, see /var/log/dockerd.log" >&2; exit 1; }
fi

if [ "$what" = test ]; then
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
fi
missing=()
for pair in $commands; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair%%:*} (apt package ${pair#*:})")
done
mods="pyinfra paramiko gguf numpy llama_docker.tasks"
tools="pyinfra llama-docker"
if [ "$what" = test ]; then
  mods="$mods pytest xdist wheel openai"
  tools="$tools ruff mypy lint-imports"
fi
for mod in $mods; do
  (cd / && "$here/$venv/bin/python" -c "import $mod") >/dev/null 2>&1 || missing+=("python module $mod")
done
for tool in $tools; do
  [ -x "$venv/bin/$tool" ] || missing+=("$tool (in $venv)")
done
if [ ${#missing[@]} -gt 0 ]; then
  printf 'setup: still missing after the set-up: %s\n' "${missing[*]}" >&2
  exit 1
fi
echo "setup: ready"
