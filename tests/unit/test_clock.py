"""The clock check: how far off, which way, and what to do, in one line."""

from __future__ import annotations

import calendar

import pytest

from llama_docker.device.clock import MAX_SKEW_SECONDS, skew_refusal

NOW = calendar.timegm((2026, 12, 2, 12, 0, 0))


def test_years_behind_names_days_dates_and_fix() -> None:
    device = calendar.timegm((2020, 5, 1, 12, 0, 0))
    assert skew_refusal(device, NOW, "debian") == (
        "the device clock is 2406 days behind this controller (2020-05-01 vs 2026-12-02): "
        "enable NTP (timedatectl set-ntp true) or set the date")


@pytest.mark.parametrize("skew", [0, 59, -MAX_SKEW_SECONDS, MAX_SKEW_SECONDS])
def test_small_skew_passes(skew: int) -> None:
    assert skew_refusal(NOW + skew, NOW, "debian") is None


def test_unknown_clock_passes() -> None:
    assert skew_refusal(None, NOW, "debian") is None


@pytest.mark.parametrize(("skew", "says"), [
    (-MAX_SKEW_SECONDS - 60, "6 minutes behind"),
    (-5 * 3600, "5 hours behind"),
    (3 * 86400, "3 days ahead of"),
])
def test_amount_and_direction(skew: int, says: str) -> None:
    assert f"the device clock is {says} this controller" in skew_refusal(NOW + skew, NOW,
                                                                        "debian")


def test_macos_gets_its_own_fix() -> None:
    line = skew_refusal(NOW - 86400 * 30, NOW, "macos")
    assert "systemsetup -setusingnetworktime on" in line and "timedatectl" not in line
