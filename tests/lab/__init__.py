"""The device lab: Debian boxes in containers (systemd, sshd, sudo) treated as real devices."""
