"""The GPU choice from each kind of device's render nodes (fixtures of the fact's output,
tests/unit/fixtures/gpu/), and what the deploy then runs: image, unit flags, groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_docker.device import gpu
from llama_docker.device.image import build_args, gpu_build_args, image_tag
from llama_docker.knobs import config
from llama_docker.knobs.errors import ConfigError, RefusedError
from llama_docker.tasks.gpu import LAB_VISIBLE, lab_visible_devices

from .fixtures.harness import FIXTURES, deploy_fixture

CPU_TAG = image_tag(build_args("docker.io/library/debian:forky-slim", True))
VK_TAG = image_tag(gpu_build_args(build_args("docker.io/library/debian:forky-slim", True),
                                  "vulkan"))


def facts(name: str) -> gpu.GpuFacts:
    text = (FIXTURES / "gpu" / f"{name}.txt").read_text()
    return gpu.parse_facts([line for line in text.splitlines() if not line.startswith("#")])


@pytest.mark.parametrize(("device", "profile", "line"), [
    ("steamdeck", "steamos", "gpu vulkan (AMD Custom GPU 0405, amdgpu)"),
    ("intel-n100", "debian", "gpu vulkan (UHD Graphics, i915)"),
    ("pi5", "debian", "gpu off (v3d: slower than the CPU, and llama.cpp's Vulkan backend "
                      "hangs on it)"),
    ("nogpu", "debian", "gpu off (no render node)"),
    ("lab", "debian", "gpu off (no render node)"),
])
def test_auto_choice_per_device(device: str, profile: str, line: str) -> None:
    assert gpu.choose("auto", profile, "docker", facts(device)).line() == line


def test_nvidia_proprietary_driver_stays_on_cpu_and_vulkan_is_refused() -> None:
    nv = facts("nvidia")
    assert nv.nvidia.startswith("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.120")
    choice = gpu.choose("auto", "debian", "docker", nv)
    assert choice.backend == "cpu" and "NVIDIA Container Toolkit" in choice.why
    with pytest.raises(RefusedError, match="gpu 'vulkan': nvidia: .*set gpu 'off'"):
        gpu.choose("vulkan", "debian", "docker", nv)


def test_off_and_forced_vulkan() -> None:
    assert gpu.choose("off", "steamos", "podman", facts("steamdeck")) == gpu.CPU
    pi = gpu.choose("vulkan", "debian", "docker", facts("pi5"))
    assert pi.backend == "vulkan" and "slower than the CPU" in pi.why
    lab = gpu.choose("vulkan", "debian", "docker", facts("lab"))
    assert lab.backend == "vulkan" and lab.node is None and "software Vulkan" in lab.why


def test_macs() -> None:
    none = gpu.GpuFacts()
    assert gpu.choose("auto", "macos", "native", none).backend == "metal"
    assert gpu.choose("auto", "macos", "docker", none).backend == "cpu"
    with pytest.raises(RefusedError, match="runtime 'native'"):
        gpu.choose("vulkan", "macos", "docker", none)


def test_flags_rootful_docker_use_group_ids_rootless_podman_keeps_groups() -> None:
    deck = gpu.choose("auto", "steamos", "podman", facts("steamdeck"))
    assert gpu.container_flags(deck, rootless=True, layers="all") == (
        "--env", "LLAMA_GPU=vulkan", "--env", "LLAMA_GPU_LAYERS=all",
        "--device", "/dev/dri", "--group-add", "keep-groups")
    intel = gpu.choose("auto", "debian", "docker", facts("intel-n100"))
    assert gpu.container_flags(intel, rootless=False, layers="20") == (
        "--env", "LLAMA_GPU=vulkan", "--env", "LLAMA_GPU_LAYERS=20",
        "--device", "/dev/dri", "--group-add", "44", "--group-add", "105")
    assert gpu.container_flags(gpu.CPU, rootless=False, layers="all") == ()
    lab = gpu.choose("vulkan", "debian", "docker", facts("lab"))
    assert gpu.container_flags(lab, rootless=False, layers="all", lab_visible="0") == (
        "--env", "LLAMA_GPU=vulkan", "--env", "LLAMA_GPU_LAYERS=all",
        "--env", "GGML_VK_VISIBLE_DEVICES=0")  # no render node to pass in


def test_deck_carve_out_note() -> None:
    deck = gpu.choose("auto", "steamos", "podman", facts("steamdeck"))
    note = gpu.fit_note(deck, 5 << 30, "steamos")
    assert note.startswith("the model and its context need 5.0 GiB, the GPU has 1.0 GiB")
    assert "UMA Frame Buffer Size 4G" in note
    assert gpu.fit_note(deck, 512 << 20, "steamos") == ""
    intel = gpu.choose("auto", "debian", "docker", facts("intel-n100"))
    assert gpu.fit_note(intel, 5 << 30, "debian") == ""  # shares RAM: nothing to say


def test_served_reads_llama_server_log() -> None:
    log = ["0.00.794200 I llama_prepare_model_devices: using device Vulkan0 (llvmpipe (LLVM "
           "21.1.8, 256 bits)) (unknown id) - 22472 MiB free",
           "0.00.795301 I load_tensors: offloaded 3/3 layers to GPU"]
    seen = gpu.served(log)
    assert seen == gpu.Served("vulkan", "Vulkan0: llvmpipe (LLVM 21.1.8, 256 bits)", (3, 3))
    fell = gpu.served(["llama-docker: gpu vulkan: llama-server sees no Vulkan device; "
                       "serving on the CPU"])
    assert fell.backend == "cpu" and fell.fallback.startswith("llama-docker: gpu vulkan")
    assert gpu.served([]).backend == "cpu"


@pytest.mark.parametrize(("knob", "value"), [("gpu", "cuda"), ("n_gpu_layers", -1),
                                             ("n_gpu_layers", "most")])
def test_bad_gpu_knobs_name_host_and_knob(knob: str, value: object) -> None:
    from llama_docker.knobs.defaults import DEFAULTS
    with pytest.raises(ConfigError) as exc:
        config.load({**DEFAULTS, knob: value}, "steamdeck")
    assert str(exc.value).startswith(f"steamdeck: knob {knob}={value!r} is invalid")


def _unit(run) -> str:  # noqa: ANN001
    return next(text for op in run.ops for dest, text in op.uploads.items()
                if dest.endswith("llama-docker.service"))


def test_intel_box_deploys_gpu_image_and_render_node(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian", {"RenderNodes": facts("intel-n100"),
                                              "Arch": "x86_64",
                                              "PackageArch": "amd64"})
    need = run.op("Server image | Server image").calls[0]["need"]
    assert "--build-arg GPU=vulkan" in need.stage_build and need.tag == VK_TAG
    unit = _unit(run)
    assert "--device /dev/dri" in unit and "--group-add 44" in unit
    assert "--group-add 105" in unit and "--env LLAMA_GPU=vulkan" in unit
    assert "GGML_VK_VISIBLE_DEVICES" not in unit  # lab only, never a product default


def test_lab_hook_makes_the_software_device_visible(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's lavapipe is seen by ggml only when named: the controller's environment
    names it (tests/e2e/test_gpu.py); a value that is no device index is refused."""
    monkeypatch.setenv(LAB_VISIBLE, "0")
    run = deploy_fixture(tmp_path, "debian", {"RenderNodes": facts("lab")}, gpu="vulkan")
    assert "--env GGML_VK_VISIBLE_DEVICES=0" in _unit(run)
    monkeypatch.setenv(LAB_VISIBLE, "gpu0")
    with pytest.raises(RefusedError, match=f"{LAB_VISIBLE}='gpu0'"):
        lab_visible_devices()


def test_pi_deploys_cpu_image_without_gpu_flags(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian", {"RenderNodes": facts("pi5")})
    need = run.op("Server image | Server image").calls[0]["need"]
    assert "GPU=" not in need.stage_build and need.tag == CPU_TAG
    assert CPU_TAG != VK_TAG
    unit = _unit(run)
    assert "/dev/dri" not in unit and "LLAMA_GPU" not in unit


def test_steam_deck_rootless_podman_keeps_groups(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "steamos", {"RenderNodes": facts("steamdeck")})
    need = run.op("Server image | Server image").calls[0]["need"]
    assert need.stage_build.startswith("podman build") and "GPU=vulkan" in need.stage_build
    unit = _unit(run)
    assert "--device /dev/dri" in unit and "--group-add keep-groups" in unit
    assert "--userns=keep-id:uid=10001" in unit and "--group-add 9" not in unit
