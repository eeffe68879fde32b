"""What model to serve: the `model` knob, as a preset name or a dict, checked."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from llama_docker.knobs.errors import ConfigError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
# HF_ENDPOINT points at a Hugging Face mirror, as huggingface_hub's own variable does.
HF = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: where it comes from and what it must hash to."""

    source: str  # http(s) URL, or a path on the controller
    sha256: str | None  # None only for Hugging Face URLs: the hub's LFS hash is used
    size: int | None = None

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("http://", "https://"))

    @property
    def filename(self) -> str:
        if self.is_url:
            return unquote(PurePosixPath(urlparse(self.source).path).name)
        return Path(self.source).name

    @property
    def is_huggingface(self) -> bool:
        return self.source.startswith(HF + "/")


@dataclass(frozen=True)
class ModelSpec:
    """A model to serve: the GGUF, an optional projector, and llama-server args."""

    name: str
    file: ModelFile
    mmproj: ModelFile | None = None
    args: tuple[str, ...] = field(default_factory=tuple)

    def files(self) -> list[ModelFile]:
        return [self.file] + ([self.mmproj] if self.mmproj else [])


def _hf(repo: str, filename: str) -> str:
    return f"{HF}/{repo}/resolve/main/{filename}"


# Hashes come from the hub at deploy time (and are printed so they can be pinned).
PRESETS: dict[str, dict[str, Any]] = {
    # The original llama-docker's model: LLaVA 1.5 7B, Q4_K, with its image projector.
    "llava-v1.5-7b-q4": {
        "url": _hf("mys/ggml_llava-v1.5-7b", "ggml-model-q4_k.gguf"),
        "mmproj": {"url": _hf("mys/ggml_llava-v1.5-7b", "mmproj-model-f16.gguf")},
        "args": ["--chat-template", "vicuna"],
    },
    # A small vision model for 2-4 GB devices (Raspberry Pi, Pinebook Pro).
    "smolvlm-256m": {
        "url": _hf("ggml-org/SmolVLM-256M-Instruct-GGUF", "SmolVLM-256M-Instruct-Q8_0.gguf"),
        "mmproj": {
            "url": _hf("ggml-org/SmolVLM-256M-Instruct-GGUF",
                       "mmproj-SmolVLM-256M-Instruct-Q8_0.gguf"),
        },
    },
    # A small text chat model: about 400 MB, fits any 64-bit Pi.
    "qwen2.5-0.5b-instruct": {
        "url": _hf("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"),
    },
}


def _file(value: Any, knob: str) -> ModelFile:
    if not isinstance(value, Mapping):
        raise ConfigError(knob, value, "a dict with 'url' (or 'path') and 'sha256'")
    unknown = set(value) - {"url", "path", "sha256", "size"}
    if unknown:
        raise ConfigError(knob, value, f"only url, path, sha256, size (not {sorted(unknown)})")
    source = value.get("url") or value.get("path")
    if not isinstance(source, str) or not source:
        raise ConfigError(knob, value, "a 'url' (http/https) or a 'path' on this controller")
    if "url" in value and not source.startswith(("http://", "https://")):
        raise ConfigError(f"{knob}.url", source, "an http:// or https:// URL")
    sha = value.get("sha256")
    if sha is not None:
        sha = sha.lower() if isinstance(sha, str) else sha
        if not isinstance(sha, str) or not SHA256.match(sha):
            raise ConfigError(f"{knob}.sha256", value.get("sha256"), "64 hex digits")
    f = ModelFile(source=source, sha256=sha, size=value.get("size"))
    if sha is None and not f.is_huggingface:
        raise ConfigError(f"{knob}.sha256", None,
                          "64 hex digits (only Hugging Face URLs may omit it)")
    if f.size is not None and (isinstance(f.size, bool) or not isinstance(f.size, int)
                               or f.size <= 0):
        raise ConfigError(f"{knob}.size", f.size, "a positive number of bytes")
    return f


def resolve_model(value: Any, knob: str = "model") -> ModelSpec:
    """A preset name or a dict -> ModelSpec; raises ConfigError naming the bad field."""
    if isinstance(value, str):
        if value not in PRESETS:
            raise ConfigError(knob, value, "a preset (" + ", ".join(PRESETS) + ") or a dict")
        return resolve_model({"name": value, **PRESETS[value]}, knob)
    if not isinstance(value, Mapping):
        raise ConfigError(knob, value, "a preset name or a dict with url/path and sha256")
    unknown = set(value) - {"name", "url", "path", "sha256", "size", "mmproj", "args"}
    if unknown:
        raise ConfigError(knob, value, f"keys name, url|path, sha256, size, mmproj, args "
                                       f"(not {sorted(unknown)})")
    main = _file({k: value[k] for k in ("url", "path", "sha256", "size") if k in value}, knob)
    name = value.get("name") or re.sub(r"[^\w.+-]+", "-", Path(main.filename).stem)
    if not isinstance(name, str) or not re.match(r"^[\w.+-]{1,100}$", name):
        raise ConfigError(f"{knob}.name", name, "letters, digits, '.', '_', '+' or '-'")
    mmproj = _file(value["mmproj"], f"{knob}.mmproj") if value.get("mmproj") else None
    args = value.get("args") or []
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{knob}.args", args, "a list of strings")
    return ModelSpec(name=name, file=main, mmproj=mmproj, args=tuple(args))
