"""GPU: the render-node fact preflight reads, and the check after a restart that the backend
the run asked for is the one serving (llama-server's own log line says which)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from pyinfra import logger
from pyinfra.api import FactBase
from pyinfra.operations import python

from llama_docker.device import gpu
from llama_docker.knobs.errors import RefusedError

from .common import deploy, run_as, say

if TYPE_CHECKING:
    from .plan import Plan, Progress

# The lab's one hook (tests/e2e/test_gpu.py, bench/vulkan.py), in the controller's environment:
# GGML_VK_VISIBLE_DEVICES for a Vulkan server, so ggml uses the lab's software Vulkan device
# (lavapipe), which it skips otherwise. No knob: no real device has use for it.
LAB_VISIBLE = "LLAMA_DOCKER_LAB_VK_VISIBLE_DEVICES"


class RenderNodes(FactBase):
    """Each /dev/dri/renderD* with its kernel driver, group, PCI id, lspci name and amdgpu's
    VRAM size; the `video` group; NVIDIA's proprietary driver. Empty on a Mac or without a
    GPU. Read as the SSH user: /dev and /sys need no root."""

    def command(self) -> str:
        return (
            "for n in /dev/dri/renderD*; do [ -e \"$n\" ] || continue; "
            "d=/sys/class/drm/${n##*/}/device; echo \"node=$n\"; "
            "echo \"driver=$(basename \"$(readlink \"$d/driver\" 2>/dev/null)\" 2>/dev/null)\"; "
            "echo \"gid=$(stat -c %g \"$n\" 2>/dev/null)\"; "
            "echo \"pci=$(cat \"$d/vendor\" \"$d/device\" 2>/dev/null | tr '\\n' ' ')\"; "
            "echo \"vram=$(cat \"$d/mem_info_vram_total\" 2>/dev/null)\"; "
            "s=$(basename \"$(readlink -f \"$d\")\"); "
            "command -v lspci >/dev/null 2>&1 && echo \"lspci=$(lspci -s \"$s\" 2>/dev/null "
            "| head -1)\"; done; "
            "echo \"video_gid=$(getent group video 2>/dev/null | cut -d: -f3)\"; "
            "[ -r /proc/driver/nvidia/version ] && "
            "echo \"nvidia=$(head -1 /proc/driver/nvidia/version)\"; true"
        )

    def process(self, output: list[str]) -> gpu.GpuFacts:
        return gpu.parse_facts(output)

    @staticmethod
    def default() -> gpu.GpuFacts:
        return gpu.GpuFacts()


def lab_visible_devices() -> str:
    """The lab's Vulkan device indexes ('' everywhere else)."""
    value = os.environ.get(LAB_VISIBLE, "")
    if not re.fullmatch(r"(\d+(,\d+)*)?", value):
        raise RefusedError(f"{LAB_VISIBLE}={value!r}: Vulkan device indexes such as '0', "
                           "or unset")
    return value


def _check(state, host, command: str, sudo: bool, env: dict[str, str],  # noqa: ANN001
           wanted: str) -> bool:
    """Say which backend serves; a Vulkan run that fell back to the CPU is said, not failed:
    the server answers (health passed), only slower."""
    _, out = run_as(host, command, sudo, _env=env, _timeout=60)
    seen = gpu.served(out.stdout_lines)
    if seen.backend == "vulkan":
        layers = (f", {seen.offloaded[0]}/{seen.offloaded[1]} layers offloaded"
                  if seen.offloaded else "")
        say(host, f"llama-docker: {wanted} serves on {seen.device}{layers}")
        return True
    why = seen.fallback or "llama-server named no Vulkan device in its log"
    host.log_styled(f"llama-docker: gpu vulkan was asked, the server runs on the CPU: {why} "
                    f"(check the device with `vulkaninfo --summary`)", fg="yellow",
                    log_func=logger.warning)
    return True


@deploy("GPU")
def check_backend(plan: Plan, done: Progress) -> None:
    """After a restart of a Vulkan device: read the log for the device that serves."""
    t, choice = plan.target, plan.target.gpu
    if choice.backend != "vulkan" or not (done.restarted or done.runtime_changed):
        return
    python.call(name="Which backend serves (llama-server's log)", function=_check,
                command=gpu.logs_command(t.runtime), sudo=t.sudo, env=t.unit_env(plan.uid),
                wanted="gpu vulkan")
