"""The knobs: their defaults live in group_data/all.py, their rules live here.

`load()` turns a host's data into a checked `Config`; a bad value raises `ConfigError`
naming the knob, the value and what would be accepted, before anything touches the host.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llama_docker.knobs.errors import ConfigError
from llama_docker.knobs.lock import upgrade_rule
from llama_docker.knobs.model_set import resolve_models
from llama_docker.knobs.spec import ModelSpec, resolve_model

RUNTIMES = ("auto", "docker", "podman", "native")
_HOSTPORT = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# An origin as browsers send it: scheme://host[:port], no path, no trailing slash.
_ORIGIN = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$")


@dataclass(frozen=True)
class Config:
    """Everything a deploy needs to know about one host, checked."""

    model: ModelSpec
    models_dir: str
    models_keep: int
    runtime: str
    registry_mirror: str
    apt_check_valid_until: bool
    image_base: str
    port: int
    bind: str
    ctx_size: int
    threads: int
    server_args: tuple[str, ...]
    cors_origins: tuple[str, ...]
    service_name: str
    health_timeout: int
    ram_margin_mib: int
    disk_margin_mib: int
    cache_dir: str
    api_key: str
    model_source: str
    llama_cpp_version: str
    debian_snapshot: str
    image_rebuild: str
    webui: str
    webui_sha256: str
    webui_mirror: str
    models: tuple[ModelSpec, ...] = ()  # several models (router mode); () = `model` alone
    models_max: int = 0  # models loaded at once; 0 = decided from the device's RAM
    # The fleet gateway (llama_docker/device/gateway_routes.py): defaults keep Config(...) callers
    # that predate it working.
    gateway: bool | str = False  # True, False or "only" (the gateway and no model server)
    gateway_port: int = 4000
    lan_address: str = ""
    gpu: str = "auto"
    n_gpu_layers: str = "all"
    image_source: str = "controller"  # "device": each device builds its own image
    # Lock entries to resolve anew (llama_docker/knobs/lock.py): True = all, or their names.
    lock_upgrade: bool | tuple[str, ...] = False
    relay: bool = True  # devices holding a verified model pass it on (transfer/relay.py)
    lan_ssh_port: int = 0  # the sshd port other devices reach; 0 = the controller's
    # A model split over other devices (inventory names; llama_docker/device/split.py).
    split_over: tuple[str, ...] = ()
    rpc_port: int = 50052  # the RPC worker's port on its own loopback

    @property
    def gateway_only(self) -> bool:
        """A box that runs the fleet's gateway and serves no model itself."""
        return self.gateway == "only"


def _gateway(knob: str, value: Any) -> bool | str:
    if value is True or value is False or value == "only":
        return value
    raise ConfigError(knob, value, "True (this host also runs the gateway), False, or 'only' "
                                   "(it runs the gateway and serves no model)")


def _int(lo: int, hi: int) -> Callable[[str, Any], int]:
    def check(knob: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(knob, value, f"a whole number from {lo} to {hi}")
        return value

    return check


def _bool(knob: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(knob, value, "True or False")
    return value


def _choice(*options: str) -> Callable[[str, Any], str]:
    def check(knob: str, value: Any) -> str:
        if value not in options:
            raise ConfigError(knob, value, "one of " + ", ".join(map(repr, options)))
        return value

    return check


def _models_dir(knob: str, value: Any) -> str:
    return "auto" if value == "auto" else _abs_path(knob, value)


def _abs_path(knob: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("/", "~")) or "\n" in value:
        raise ConfigError(knob, value, "an absolute path (starting with / or ~)")
    return value.rstrip("/") or "/"


def _bind(knob: str, value: Any) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(knob, value, "an IP address such as '0.0.0.0' or '127.0.0.1'") from None


def _hostport(knob: str, value: Any) -> str:
    if value == "":
        return value
    if not isinstance(value, str) or not _HOSTPORT.match(value):
        raise ConfigError(knob, value, "'' (none) or host[:port] of a registry, no scheme")
    return value


def _name(knob: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigError(knob, value, "a name of letters, digits, '.', '_' or '-'")
    return value


def _image(knob: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(knob, value, "an image reference such as 'debian:forky-slim'")
    return value


def _args(knob: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(a, str) for a in value or ()):
        raise ConfigError(knob, value, "a list of strings, e.g. ['--temp', '0.7']")
    return tuple(value or ())


def _cors_origins(knob: str, value: Any) -> tuple[str, ...]:
    # llama-server 0.7.0 sends a comma list back as one Access-Control-Allow-Origin header,
    # which browsers reject: one origin is all it can allow.
    accepted = ("[] (same origin only), or one of: an origin such as "
                "'http://laptop.lan:3000', 'localhost' (any localhost page), '*' (any page)")
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) > 1:
        raise ConfigError(knob, value, accepted)
    for origin in value:
        if not isinstance(origin, str) or not (origin in ("localhost", "*")
                                               or _ORIGIN.match(origin)):
            raise ConfigError(knob, value, accepted)
    return tuple(value)


def _api_key(knob: str, value: Any) -> str:
    if value in ("", "generate"):
        return value
    if not isinstance(value, str) or len(value) < 16 or not value.isprintable() \
            or any(c.isspace() for c in value):
        raise ConfigError(knob, "<hidden>", "'' (no key), 'generate', or a key of 16+ "
                                            "printable characters without spaces")
    return value


def _lan_address(knob: str, value: Any) -> str:
    """'' or a host name or IP address the gateway can reach this device at."""
    if value == "":
        return value
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", value):
                return value
    raise ConfigError(knob, value, "'' (the inventory name) or a host name or IP address")


def _webui(knob: str, value: Any) -> str:
    if value in ("upstream", "simplechat", "none"):
        return value
    if isinstance(value, str) and value.startswith(("/", "~")) and "\n" not in value:
        return value
    raise ConfigError(knob, value, "'upstream', 'simplechat', 'none', or the absolute path "
                                   "of a built UI folder or .tar.gz on this controller")


def _sha256_or_empty(knob: str, value: Any) -> str:
    if value == "" or (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)):
        return value
    raise ConfigError(knob, value, "'' or a sha256 (64 lowercase hex digits)")


def _base_url(knob: str, value: Any) -> str:
    if value == "" or (isinstance(value, str) and re.fullmatch(r"https?://[^\s]+", value)):
        return value.rstrip("/")
    raise ConfigError(knob, value, "'' (GitHub) or an http(s):// base URL")


def _gpu_layers(knob: str, value: Any) -> str:
    if value in ("all", "auto"):
        return value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10000:
        raise ConfigError(knob, value, "'all', 'auto' (what fits the GPU's free memory) or a "
                                       "number of layers from 0 to 10000")
    return str(value)


_PKG_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+~:-]{0,63}$")
_SNAPSHOT = re.compile(r"^(\d{8}(T\d{6}Z)?|https?://[^\s\"'$`\\]+)$")


def _pkg_version(knob: str, value: Any) -> str:
    if value == "" or (isinstance(value, str) and _PKG_VERSION.match(value)):
        return value
    raise ConfigError(knob, value, "'' (unpinned) or a Debian package version such as "
                                   "'1:0.7.0+dfsg-2'")


def _snapshot(knob: str, value: Any) -> str:
    if value == "" or (isinstance(value, str) and _SNAPSHOT.match(value)):
        return value
    raise ConfigError(knob, value, "'' (unpinned), a snapshot.debian.org date such as "
                                   "'20250601T000000Z', or the http(s) URL of a snapshot archive")


def _split_over(knob: str, value: Any) -> tuple[str, ...]:
    """Inventory names of the devices a head splits its model over, each once."""
    accepted = "[] (this device alone) or a list of inventory names, each once, e.g. ['pi2.local']"
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(knob, value, accepted)
    if not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", v)
               for v in value) or len(set(value)) != len(value):
        raise ConfigError(knob, value, accepted)
    return tuple(value)


def _rebuild_mark(knob: str, value: Any) -> str:
    return "" if value == "" else _name(knob, value)


RULES: dict[str, Callable[[str, Any], Any]] = {
    "models_dir": _models_dir,
    "models_keep": _int(1, 100),
    "runtime": _choice(*RUNTIMES),
    "registry_mirror": _hostport,
    "apt_check_valid_until": _bool,
    "image_base": _image,
    "port": _int(1, 65535),
    "bind": _bind,
    "ctx_size": _int(128, 1 << 20),
    "threads": _int(0, 1024),
    "server_args": _args,
    "cors_origins": _cors_origins,
    "service_name": _name,
    "health_timeout": _int(5, 3600),
    "ram_margin_mib": _int(0, 1 << 20),
    "disk_margin_mib": _int(0, 1 << 24),
    "cache_dir": _abs_path,
    "api_key": _api_key,
    "model_source": _choice("controller", "direct"),
    "gateway": _gateway,
    "gateway_port": _int(1, 65535),
    "lan_address": _lan_address,
    "models": resolve_models,
    "models_max": _int(0, 64),
    "webui": _webui,
    "webui_sha256": _sha256_or_empty,
    "webui_mirror": _base_url,
    "gpu": _choice("auto", "vulkan", "off"),
    "n_gpu_layers": _gpu_layers,
    "llama_cpp_version": _pkg_version,
    "debian_snapshot": _snapshot,
    "image_rebuild": _rebuild_mark,
    "image_source": _choice("controller", "device"),
    "lock_upgrade": upgrade_rule,
    "relay": _bool,
    "lan_ssh_port": _int(0, 65535),
    "split_over": _split_over,
    "rpc_port": _int(1024, 65500),
}
# Host data that is pyinfra's, not ours: connection settings and global arguments.
PYINFRA_PREFIXES = ("ssh_", "winrm_", "docker_", "local_", "chroot_", "_")
# How alike a key and a knob must be (difflib's ratio, after folding case and '-') to count
# as a misspelt knob. 0.8 catches one slip in a name of 5+ letters (ctx_sise, threds,
# ram_margin) and lets other deploys' data through (profile 0.43, kind/bind 0.75).
NEAR_MISS = 0.8


def _fold(name: str) -> str:
    return name.lower().replace("-", "_")


def _swapped(a: str, b: str) -> bool:
    """Two adjacent letters swapped (modle, prot): a typo even in a short name."""
    if len(a) != len(b):
        return False
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    return (len(diff) == 2 and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])


def near_miss(name: str) -> str:
    """The knob `name` looks like a misspelling of, or '' when it is someone else's data."""
    knobs = [*RULES, "model"]
    if name in knobs or name.startswith(PYINFRA_PREFIXES):
        return ""
    folded = _fold(name)
    for knob in knobs:
        if folded == knob or _swapped(folded, knob):
            return knob
    close = difflib.get_close_matches(folded, knobs, n=1, cutoff=NEAR_MISS)
    return close[0] if close else ""


def data_keys(data: Mapping[str, Any]) -> list[str]:
    """The keys of a host's data (pyinfra's HostData or a plain dict)."""
    return list(data.dict()) if hasattr(data, "dict") else list(data)


def ignored_keys(names: list[str]) -> list[str]:
    """Host data that is neither ours nor pyinfra's: another deploy's, left alone."""
    return [n for n in names if n not in RULES and n != "model"
            and not n.startswith(PYINFRA_PREFIXES) and not near_miss(n)]


def exclusive(models: tuple[ModelSpec, ...], model: Any) -> None:
    """`models` replaces `model`: both set is refused (which one would the device serve?)."""
    from llama_docker.knobs.defaults import DEFAULTS

    if models and model != DEFAULTS["model"]:
        raise ConfigError("model", model, f"the default {DEFAULTS['model']!r} when 'models' "
                          "is set: the two are exclusive (list this model in models instead)")


def load(data: Mapping[str, Any], host: str = "") -> Config:
    """Check every knob of one host; the first bad one raises with the host's name."""
    values: dict[str, Any] = {}
    try:
        for name in data_keys(data):
            close = near_miss(name)
            if close:
                raise ConfigError(name, data.get(name),
                                  f"a knob of group_data/all.py (did you mean {close!r}?)")
        for knob, rule in RULES.items():
            if data.get(knob) is None:
                raise ConfigError(knob, None, "a value (is group_data/all.py in place?)")
            values[knob] = rule(knob, data.get(knob))
        values["model"] = resolve_model(data.get("model"), "model")
        exclusive(values["models"], data.get("model"))
    except ConfigError as exc:
        raise exc.on(host) from None
    return Config(**values)
