"""What the steps share: the Plan preflight makes for a host, and what each step leaves for
the steps after it. Every step depends on this module; it depends on no step."""

from __future__ import annotations

from dataclasses import dataclass, field

from llama_docker.device import target
from llama_docker.device.store import Store
from llama_docker.knobs import config
from llama_docker.transfer.local_model import LocalFile, Member
from llama_docker.transfer.webui_fetch import UiFile

from .batch import Known
from .split_plan import Rpc


@dataclass(frozen=True)
class Plan:
    """What the later steps need, decided once per host."""

    cfg: config.Config
    arch: str
    threads: int
    user: str
    model: LocalFile | None  # None on a gateway-only box (`gateway = "only"`)
    mmproj: LocalFile | None
    target: target.Target

    uid: int
    memory_mib: int
    aes: bool  # the CPU has AES instructions (picks the push's cipher)
    known: Known  # what the device holds, read in one round trip (tasks/batch.py)
    brew: str | None = None  # macOS: Homebrew's prefix
    # What device commands need beyond SSH's bare environment (macOS: brew's PATH).
    env: dict[str, str] = field(default_factory=dict)
    # Several models (the models knob, router mode); () when the model knob serves one.
    models: tuple[Member, ...] = ()
    models_max: int = 0  # how many of them the router loads at once
    webui: UiFile | None = None  # the user's own UI (webui knob a path), verified here
    rpc: Rpc = field(default_factory=Rpc)  # a model split over devices (tasks/split.py)

    @property
    def store(self) -> Store:
        """The device's model store, hashed with the device's own command."""
        return Store(self.target.models_dir, self.target.hash_command)

    @property
    def profile(self) -> str:
        return self.target.profile

    @property
    def runtime(self) -> str:
        return self.target.runtime


@dataclass(frozen=True)
class Switch:
    """What `current` pointed at before this run switched it (for an automatic rollback)."""

    changed: bool
    before: dict[str, str | None]


@dataclass
class Progress:
    """What the steps of one run have done so far, for the steps after them."""

    runtime_changed: bool = False  # the runtime's configuration changed: restart the server
    tag: str = ""  # the server image (empty: no image, macOS native)
    built: bool = False  # the image was built in this run
    switch: Switch = field(default_factory=lambda: Switch(changed=False, before={}))
    restarted: bool = False  # the service (re)started the server in this run
