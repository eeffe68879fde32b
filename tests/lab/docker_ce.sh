#!/bin/sh
# Used by tests/e2e/test_user_config.py; runs on a lab device as root.
# Installs docker the way docker.com's apt repository does: packages named docker-ce and
# containerd.io (runc inside it), with docker.com's Conflicts and Provides. The lab cannot
# reach download.docker.com: the packages are Debian's own, renamed and repacked.
set -eu
work=$(mktemp -d)
cd "$work"
apt-get update -qq
apt-get download -qq docker.io containerd runc
set_field() {  # control file, field, value ("" deletes the field)
  sed -i "/^$2:/d" "$1"
  [ -z "$3" ] || echo "$2: $3" >> "$1"
}
dpkg-deb -R containerd_*.deb cd
dpkg-deb -x runc_*.deb cd
c=cd/DEBIAN/control
sed -i 's/^Package: containerd$/Package: containerd.io/' "$c"
set_field "$c" Depends "libc6 (>= 2.34), libseccomp2 (>= 2.5.0)"
set_field "$c" Breaks ""
for f in Provides Conflicts Replaces; do set_field "$c" "$f" "containerd, runc"; done
dpkg-deb -b cd containerd.io.deb >/dev/null
dpkg-deb -R docker.io_*.deb ce
c=ce/DEBIAN/control
sed -i 's/^Package: docker.io$/Package: docker-ce/' "$c"
set_field "$c" Depends "$(dpkg-deb -f docker.io_*.deb Depends | sed 's/containerd ([^)]*)/containerd.io (>= 1.4)/; s/, runc ([^)]*)//')"
set_field "$c" Conflicts "docker (<< 1.5~), docker-engine, docker.io"
dpkg-deb -b ce docker-ce.deb >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ./containerd.io.deb ./docker-ce.deb
cd / && rm -rf "$work"
