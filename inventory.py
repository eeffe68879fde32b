"""An example home: edit the addresses and users, then `pyinfra inventory.py deploy.py`.

Each device is (address, {data}); knobs from group_data/all.py can be overridden per device.
"""

home = [
    # Raspberry Pi 4/5 with 64-bit Raspberry Pi OS (Debian): docker from apt.
    ("raspi.local", {"ssh_user": "pi"}),
    # Pinebook Pro with Armbian (Debian) and 4 GB RAM: a small model fits.
    ("pinebook.local", {"ssh_user": "alarm", "model": "smolvlm-256m"}),
]
