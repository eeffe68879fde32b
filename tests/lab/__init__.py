"""The device lab: Debian boxes in containers (systemd, sshd, sudo) that the deploy treats as real devices."""
