"""The OpenSSH cipher order for a bulk copy, by the CPUs at its two ends.

AES-GCM is the fastest OpenSSH cipher where both ends have AES instructions; ChaCha20 is
faster on CPUs without them (a Raspberry Pi 4, for one). The list names both, so either
end's sshd finds one it offers.
"""

from __future__ import annotations

AES_FIRST = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr"
CHACHA_FIRST = "chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes128-ctr"


def order(aes: bool) -> str:
    """The `-c` list: AES-GCM first when every end of the copy has AES instructions."""
    return AES_FIRST if aes else CHACHA_FIRST
