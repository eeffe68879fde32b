"""The model knob: presets and dicts, and the sha256 rule."""

from __future__ import annotations

import pytest

from llama_docker.knobs.errors import ConfigError
from llama_docker.knobs.spec import PRESETS, resolve_model

SHA = "ab" * 32


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_resolve_to_hugging_face(name: str) -> None:
    spec = resolve_model(name)
    assert spec.name == name
    assert all(f.is_huggingface and f.sha256 is None for f in spec.files())


def test_llava_preset_has_projector_and_template() -> None:
    spec = resolve_model("llava-v1.5-7b-q4")
    assert spec.mmproj is not None and spec.mmproj.filename == "mmproj-model-f16.gguf"
    assert spec.args == ("--chat-template", "vicuna")


def test_path_spec() -> None:
    spec = resolve_model({"path": "/m/tiny.gguf", "sha256": SHA.upper()})
    assert (spec.name, spec.file.sha256, spec.file.is_url) == ("tiny", SHA, False)


@pytest.mark.parametrize(("value", "fragment"), [
    ("nope", "a preset"),
    (42, "a preset name or a dict"),
    ({"path": "/m.gguf"}, "model.sha256=None"),
    ({"url": "https://example.org/m.gguf"}, "only Hugging Face URLs may omit it"),
    ({"url": "ftp://h/m.gguf", "sha256": SHA}, "model.url='ftp://h/m.gguf'"),
    ({"path": "/m.gguf", "sha256": "xyz"}, "64 hex digits"),
    ({"path": "/m.gguf", "sha256": SHA, "size": -1}, "a positive number of bytes"),
    ({"path": "/m.gguf", "sha256": SHA, "colour": "red"}, "colour"),
    ({"path": "/m.gguf", "sha256": SHA, "args": "--temp 1"}, "model.args"),
    ({"path": "/m.gguf", "sha256": SHA, "mmproj": {"path": "/p.gguf"}}, "model.mmproj.sha256"),
])
def test_bad_model_specs(value: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_model(value)
    assert fragment in str(err.value)


def test_hf_url_without_sha_is_allowed() -> None:
    spec = resolve_model({"url": "https://huggingface.co/o/r/resolve/main/x%20y.gguf"})
    assert spec.file.filename == "x y.gguf" and spec.file.sha256 is None
