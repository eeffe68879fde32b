"""The device's clock against the controller's: a device years behind breaks apt and TLS.

apt refuses a Release file dated later than the device's "now" (`is not valid yet`), and
Debian's mirrors publish a new one every few hours, so a device behind by more than the
Release file's age fails `apt-get update`; certificates issued in the last hour (Let's
Encrypt backdates by one) fail TLS the same way. Five minutes covers a device whose NTP has
not synced yet only by luck, and no synced device is ever that far off: refuse beyond it,
in either direction, before anything changes.
"""

from __future__ import annotations

import time

MAX_SKEW_SECONDS = 300


def _amount(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 2 * 3600:
        return f"{int(seconds // 3600)} hours"
    return f"{int(seconds // 60)} minutes"


def _day(epoch: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def skew_refusal(device: int | None, controller: float, profile: str) -> str | None:
    """One line when the device's clock (`date +%s`) is off by more than MAX_SKEW_SECONDS
    from the controller's (read mid round trip); None when close enough or unknown."""
    if device is None:
        return None
    skew = device - controller
    if abs(skew) <= MAX_SKEW_SECONDS:
        return None
    way = "behind" if skew < 0 else "ahead of"
    fix = ("turn on Set time automatically (sudo systemsetup -setusingnetworktime on)"
           if profile == "macos" else "enable NTP (timedatectl set-ntp true)")
    return (f"the device clock is {_amount(abs(skew))} {way} this controller "
            f"({_day(device)} vs {_day(controller)}): {fix} or set the date")
