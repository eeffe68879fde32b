"""The GPU a device serves from: pure decisions over what its render nodes say.

Linux devices use their GPU through llama.cpp's Vulkan backend and Mesa's Vulkan drivers
(RADV for amdgpu, ANV for i915/xe). `auto` picks Vulkan only where llama.cpp runs well on
that driver; a Raspberry Pi's v3d is slower than its CPU and hangs llama.cpp (llama.cpp
issues #5237, #9801), and NVIDIA's proprietary driver cannot be reached through Mesa.
Macs get Metal through `runtime = "native"`. Everything here is tested without a device.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llama_docker.device.fit import GIB
from llama_docker.device.units import CONTAINER
from llama_docker.knobs.errors import RefusedError

# Kernel drivers whose Mesa Vulkan driver llama.cpp runs well on: auto uses these.
GOOD = {"amdgpu": "RADV", "i915": "ANV", "xe": "ANV"}
# Why auto leaves other drivers' GPUs alone (the line preflight prints).
SLOW = {
    "v3d": "slower than the CPU, and llama.cpp's Vulkan backend hangs on it",
    "vc4": "no compute for llama.cpp",
    "panfrost": "slower than the CPU under llama.cpp",
    "panthor": "slower than the CPU under llama.cpp",
    "nouveau": "NVK is not one llama.cpp runs well on",
}
NVIDIA = ("nvidia: the proprietary driver is not reached through Mesa's Vulkan and needs the "
          "NVIDIA Container Toolkit, which this version does not set up")
# The Steam Deck (LCD "Van Gogh" 1002:163f, OLED "Sephiroth" 1002:1435): a UMA carve-out of
# 1 GB by default, 4 GB as a BIOS option.
DECK_PCI = {"1002:163f", "1002:1435"}
DECK_BIOS = ("raise it in the BIOS: hold volume up and press power, Setup Utility, Advanced, "
             "UMA Frame Buffer Size 4G")
# llama-server's own line at -lv 4 (the lowest verbosity that names the device it serves from)
_USING = re.compile(r"using device (\S+) \((.*?)\)(?: \([^()]*\))? - ")
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
FALLBACK = "llama-docker: gpu"  # the entrypoint's line when it serves on the CPU instead
# The lines `served` reads: llama-server's device and offload lines (-lv 4) and the
# entrypoint's own line when it fell back to the CPU.
LOG_PATTERN = f"{FALLBACK}|using device |offloaded [0-9]+/[0-9]+ layers"


@dataclass(frozen=True)
class RenderNode:
    """One /dev/dri/renderD* node and the kernel driver behind it."""

    node: str
    driver: str
    gid: int | None = None
    pci: str = ""  # vendor:device, e.g. 1002:163f ("" for a platform device such as v3d)
    name: str = ""  # from lspci when the device has it
    vram_bytes: int | None = None  # amdgpu's mem_info_vram_total (the UMA carve-out on APUs)

    @property
    def label(self) -> str:
        what = self.name or (f"PCI {self.pci}" if self.pci else self.node)
        return f"{what}, {self.driver or 'no driver'}"


@dataclass(frozen=True)
class GpuFacts:
    """What the device's /dev/dri and /sys say (the RenderNodes fact, processed)."""

    nodes: tuple[RenderNode, ...] = ()
    video_gid: int | None = None
    nvidia: str = ""  # /proc/driver/nvidia/version's first line: the proprietary driver


@dataclass(frozen=True)
class Gpu:
    """The choice for one device: which backend serves, on which node, and why."""

    backend: str  # cpu | vulkan | metal
    why: str
    node: RenderNode | None = None
    group_ids: tuple[int, ...] = field(default_factory=tuple)

    def line(self) -> str:
        """What preflight prints: `gpu vulkan (AMD Custom GPU 0405, amdgpu)`."""
        shown = "off" if self.backend == "cpu" else self.backend
        return f"gpu {shown} ({self.why})"


CPU = Gpu(backend="cpu", why="the gpu knob")


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _lspci_name(line: str) -> str:
    """`04:00.0 VGA ...: Advanced Micro Devices, Inc. [AMD/ATI] VanGogh [AMD Custom GPU 0405]
    (rev ae)` -> `AMD Custom GPU 0405`: the marketing name lspci puts last in brackets."""
    text = re.sub(r"\s*\(rev [0-9a-f]+\)\s*$", "", line.split(": ", 1)[-1]).strip()
    last = re.findall(r"\[([^\[\]]+)\]", text)
    return last[-1] if last and text.endswith("]") else text


def parse_facts(lines: list[str]) -> GpuFacts:
    """The RenderNodes fact's `key=value` lines; a `node=` line starts each node."""
    nodes: list[dict[str, str]] = []
    top: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "node":
            nodes.append({"node": value})
        elif key in ("video_gid", "nvidia"):
            top[key] = value.strip()
        elif nodes:
            nodes[-1][key] = value.strip()
    found = []
    for n in nodes:
        ids = [p.removeprefix("0x") for p in n.get("pci", "").split()]
        found.append(RenderNode(
            node=n["node"], driver=n.get("driver", ""), gid=_int(n.get("gid", "")),
            pci=":".join(ids) if len(ids) == 2 else "",
            name=_lspci_name(n["lspci"]) if n.get("lspci") else "",
            vram_bytes=_int(n.get("vram", ""))))
    return GpuFacts(nodes=tuple(found), video_gid=_int(top.get("video_gid", "")),
                    nvidia=top.get("nvidia", ""))


def _groups(node: RenderNode, facts: GpuFacts) -> tuple[int, ...]:
    """The render node's group and `video` (card nodes): docker needs them by number."""
    return tuple(sorted({g for g in (node.gid, facts.video_gid) if g is not None}))


def choose(knob: str, profile: str, runtime: str, facts: GpuFacts) -> Gpu:
    """Decide the backend; refuse (RefusedError) what cannot work, naming what to do."""
    if profile == "macos":
        if runtime == "native":
            if knob == "off":
                raise RefusedError("gpu 'off' with runtime 'native': Homebrew's llama-server "
                                   "uses Metal; use runtime 'docker' to serve on the CPU")
            return Gpu(backend="metal", why="Metal, runtime native")
        if knob == "vulkan":
            raise RefusedError("gpu 'vulkan' is for Linux devices: on a Mac, runtime 'native' "
                               "uses the GPU through Metal")
        return Gpu(backend="cpu", why="containers on a Mac get no GPU: runtime 'native' uses "
                                      "Metal")
    if knob == "off":
        return CPU
    nvidia = [n for n in facts.nodes if n.driver == "nvidia"] or ([RenderNode("", "nvidia")]
                                                                    if facts.nvidia else [])
    usable = [n for n in facts.nodes if n.driver != "nvidia"]
    good = [n for n in usable if n.driver in GOOD]
    if knob == "vulkan":
        if nvidia and not usable:
            raise RefusedError(f"gpu 'vulkan': {NVIDIA}; set gpu 'off' (CPU), or run "
                               "llama.cpp's CUDA image yourself")
        if not usable:
            return Gpu(backend="vulkan", why="no render node: only a software Vulkan device "
                                             "can serve, forced by the gpu knob")
        node = (good or usable)[0]
        slow = "" if node.driver in GOOD else f"; {SLOW.get(node.driver, 'untested driver')}"
        return Gpu(backend="vulkan", why=f"{node.label}{slow}", node=node,
                   group_ids=_groups(node, facts))
    if good:
        return Gpu(backend="vulkan", why=good[0].label, node=good[0],
                   group_ids=_groups(good[0], facts))
    if usable:
        node = usable[0]
        return Gpu(backend="cpu", why=f"{node.driver or node.node}: "
                                      f"{SLOW.get(node.driver, 'a driver auto does not use')}")
    if nvidia:
        return Gpu(backend="cpu", why=NVIDIA)
    return Gpu(backend="cpu", why="no render node")


def container_flags(gpu: Gpu, rootless: bool, layers: str, lab_visible: str = ""
                    ) -> tuple[str, ...]:
    """`run` flags for the GPU: the render nodes, the groups that may open them, and what
    the entrypoint needs (LLAMA_GPU, LLAMA_GPU_LAYERS). Nothing for a CPU device.

    Rootless podman (SteamOS): numeric groups would resolve inside the user namespace and
    grant nothing; `keep-groups` hands the user's own groups on. Docker and rootful podman
    take the device's group ids by number (the image has no such group names).
    `lab_visible`: the lab's GGML_VK_VISIBLE_DEVICES (tests only; see tasks/gpu.py).
    """
    if gpu.backend != "vulkan":
        return ()
    flags = ["--env", "LLAMA_GPU=vulkan", "--env", f"LLAMA_GPU_LAYERS={layers}"]
    if lab_visible:
        flags += ["--env", f"GGML_VK_VISIBLE_DEVICES={lab_visible}"]
    if gpu.node is not None:
        flags += ["--device", "/dev/dri"]
        if rootless:
            flags += ["--group-add", "keep-groups"]
        else:
            for gid in gpu.group_ids:
                flags += ["--group-add", str(gid)]
    return tuple(flags)


def fit_note(gpu: Gpu, need_bytes: int, profile: str) -> str:
    """A line when the model and its context outgrow the GPU's own memory ('' otherwise).

    Only amdgpu says how much it has; on an APU (the Deck) that is the UMA carve-out, and
    what does not fit comes from shared memory through GTT: it runs, more slowly.
    """
    node = gpu.node
    if gpu.backend != "vulkan" or node is None or not node.vram_bytes \
            or need_bytes <= node.vram_bytes:
        return ""
    line = (f"the model and its context need {need_bytes / GIB:.1f} GiB, the GPU has "
            f"{node.vram_bytes / GIB:.1f} GiB of its own; the rest comes from shared memory, "
            "slower")
    if node.pci in DECK_PCI or profile == "steamos":
        line += f" (the Steam Deck's carve-out: {DECK_BIOS})"
    return line


@dataclass(frozen=True)
class Served:
    """Which backend the server's log says serves."""

    backend: str  # vulkan | cpu
    device: str = ""  # `Vulkan0: llvmpipe (LLVM 21.1.8, 256 bits)`
    offloaded: tuple[int, int] | None = None
    fallback: str = ""  # the entrypoint's line when it fell back to the CPU


def logs_command(runtime: str) -> str:
    """The server container's lines that say which backend serves (what `served` reads)."""
    return (f"{runtime} logs {CONTAINER} 2>&1 | grep -m 4 -E {shlex.quote(LOG_PATTERN)}; "
            "true")


def served(log: list[str]) -> Served:
    """Read llama-server's log (and the entrypoint's) for the backend that serves."""
    device, offloaded, fallback = "", None, ""
    for line in log:
        m = _USING.search(line)
        if m and not device:
            device = f"{m.group(1)}: {m.group(2)}"
        o = _OFFLOADED.search(line)
        if o:
            offloaded = (int(o.group(1)), int(o.group(2)))
        if FALLBACK in line and not fallback:
            fallback = line[line.index(FALLBACK):].strip()
    if fallback or not device:
        return Served(backend="cpu", fallback=fallback)
    return Served(backend="vulkan", device=device, offloaded=offloaded)


def facts_from_json(value: Mapping[str, Any] | None) -> GpuFacts:
    """A fixture's RenderNodes value (already processed) back into GpuFacts."""
    if isinstance(value, GpuFacts):
        return value
    if not value:
        return GpuFacts()
    return GpuFacts(nodes=tuple(RenderNode(**n) for n in value.get("nodes", ())),
                    video_gid=value.get("video_gid"), nvidia=value.get("nvidia", ""))
