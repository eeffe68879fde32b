#!/usr/bin/env bash
# Prepares this machine for the lab: Debian packages, the Python project, a running dockerd.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for pair in docker:docker.io dockerd:docker.io mmdebstrap:mmdebstrap skopeo:skopeo \
            ssh:openssh-client ssh-keygen:openssh-client curl:curl iptables:iptables \
            tc:iproute2; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${need[@]}" uidmap ca-certificates
fi

# The project must be installed from *this* checkout: pyinfra puts the current folder last on
# sys.path, so an install from another folder would shadow this one.
here=$(pwd -P)
installed=$(cd / && python3 -c 'import pyinfra, paramiko, gguf, pytest, llama_docker, os; print(os.path.dirname(os.path.dirname(os.path.realpath(llama_docker.__file__))))' 2>/dev/null || true)
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
echo "setup: ready"
