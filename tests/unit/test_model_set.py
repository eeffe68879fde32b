"""Several models per device: the models knob's rules, the preset the router reads (a golden
file), the fit arithmetic for sets, prune by set, the status of a set, and the commands the
deploy runs for a set on a Debian host (from fact fixtures)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from llama_docker.device.fit import GIB, MIB
from llama_docker.device.router_preset import (
    SetEntry,
    files_of,
    render_preset,
    set_file_name,
    set_prune,
)
from llama_docker.device.set_fit import (
    Need,
    auto_models_max,
    set_disk_refusal,
    set_memory_limit_mib,
    set_ram_refusal,
)
from llama_docker.knobs import config
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import ConfigError
from llama_docker.knobs.model_set import ctx_of
from llama_docker.status.models import router_models, summary

from .fixtures.harness import GOLDEN, MODEL_BYTES, MODEL_SHA, knobs, load_fixture, run_deploy

SHA = {n: hashlib.sha256(n.encode()).hexdigest() for n in ("a", "b", "c", "p")}


def _dict(name: str, sha: str, **more: object) -> dict:
    return {"name": name, "path": f"/m/{name}.gguf", "sha256": sha, **more}


def load(**overrides: object) -> config.Config:
    return config.load({**DEFAULTS, **overrides}, "raspi")


# --- the knob ------------------------------------------------------------------------------

def test_no_models_means_the_model_knob_alone() -> None:
    cfg = load()
    assert cfg.models == () and cfg.models_max == 0 and cfg.model.name == DEFAULTS["model"]


def test_models_and_model_together_are_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        load(models=["smolvlm-256m"], model="smolvlm-256m")
    assert str(err.value).startswith("raspi: knob model='smolvlm-256m' is invalid")
    assert "exclusive" in str(err.value) and "\n" not in str(err.value)


def test_presets_and_dicts_make_a_set_in_the_knobs_order() -> None:
    cfg = load(models=["smolvlm-256m", _dict("mine", SHA["a"], args=["--ctx-size", "4096"])],
               models_max=2)
    assert [m.name for m in cfg.models] == ["smolvlm-256m", "mine"]
    assert cfg.models_max == 2 and ctx_of(cfg.models[1], 2048) == 4096
    assert ctx_of(cfg.models[0], 2048) == 2048


@pytest.mark.parametrize("value, knob", [
    ("smolvlm-256m", "models"),
    ([_dict("x", SHA["a"]), _dict("x", SHA["b"])], "models[1].name"),
    ([_dict("default", SHA["a"])], "models[0].name"),
    ([_dict("x", SHA["a"], args=["-c", "512"])], "models[0].args"),
    ([_dict("x", SHA["a"], args=["--port", "9000"])], "models[0].args"),
    ([{"name": "x", "path": "/m/x.gguf"}], "models[0].sha256"),
    (["no-such-preset"], "models[0]"),
])
def test_bad_set_names_the_entry_at_fault(value: object, knob: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(models=value)
    assert err.value.knob == knob and str(err.value).startswith("raspi: knob ")


@pytest.mark.parametrize("value", [-1, 65, True, "2"])
def test_bad_models_max(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        load(models_max=value)
    assert err.value.knob == "models_max"


# --- the preset ----------------------------------------------------------------------------

ENTRIES = [
    SetEntry("chat", SHA["a"], None, ("--chat-template", "chatml", "--jinja")),
    SetEntry("small", SHA["b"], None, ("--ctx-size", "512")),
    SetEntry("vision", SHA["c"], SHA["p"], ()),
]


def test_preset_matches_the_golden_file() -> None:
    text = render_preset(ENTRIES, root="/models", ctx_size=2048, threads=4)
    path = GOLDEN / "preset-three-models.ini"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_preset_name_follows_the_set_and_its_args() -> None:
    one = render_preset(ENTRIES, root="/models", ctx_size=2048, threads=4)
    same = render_preset(list(ENTRIES), root="/models", ctx_size=2048, threads=4)
    other_args = render_preset([ENTRIES[0], SetEntry("small", SHA["b"], None, ()), ENTRIES[2]],
                               root="/models", ctx_size=2048, threads=4)
    assert set_file_name(one) == set_file_name(same) != set_file_name(other_args)
    assert files_of(one) == {f"{SHA[n]}.gguf" for n in ("a", "b", "c", "p")}
    assert re.findall(r"^\[(\w+)\]$", one, re.M) == ["chat", "small", "vision"]  # in order


def test_prune_keeps_the_two_sets_files_and_linked_files_only() -> None:
    stored = [f"{SHA['a']}.gguf", f"{SHA['a']}.ok", f"{SHA['b']}.gguf", f"{SHA['c']}.gguf",
              "set-1111111111111111.ini", "set-2222222222222222.ini",
              "set-3333333333333333.ini", "current-set.ini", "current.gguf"]
    gone = set_prune(stored, ["set-1111111111111111.ini", "set-2222222222222222.ini"],
                     {f"{SHA['a']}.gguf"}, linked={f"{SHA['b']}.gguf"})
    assert gone == [f"{SHA['c']}.gguf", "set-3333333333333333.ini"]


# --- fit -----------------------------------------------------------------------------------

NEEDS = [Need("small", 100 * MIB, 20 * MIB), Need("big", 3 * GIB, GIB // 2),
         Need("mid", GIB, GIB // 4)]


def test_models_max_from_ram_is_one_on_a_small_device() -> None:
    assert auto_models_max(NEEDS, 512, 4 * GIB) == 1  # big alone: 3.5 GiB + margin
    assert auto_models_max(NEEDS, 512, int(5.3 * GIB)) == 2  # big + mid, not small too
    assert auto_models_max(NEEDS, 512, 64 * GIB) == 3  # all, never above the set
    assert auto_models_max(NEEDS * 3, 512, 64 * GIB) == 4  # llama-server's default at most


def test_the_largest_model_alone_not_fitting_names_it() -> None:
    why = set_ram_refusal(NEEDS, 1, 512, 3 * GIB)
    assert why is not None and why.startswith("not enough RAM for big (the largest of models)")


def test_models_max_at_once_not_fitting_names_them() -> None:
    why = set_ram_refusal(NEEDS, 2, 512, 5 * GIB)
    assert why is not None and "models_max=2" in why and "(big, mid)" in why
    assert "\n" not in why
    assert set_ram_refusal(NEEDS, 2, 512, 6 * GIB) is None


def test_a_set_too_big_for_the_disk_names_each_model_and_the_total() -> None:
    why = set_disk_refusal([("a", 40 * MIB), ("b", 40 * MIB)], 4, 64 * MIB, "/mnt/small")
    assert why == ("not enough disk at /mnt/small for models (a 40 MiB, b 40 MiB): needs "
                   "84 MiB (80 MiB models + 4.0 MiB margin), has 64 MiB free; drop one from "
                   "models, free some space or point models_dir at a bigger disk")
    # A model already on the disk takes no room and is not named.
    why = set_disk_refusal([("a", 0), ("b", 70 * MIB)], 4, 64 * MIB, "/m")
    assert why is not None and "(b 70 MiB)" in why and "a " not in why.split("(")[1]
    assert set_disk_refusal([("a", 40 * MIB), ("b", 40 * MIB)], 4, 90 * MIB, "/m") is None
    assert set_disk_refusal([("a", 0)], 4, 0, "/m") is None  # nothing to place
    assert set_disk_refusal([("a", GIB)], 4, None, "/m") is None  # free space unknown


def test_the_deploy_refuses_a_set_the_disk_cannot_hold_naming_both(tmp_path: Path) -> None:
    facts = {**load_fixture("debian"), "FreeBytes(*)": 2 * MIB}
    entries = []
    for name in ("tiny", "other"):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(name.encode() * (MIB // len(name)))  # 1 MiB each, 2 with the margin
        entries.append({"name": name, "path": str(path),
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    data = knobs(ssh_user="me", cache_dir=str(tmp_path / "cache"), disk_margin_mib=1,
                 models=entries)
    (op,) = run_deploy("debian.local", data, facts).ops
    assert op.name == "Preflight | Refuse this host"
    assert op.calls[0]["message"] == (
        "not enough disk at /var/lib/llama-docker/models for models (tiny 1.0 MiB, other "
        "1.0 MiB): needs 3.0 MiB (2.0 MiB models + 1.0 MiB margin), has 2.0 MiB free; drop "
        "one from models, free some space or point models_dir at a bigger disk")


def test_memory_cap_covers_the_largest_loaded_together() -> None:
    assert set_memory_limit_mib(NEEDS, 1) < set_memory_limit_mib(NEEDS, 2)
    assert set_memory_limit_mib(NEEDS, 2) >= (3 * GIB + GIB + 3 * GIB // 4) // MIB


# --- status --------------------------------------------------------------------------------

ROUTER_MODELS = {"data": [
    {"id": "alpha", "status": {"value": "loaded",
                               "args": ["llama-server", "--model", f"/models/{SHA['a']}.gguf"]}},
    {"id": "broken", "status": {"value": "unloaded", "failed": True, "exit_code": 1,
                                "args": ["llama-server", "--model", f"/models/{SHA['b']}.gguf"]}},
]}


def test_status_reads_each_model_from_the_router() -> None:
    models = router_models(json.dumps(ROUTER_MODELS))
    assert models == [
        {"name": "alpha", "sha256": SHA["a"], "state": "loaded", "failed": False},
        {"name": "broken", "sha256": SHA["b"], "state": "unloaded", "failed": True}]
    assert summary(models, 2) == "2 models, 1 loaded, 1 failed"
    assert router_models("") is None and summary(None, 3) == "3 models"


# --- the deploy's commands for a set (Debian fixture) ---------------------------------------

def _set_run(tmp_path: Path):  # noqa: ANN202
    path = tmp_path / "tiny.gguf"
    path.write_bytes(MODEL_BYTES)
    other = tmp_path / "other.gguf"
    other.write_bytes(MODEL_BYTES + b"x")
    data = knobs(ssh_user="me", cache_dir=str(tmp_path / "cache"), models_max=1, models=[
        {"name": "tiny", "path": str(path), "sha256": MODEL_SHA},
        {"name": "other", "path": str(other),
         "sha256": hashlib.sha256(other.read_bytes()).hexdigest(), "args": ["--ctx-size", "512"]},
    ])
    return run_deploy("debian.local", data, load_fixture("debian"))


def test_a_set_pushes_each_file_then_serves_its_preset(tmp_path: Path) -> None:
    run = _set_run(tmp_path)
    names = run.names()
    assert [n for n in names if n.startswith("Models | Push")] == [
        f"Models | Push {n}.gguf ({s} bytes), verify sha256 on device"
        for n, s in (("tiny", len(MODEL_BYTES)), ("other", len(MODEL_BYTES) + 1))]
    preset = run.op("Models | Preset of 2 models (tiny, other)")
    (dest, text), = preset.uploads.items()
    assert dest.startswith("/var/lib/llama-docker/models/set-") and "[other]\n" in text
    assert "ctx-size = 512" in text
    assert names.index("Models | Serve tiny, other") > names.index(preset.name)
    # Not the one-model step: only what every model step shares (the store, and its pushes
    # started before the server image's step, each file once).
    assert [n for n in names if n.startswith("Model | ")] == [
        "Model | Model store", "Model | Start the push of tiny.gguf, other.gguf, beside the "
        "server image"]
    assert names.index("Model | Start the push of tiny.gguf, other.gguf, beside the server "
                       "image") < names.index(next(n for n in names if n.startswith(
                           "Server image | ")))


def test_a_set_unit_runs_the_router_without_a_model(tmp_path: Path) -> None:
    """Through the image's entrypoint (its GPU fallback and key file serve a router too),
    told the preset and the limit by environment."""
    unit = next(text for op in _set_run(tmp_path).ops for dest, text in op.uploads.items()
                if dest.endswith("llama-docker.service"))
    assert "--entrypoint" not in unit
    assert ("--env LLAMA_PRESET=/models/current-set.ini --env LLAMA_MODELS_MAX=1" in unit)
    assert "--ctx-size" not in unit  # in the preset's [*]: a model's own wins there
    assert "--alias" not in unit  # the router names each model from its preset
    assert "--cors-origins ''" in unit
