"""Several models on one device (the models knob, llama-server's router mode): picked by name
through a real OpenAI client, loaded on demand, at most models_max at once; a changed set
restarts, the same set changes nothing; rollback and prune work on sets; a model llama.cpp
refuses leaves the others serving. One device, tests in file order."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import openai
import pytest

from tests.conftest import REPO, Run, deploy, fresh_device, http_json, inventory, write_knobs
from tests.lab import lab
from tests.lab.tiny_model import sha256_file, write_tiny_gguf

pytestmark = pytest.mark.lab
HOST = "e2e-mm-set"
STORE = "/var/lib/llama-docker/models"

device = fresh_device(HOST, index=65)


@pytest.fixture(scope="module")
def inv(device: lab.Device, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return inventory(tmp_path_factory.mktemp("inv"), [device]).parent


def _model(folder: Path, name: str, **shape: int) -> dict:
    path = folder / f"{name}.gguf"
    return {"name": name, "path": str(path), "sha256": write_tiny_gguf(path, **shape)}


def _unknown_architecture(folder: Path) -> dict:
    """A well-formed GGUF whose architecture llama.cpp does not know: it passes the store's
    sha256 check and fails only when the router loads it."""
    path = folder / "broken.gguf"
    w = gguf.GGUFWriter(str(path), "no-such-architecture")
    w.add_name("not a model llama.cpp knows")
    w.add_tensor("weight", np.zeros(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"name": "broken", "path": str(path), "sha256": sha256_file(path)}


@pytest.fixture(scope="module")
def models(inv: Path) -> dict[str, dict]:
    return {
        "alpha": _model(inv, "alpha", seed=31),
        "beta": {**_model(inv, "beta", seed=32, n_embd=128, n_ff=256),
                 "args": ["--ctx-size", "256"]},
        "gamma": _model(inv, "gamma", seed=33, n_embd=256, n_ff=512, n_layer=3),
        "broken": _unknown_architecture(inv),
    }


def deploy_ok(inv: Path, entry: str = "deploy.py", **knobs: object) -> Run:
    if knobs:
        write_knobs(inv, **knobs)
    run = deploy(inv / "inventory.py", entry=entry)
    assert run.code == 0, run.output[-4000:]
    return run


def listed(device: lab.Device) -> dict[str, dict]:
    status, body = http_json(f"http://127.0.0.1:{device.http_port}/models")
    assert status == 200, status
    return {m["id"]: m["status"] for m in body["data"]}


def client(device: lab.Device) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{device.http_port}/v1", api_key="none",
                         timeout=120, max_retries=0)


def ask(device: lab.Device, name: str) -> str:
    """One chat completion through the openai client; the name of the model that answered."""
    reply = client(device).chat.completions.create(
        model=name, messages=[{"role": "user", "content": "Hello"}], max_tokens=4)
    return reply.model


def stored(device: lab.Device) -> list[str]:
    return device.exec("ls", "-1", STORE).split()


def test_the_set_is_listed_by_name(device: lab.Device, inv: Path, models: dict) -> None:
    deploy_ok(inv, models=[models[n] for n in ("alpha", "beta", "gamma")], models_max=1)
    # Exactly the knob's names: no phantom `default` entry (llama.cpp #22364).
    assert set(listed(device)) == {"alpha", "beta", "gamma"}
    for name in ("alpha", "beta", "gamma"):
        assert f"{models[name]['sha256']}.gguf" in stored(device)


def test_each_model_answers_by_name_through_the_openai_client(device: lab.Device) -> None:
    for name in ("alpha", "beta", "gamma"):
        assert ask(device, name) == name


def test_an_unknown_name_is_a_clear_4xx(device: lab.Device) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask(device, "delta")
    assert err.value.status_code == 400
    assert "delta" in str(err.value) and "not found" in str(err.value)


def test_models_max_one_unloads_the_first_for_the_second(device: lab.Device) -> None:
    ask(device, "alpha")
    assert listed(device)["alpha"]["value"] == "loaded"
    ask(device, "beta")
    now = listed(device)
    assert now["beta"]["value"] == "loaded"
    assert now["alpha"]["value"] == "unloaded"


def test_the_second_run_changes_nothing(device: lab.Device, inv: Path) -> None:
    run = deploy_ok(inv)
    assert run.changed(HOST) == 0, run.output[-3000:]


def test_a_model_removed_from_the_list_stops_being_served_and_its_file_stays(
        device: lab.Device, inv: Path, models: dict) -> None:
    deploy_ok(inv, models=[models["alpha"], models["beta"]], models_max=1)
    assert set(listed(device)) == {"alpha", "beta"}
    with pytest.raises(openai.BadRequestError):
        ask(device, "gamma")
    assert f"{models['gamma']['sha256']}.gguf" in stored(device)  # kept for rollback


def test_rollback_serves_the_previous_set_again(device: lab.Device, inv: Path) -> None:
    deploy_ok(inv, entry="rollback.py")
    assert set(listed(device)) == {"alpha", "beta", "gamma"}
    assert ask(device, "gamma") == "gamma"


def test_a_model_that_fails_to_load_leaves_the_others_serving(
        device: lab.Device, inv: Path, models: dict) -> None:
    """Fault: a set holds a model llama.cpp refuses (an unknown architecture) | Seen: asking
    for it fails at once with the model named (HTTP 500); status.py names it failed | Left:
    the other models of the set answer as before"""
    deploy_ok(inv, models=[models["alpha"], models["beta"], models["broken"]], models_max=1)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        ask(device, "broken")
    assert time.monotonic() - started < 60  # an answer, not a spinner (llama.cpp #19885)
    assert "broken" in str(err.value)
    assert listed(device)["broken"].get("failed") is True
    assert ask(device, "alpha") == "alpha"
    proc = subprocess.run([sys.executable, "status.py", str(inv / "inventory.py"), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    (row,) = json.loads(proc.stdout)
    by_name = {m["name"]: m for m in row["models"]}
    assert by_name["broken"]["failed"] is True
    assert by_name["alpha"]["sha256"] == models["alpha"]["sha256"]
    assert row["model"].startswith("3 models") and "1 failed" in row["model"]


def test_prune_keeps_the_current_and_previous_sets_files_only(
        device: lab.Device, inv: Path, models: dict) -> None:
    # Current: alpha alone; previous: alpha, beta, broken. gamma is in neither.
    deploy_ok(inv, models=[models["alpha"]], models_max=1)
    files = stored(device)
    for name in ("alpha", "beta", "broken"):
        assert f"{models[name]['sha256']}.gguf" in files
    assert f"{models['gamma']['sha256']}.gguf" not in files
    assert len([f for f in files if f.startswith("set-")]) == 2
    assert set(listed(device)) == {"alpha"}


def test_a_set_the_disk_cannot_hold_is_refused_naming_each_model(
        device: lab.Device, inv: Path) -> None:
    """Fault: models_dir on a disk that holds each model of the set but not both | Seen: `not
    enough disk at <dir> for models (wide-1 N MiB, wide-2 N MiB): needs ..., has ... free`
    before any byte moves | Left: not a byte written; the set before still serving"""
    device.exec("sh", "-c", "mkdir -p /mnt/small && mount -t tmpfs -o size=8m tmpfs /mnt/small")
    try:
        before = set(listed(device))
        wide = [_model(inv, f"wide-{i}", seed=60 + i, n_embd=256, n_ff=512) for i in (1, 2)]
        write_knobs(inv, models=wide, models_max=1, models_dir="/mnt/small/models",
                    disk_margin_mib=1)
        run = deploy(inv / "inventory.py")
        assert run.code != 0
        line = next((ln for ln in run.output.splitlines()
                     if "not enough disk at /mnt/small/models for models" in ln), "")
        assert "wide-1 5.5 MiB" in line and "wide-2 5.5 MiB" in line, run.output[-3000:]
        assert "(11 MiB models + 1.0 MiB margin)" in line, line
        assert "Traceback" not in run.output
        assert device.exec("ls", "-A", "/mnt/small").split() == []  # not a byte moved
        assert set(listed(device)) == before
    finally:
        device.exec("umount", "/mnt/small", check=False)
