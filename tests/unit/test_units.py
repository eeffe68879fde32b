"""The rendered systemd unit and the image tag."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from llama_docker.device.image import build_args, image_tag
from llama_docker.device.units import FILES, server_args, systemd_unit

BASE = dict(runtime="docker", image="llama-docker/server:abc", model_name="tiny",
            models_dir="/var/lib/llama-docker/models", port=8080, bind="0.0.0.0",
            ctx_size=2048, threads=4, args=(), mmproj=False)


def exec_start(unit: str) -> str:
    text = unit.replace("\\\n", " ")
    return next(line for line in text.splitlines() if line.startswith("ExecStart="))


def test_unit_runs_locked_down_container() -> None:
    line = exec_start(systemd_unit(**BASE))
    for flag in ("--read-only", "--cap-drop ALL", "--security-opt no-new-privileges",
                 "--publish 0.0.0.0:8080:8080", "/var/lib/llama-docker/models:/models:ro",
                 "--ctx-size 2048 --threads 4"):
        assert flag in line


def test_memory_cap_from_the_model() -> None:
    from llama_docker.device.fit import MIB, memory_limit_mib

    assert "--memory" not in exec_start(systemd_unit(**BASE))
    mib = memory_limit_mib(400 * MIB, 100 * MIB)
    assert mib == 400 + 100 + 512 + 1
    assert f"--pids-limit 256 --memory {mib}m" in exec_start(systemd_unit(**BASE, memory_mib=mib))


def test_unit_restarts_always_and_starts_at_boot() -> None:
    unit = systemd_unit(**BASE)
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    assert "Requires=docker.service" in unit


def test_bind_and_port_knobs() -> None:
    line = exec_start(systemd_unit(**{**BASE, "bind": "127.0.0.1", "port": 9000}))
    assert "--publish 127.0.0.1:9000:8080" in line


def test_args_are_quoted_for_systemd() -> None:
    line = exec_start(systemd_unit(**{**BASE, "args": ("--chat-template", "vicuna",
                                                        "--alias", "50% model")}))
    assert line.endswith("--chat-template vicuna --alias '50%% model'")


def test_mmproj_env_only_with_projector() -> None:
    assert "LLAMA_MMPROJ" not in systemd_unit(**BASE)
    assert "LLAMA_MMPROJ=/models/current-mmproj.gguf" in systemd_unit(**{**BASE, "mmproj": True})


def test_image_tag_follows_build_args() -> None:
    a = image_tag(build_args("debian:forky-slim", True))
    assert a == image_tag(build_args("debian:forky-slim", True))
    assert a != image_tag(build_args("debian:forky-slim", False))
    assert a.startswith("llama-docker/server:") and len(a.split(":")[1]) == 12


def test_cors_is_always_passed_and_empty_by_default() -> None:
    """llama-server's own default is `*`: the unit must say otherwise, quoted for systemd."""
    args = server_args((), (), ())
    assert args == ("--cors-origins", "")
    line = exec_start(systemd_unit(**{**BASE, "args": args}))
    assert line.endswith("--threads 4 --cors-origins ''")


def test_cors_origin_knob_then_model_and_extra_args() -> None:
    args = server_args(("http://laptop.lan:3000",), ("--chat-template", "vicuna"),
                       ("--cors-origins", "*"))
    assert args == ("--cors-origins", "http://laptop.lan:3000", "--chat-template", "vicuna",
                    "--cors-origins", "*")  # server_args come last: llama-server takes the last


def test_one_model_answers_by_its_configured_name() -> None:
    """`--alias`: llama-server answers `"model"` with it (else the file's path); the model's
    own args and server_args come after it, so an `--alias` there still wins."""
    assert server_args((), (), (), alias="tiny") == ("--cors-origins", "", "--alias", "tiny")
    args = server_args((), ("--alias", "mine"), (), alias="tiny")
    assert args[-2:] == ("--alias", "mine")
    assert "--alias" not in server_args((), (), ())


# Debian's simplechat.js (llama.cpp-tools 1:0.7.0+dfsg-2), the line that picks where it sends.
SIMPLECHAT_LINE = "        this.baseURL = `${window.location.protocol}//${host}:8080`;\n"


def test_the_image_points_simplechat_at_its_own_origin(tmp_path: Path) -> None:
    """The fallback UI chats on any port: the image's build rewrites Debian's base URL (its
    own port 8080) to the page's origin, with the Containerfile's own sed."""
    text = (FILES / "Containerfile").read_text()
    found = re.search(r"sed -i ('[^']*') \"\$f\"", text)
    assert found, "the Containerfile no longer patches SimpleChat"
    js = tmp_path / "simplechat.js"
    js.write_text("class Me {\n    constructor() {\n" + SIMPLECHAT_LINE + "    }\n}\n")
    subprocess.run(["sh", "-c", f"sed -i {found[1]} {js}"], check=True, timeout=30)
    assert "this.baseURL = window.location.origin;" in js.read_text()
    assert ":8080" not in js.read_text()
