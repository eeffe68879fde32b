"""Status: the llama.cpp version each device's server image records, and devices of one CPU
architecture that run different ones flagged."""

from __future__ import annotations

from llama_docker.device.image import VERSION_LABEL
from llama_docker.status import probe, table
from llama_docker.status.row import Row

from .test_status import cfg, debian, healthy_facts, make_row


def rows(*hosts: tuple[str, str, str]) -> list[Row]:
    return [make_row(h, cfg(), healthy_facts(arch=arch, llama_cpp=v)) for h, arch, v in hosts]


def test_script_reads_the_containers_version_label() -> None:
    text = probe.script(cfg(), debian(cfg()), 1000)
    assert 'echo "arch=$(uname -m)"' in text
    assert f"sudo -n docker inspect --format '{{{{index .Config.Labels \"{VERSION_LABEL}\"}}}}'" \
        " llama" in text
    assert text.index("llama_cpp=") < text.index("completion=")  # the completion stays last


def test_version_and_arch_in_the_row() -> None:
    (row,) = rows(("raspi", "aarch64", "1:0.7.0+dfsg-2"))
    assert (row.arch, row.llama_cpp) == ("arm64", "1:0.7.0+dfsg-2")
    assert table.table([row]).splitlines()[1].endswith("  0.7.0+dfsg-2  -")


def test_same_arch_different_versions_flagged_other_arch_not() -> None:
    fleet = rows(("pi-1", "aarch64", "1:0.7.0+dfsg-2"), ("pi-2", "aarch64", "1:0.8.0-1"),
                 ("nas", "x86_64", "1:0.8.0-1"))
    assert table.version_drift(fleet) == {"pi-1", "pi-2"}
    lines = table.table(fleet).splitlines()
    assert lines[1].endswith("0.7.0+dfsg-2!  -") and lines[2].rstrip(" -").endswith("0.8.0-1!")
    assert lines[3].rstrip(" -").endswith("0.8.0-1")
    assert lines[-1].startswith("! runs another llama.cpp than other devices of its CPU")


def test_one_version_per_arch_not_flagged() -> None:
    fleet = rows(("pi-1", "aarch64", "1:0.7.0+dfsg-2"), ("pi-2", "aarch64", "1:0.7.0+dfsg-2"))
    assert table.version_drift(fleet) == set()
    assert "!" not in table.table(fleet)
