"""Profile detection from os-release facts, and CPU to image arch."""

from __future__ import annotations

import pytest

from llama_docker.device.profile import detect, image_arch
from llama_docker.knobs.errors import RefusedError


@pytest.mark.parametrize(("meta", "expected"), [
    ({"ID": "debian"}, "debian"),
    ({"ID": "raspbian", "ID_LIKE": "debian"}, "debian"),
    ({"ID": "ubuntu", "ID_LIKE": "debian"}, "debian"),
    ({"ID": "armbian", "ID_LIKE": "debian"}, "debian"),
    ({"ID": "steamos", "ID_LIKE": "arch"}, "steamos"),
    ({"ID": "manjaro-arm", "ID_LIKE": "arch"}, "arch"),
    ({"ID": "arch"}, "arch"),
])
def test_linux_families(meta: dict, expected: str) -> None:
    assert detect("Linux", meta) == expected


def test_macos() -> None:
    assert detect("Darwin", None) == "macos"


def test_unknown_os_refused_naming_it() -> None:
    with pytest.raises(RefusedError, match="unsupported OS: Fedora Linux 40"):
        detect("Linux", {"ID": "fedora", "PRETTY_NAME": "Fedora Linux 40"})


@pytest.mark.parametrize(("machine", "arch"), [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_arches(machine: str, arch: str) -> None:
    assert image_arch(machine) == arch


def test_32bit_pi_os_refused_with_hint() -> None:
    with pytest.raises(RefusedError, match="32-bit OS: install the 64-bit one"):
        image_arch("armv7l")


@pytest.mark.parametrize(("machine", "packages"), [("x86_64", "amd64"), ("aarch64", "arm64"),
                                                   ("aarch64", None)])
def test_packages_of_the_kernels_arch(machine: str, packages: str | None) -> None:
    assert image_arch(machine, packages) == image_arch(machine)


@pytest.mark.parametrize(("machine", "packages"), [("aarch64", "armhf"), ("x86_64", "i386")])
def test_32bit_os_on_a_64bit_kernel_refused(machine: str, packages: str) -> None:
    with pytest.raises(RefusedError, match=rf"this OS is 32-bit \({packages} packages on a "
                                           rf"64-bit {machine} kernel\): .*install the 64-bit"):
        image_arch(machine, packages)
