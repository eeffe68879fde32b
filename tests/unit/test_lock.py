"""The lock file: its format, the rules that pin a model file or resolve it anew, the upgrade
knob, the file on disk, and a deploy that reads and writes it (no network, no device)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from llama_docker.knobs import config
from llama_docker.knobs import lock as rules
from llama_docker.knobs.errors import ConfigError
from llama_docker.knobs.lock import ImagePin, Lock, LockError, ModelPin, Pin
from llama_docker.knobs.spec import ModelFile, resolve_model
from llama_docker.tasks import lock as run_lock
from llama_docker.transfer import lockfile

from .fixtures.harness import MODEL_SHA, UI_SHA, deploy_fixture, knobs, ui_served

URL = "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct-GGUF/resolve/main/q.gguf"
A, B = "a" * 64, "b" * 64


def _lock() -> Lock:
    return Lock(models={"qwen": ModelPin(Pin(URL, A, 100)),
                        "smol": ModelPin(Pin(URL + "s", B, 5), mmproj=Pin(URL + "p", A, 7))},
                webui={"b11669": Pin("https://example.org/b11669/ui.tar.gz", B, 9)},
                images={"amd64": ImagePin("llama-docker/server:3f2a9c0d1e4b", "c" * 64,
                                          "1:0.7.0+dfsg-2")})


# --- the format ------------------------------------------------------------------------------

def test_dumps_is_sorted_indented_and_reads_back_the_same() -> None:
    text = rules.dumps(_lock())
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert rules.loads(text) == _lock()


def test_the_same_content_is_the_same_text_whatever_the_order() -> None:
    one = Lock().with_model("b", ModelPin(Pin(URL, B, 1))).with_model("a", ModelPin(Pin(URL, A)))
    two = Lock().with_model("a", ModelPin(Pin(URL, A))).with_model("b", ModelPin(Pin(URL, B, 1)))
    assert rules.dumps(one) == rules.dumps(two)


def test_a_path_is_kept_as_path_and_an_unknown_size_is_left_out() -> None:
    data = json.loads(rules.dumps(Lock(models={"m": ModelPin(Pin("/models/m.gguf", A))})))
    assert data["models"]["m"] == {"path": "/models/m.gguf", "sha256": A}
    assert data["version"] == 1 and data["webui"] == {} and data["images"] == {}


@pytest.mark.parametrize(("text", "says"), [
    ("{", "not valid JSON"),
    ("[]", "not a JSON object"),
    ('{"version": 2}', "version 2"),
    ('{"version": 1, "models": []}', "models is not a JSON object"),
    ('{"version": 1, "models": {"m": {"url": "http://x", "sha256": "ABC"}}}',
     "models.m.sha256"),
    ('{"version": 1, "models": {"m": {"sha256": "' + A + '"}}}', "models.m has no url"),
    ('{"version": 1, "models": {"m": {"url": "http://x", "sha256": "' + A + '", "size": 0}}}',
     "models.m.size"),
    ('{"version": 1, "images": {"amd64": {"tag": "t"}}}', "images.amd64 needs"),
])
def test_what_is_not_a_lock_is_said(text: str, says: str) -> None:
    with pytest.raises(LockError, match=says.replace(".", r"\.")):
        rules.loads(text)


def test_merged_keeps_entries_the_run_did_not_touch() -> None:
    news = Lock().with_model("qwen", ModelPin(Pin(URL, B, 100)))
    merged = _lock().merged(news)
    assert merged.models["qwen"].file.sha256 == B
    assert merged.models["smol"] == _lock().models["smol"]
    assert merged.webui == _lock().webui and merged.images == _lock().images


# --- the lock_upgrade knob -------------------------------------------------------------------

@pytest.mark.parametrize(("value", "setting"), [
    (False, False), (True, True), ("qwen", ("qwen",)), ("smol, qwen", ("qwen", "smol")),
    (["webui", "qwen", "qwen"], ("qwen", "webui")),
])
def test_upgrade_knob(value: object, setting: object) -> None:
    assert rules.upgrade_rule("lock_upgrade", value) == setting


@pytest.mark.parametrize("value", ["", [], "a b", ["ok", 3], 1, None, {"qwen": True}])
def test_bad_upgrade_knob_names_what_is_accepted(value: object) -> None:
    with pytest.raises(ConfigError, match="lock_upgrade=.* is invalid: expected False, True"):
        rules.upgrade_rule("lock_upgrade", value)


def test_upgrade_knob_is_a_knob() -> None:
    assert config.load(knobs(lock_upgrade="qwen")).lock_upgrade == ("qwen",)
    assert config.load(knobs()).lock_upgrade is False
    with pytest.raises(ConfigError, match="raspi: knob lock_upgrade=3 is invalid"):
        config.load(knobs(lock_upgrade=3), "raspi")


def test_upgrade_of_one_name() -> None:
    assert rules.wants_upgrade(True, "any")
    assert rules.wants_upgrade(("qwen",), "qwen")
    assert not rules.wants_upgrade(("qwen",), "smol")
    assert not rules.wants_upgrade(False, "qwen")


# --- pin, or resolve anew --------------------------------------------------------------------

def test_a_file_the_lock_has_is_taken_from_it_with_its_size() -> None:
    d = rules.decide(ModelFile(URL, None), Pin(URL, A, 100), upgrade=False)
    assert not d.anew and d.file == ModelFile(URL, A, 100)


def test_a_file_the_lock_lacks_is_resolved() -> None:
    d = rules.decide(ModelFile(URL, None), None, upgrade=False)
    assert d.anew and d.why == "" and d.file.sha256 is None


def test_a_knob_with_another_url_wins_and_says_which() -> None:
    d = rules.decide(ModelFile(URL + "2", None), Pin(URL, A, 100), upgrade=False)
    assert d.anew and d.file.sha256 is None
    assert d.why == f"the knob's url differs from the lock's ({URL})"


def test_a_knob_pinning_another_sha_wins() -> None:
    d = rules.decide(ModelFile(URL, B), Pin(URL, A, 100), upgrade=False)
    assert d.anew and d.file.sha256 == B
    assert d.why == f"the knob's sha256 {B[:12]} differs from the lock's {A[:12]}"


def test_a_knob_pinning_the_locked_sha_is_the_lock() -> None:
    d = rules.decide(ModelFile(URL, A), Pin(URL, A, 100), upgrade=True)  # nothing to upgrade
    assert not d.anew and d.file == ModelFile(URL, A, 100)


def test_an_upgrade_resolves_an_unpinned_file_anew() -> None:
    d = rules.decide(ModelFile(URL, None), Pin(URL, A, 100), upgrade=True)
    assert d.anew and d.why == "upgrade" and d.file.sha256 is None and d.file.size is None


def test_an_upgrade_of_one_name_leaves_the_others_pinned() -> None:
    lock = _lock()
    qwen = resolve_model({"name": "qwen", "url": URL})
    smol = resolve_model({"name": "smol", "url": URL + "s", "mmproj": {"url": URL + "p"}})
    setting = rules.upgrade_rule("lock_upgrade", "qwen")
    spec, main, proj = rules.pinned_spec(qwen, lock, rules.wants_upgrade(setting, "qwen"))
    assert main.anew and spec.file.sha256 is None and proj is None
    spec, main, proj = rules.pinned_spec(smol, lock, rules.wants_upgrade(setting, "smol"))
    assert not main.anew and proj is not None and not proj.anew
    assert spec.file.sha256 == B and spec.mmproj is not None and spec.mmproj.sha256 == A


def test_pinned_config_gives_status_the_locked_sha_of_a_preset() -> None:
    cfg = config.load(knobs())
    name = cfg.model.name
    lock = Lock().with_model(name, ModelPin(Pin(cfg.model.file.source, A, 10)))
    assert cfg.model.file.sha256 is None
    assert rules.pinned_config(cfg, lock).model.file.sha256 == A
    assert rules.pinned_config(cfg, Lock()).model.file.sha256 is None


def test_the_runs_lines() -> None:
    new = rules.Decision(ModelFile(URL, None), anew=True)
    assert rules.said("qwen", new, None, Pin(URL, A, 100)) == \
        f"qwen: added (sha256 {A[:12]}, 100 bytes)"
    up = rules.Decision(ModelFile(URL, None), anew=True, why="upgrade")
    assert rules.said("qwen", up, Pin(URL, A, 100), Pin(URL, B, 100)) == \
        f"qwen: upgraded, sha256 {A[:12]} -> {B[:12]} (the file at its url changed)"
    assert rules.said("qwen", up, Pin(URL, A, 100), Pin(URL, A, 100)).startswith(
        "qwen: up to date")
    moved = rules.decide(ModelFile(URL + "2", None), Pin(URL, A, 100), upgrade=False)
    assert rules.said("qwen", moved, Pin(URL, A, 100), Pin(URL + "2", B, 3)) == \
        f"qwen: the knob's url differs from the lock's ({URL}): updated (sha256 {B[:12]}, 3 bytes)"
    kept = rules.decide(ModelFile(URL, None), Pin(URL, A), upgrade=False)
    assert rules.said("qwen", kept, Pin(URL, A), Pin(URL, A, 100)) == ""  # gained its size


def test_image_lines_and_keys() -> None:
    assert rules.image_key("amd64", "cpu") == "amd64"
    assert rules.image_key("amd64", "vulkan") == "amd64-vulkan"
    pin = ImagePin("llama-docker/server:1", "c" * 64, "1:0.7.0")
    assert rules.image_said("amd64", None, pin).startswith("server image amd64: added")
    assert rules.image_said("amd64", pin, pin) == ""
    rebuilt = ImagePin("llama-docker/server:1", "d" * 64, "1:0.7.1")
    assert "built anew" in rules.image_said("amd64", pin, rebuilt)
    retagged = ImagePin("llama-docker/server:2", "d" * 64, "1:0.7.0")
    assert "build inputs changed" in rules.image_said("amd64", pin, retagged)


# --- the file --------------------------------------------------------------------------------

def test_no_file_is_an_empty_lock(tmp_path: Path) -> None:
    assert lockfile.read(tmp_path / rules.FILENAME) == Lock()


def test_write_is_atomic_keeps_the_mode_and_skips_the_same_text(tmp_path: Path) -> None:
    path = tmp_path / rules.FILENAME
    assert lockfile.write(path, _lock())
    assert lockfile.read(path) == _lock()
    os.chmod(path, 0o640)
    assert not lockfile.write(path, _lock())  # the same text: not touched
    changed = _lock().with_model("new", ModelPin(Pin(URL, A)))
    assert lockfile.write(path, changed)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [rules.FILENAME]  # no temp left


def test_a_corrupt_file_is_named_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / rules.FILENAME
    path.write_text("<<<<<<< HEAD\n")
    with pytest.raises(LockError, match=f"{path} is not a lock file llama-docker can read: "
                                        "not valid JSON .*left as it is"):
        lockfile.read(path)
    assert path.read_text() == "<<<<<<< HEAD\n"


def test_the_file_is_beside_the_inventory(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lockfile.ENV, raising=False)
    inv = tmp_path / "home" / "inventory.py"
    inv.parent.mkdir()
    inv.write_text("home = []\n")
    assert lockfile.locate(str(inv), "/elsewhere") == inv.parent / rules.FILENAME
    assert lockfile.locate("raspi.local,pinebook.local", str(tmp_path)) == \
        tmp_path / rules.FILENAME
    monkeypatch.setenv(lockfile.ENV, str(tmp_path / "other.lock"))
    assert lockfile.locate(str(inv), "/elsewhere") == tmp_path / "other.lock"


# --- in a deploy (tests/unit/fixtures/harness.py: real steps, facts from a fixture) ----------

@pytest.fixture
def lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / rules.FILENAME
    monkeypatch.setenv(lockfile.ENV, str(path))
    run_lock.forget()
    yield path
    run_lock.forget()


def _deploy(tmp_path: Path, **overrides: object):  # noqa: ANN202 - the harness's Run
    run_lock.forget()  # one run per process, as pyinfra has
    run = deploy_fixture(tmp_path, "debian", facts=ui_served(tmp_path), **overrides)
    return run, run_lock.flush()


def test_a_deploy_writes_what_it_resolved_and_the_next_one_nothing(
        tmp_path: Path, lock_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, written = _deploy(tmp_path)
    assert written and not run.names()[0].startswith("Preflight | Refuse")
    lock = lockfile.read(lock_file)
    assert lock.models["tiny"].file == Pin(str(tmp_path / "tiny.gguf"), MODEL_SHA,
                                           (tmp_path / "tiny.gguf").stat().st_size)
    assert lock.webui["b11669"].sha256 == UI_SHA  # the digest the cache remembered
    err = capsys.readouterr().err
    assert f"llama-docker.lock: tiny: added (sha256 {MODEL_SHA[:12]}" in err
    assert f"llama-docker.lock: written: {lock_file}" in err
    text = lock_file.read_text()
    _, written = _deploy(tmp_path)
    assert not written and lock_file.read_text() == text
    assert "llama-docker.lock:" not in capsys.readouterr().err


def test_a_corrupt_lock_refuses_the_host_and_is_not_written(tmp_path: Path,
                                                            lock_file: Path) -> None:
    lock_file.write_text('{"version": 1,,}')
    run, written = _deploy(tmp_path)
    assert run.names() == ["Preflight | Refuse this host"], run.names()
    assert not written and lock_file.read_text() == '{"version": 1,,}'


def test_a_dry_run_never_writes(tmp_path: Path, lock_file: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.argv", ["pyinfra", "inventory.py", "deploy.py", "--dry"])
    _, written = _deploy(tmp_path)
    assert not written and not lock_file.exists()
    assert "llama-docker.lock: not written (--dry)" in capsys.readouterr().err


def test_lock_upgrade_naming_no_model_is_said(tmp_path: Path, lock_file: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _deploy(tmp_path, lock_upgrade="qwen-typo")
    assert ("llama-docker.lock: lock_upgrade names qwen-typo: no model (or web UI) of this "
            "run has that name" in capsys.readouterr().err)


def test_the_run_finds_the_inventory_pyinfra_was_given(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import click
    import pyinfra

    monkeypatch.delenv(lockfile.ENV, raising=False)
    monkeypatch.setattr(pyinfra, "is_cli", True)
    inv = tmp_path / "home" / "inventory.py"
    inv.parent.mkdir()
    inv.write_text("home = []\n")
    # What pyinfra's click command holds while the deploy files run (pyinfra_cli itself is
    # not imported here: it monkey-patches the whole process for gevent).
    ctx = click.Context(click.Command("pyinfra"))
    ctx.params = {"inventory": str(inv), "operations": ("deploy.py",), "dry": False}
    with ctx:
        assert run_lock.lock_path() == inv.parent / rules.FILENAME
    monkeypatch.setattr(pyinfra, "is_cli", False)
    assert run_lock.lock_path() is None  # the API (and these tests): no lock unless named


def test_two_hosts_naming_two_files_one_name_keep_the_first(
        lock_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    run = run_lock.current()
    assert run is not None
    for name, url in (("raspi", URL), ("pinebook", URL + "2"), ("deck", URL)):
        monkeypatch.setattr(run_lock, "host", SimpleNamespace(name=name))
        spec = resolve_model({"name": "qwen", "url": url})
        sha = B if url.endswith("2") else A
        run_lock._record_model(run, spec, ModelPin(Pin(url, sha, 10)), upgrade=False)
    assert run.news.models["qwen"].file == Pin(URL, A, 10)
    err = capsys.readouterr().err
    assert err.count("llama-docker.lock: qwen: added") == 1
    assert ("llama-docker.lock: qwen: pinebook's model knob names another file than raspi's "
            f"({URL}2): the lock keeps raspi's; give the two models different names") in err


def test_a_locked_file_that_changed_upstream_names_the_upgrade(lock_file: Path) -> None:
    from llama_docker.knobs.errors import VerifyError

    lockfile.write(lock_file, Lock().with_model("qwen", ModelPin(Pin(URL, A, 10))))
    run_lock.forget()
    cfg = run_lock.pin(config.load(knobs(model={"name": "qwen", "url": URL})))
    assert cfg.model.file.sha256 == A and cfg.model.file.size == 10
    exc = VerifyError(f"q.gguf from {URL} hashes {B}, expected {A}; the download was deleted")
    assert run_lock.explain(exc).endswith(
        "the file at its url changed since the lock file pinned it; --data "
        "lock_upgrade=qwen takes the new one")
    other = VerifyError(f"x hashes {A}, expected {B}")
    assert run_lock.explain(other) == str(other)


def test_a_changed_file_at_the_same_url_waits_for_the_upgrade(
        tmp_path: Path, lock_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A stand-in Hugging Face on 127.0.0.1: the first run resolves and locks the file; with
    other bytes served under the same URL the next run asks nothing and keeps the locked
    file; `lock_upgrade` then takes the new one (each run a process of its own, as pyinfra's:
    the controller's memo of what URLs hold is dropped between them)."""
    from llama_docker.knobs import spec as spec_module
    from llama_docker.transfer import local_model
    from tests.lab.fault_server import FaultServer

    from .fixtures.harness import load_fixture, run_deploy

    old, new = b"GGUF old bytes\n" * 100, b"GGUF new bytes\n" * 100
    path = "/org/tiny-GGUF/resolve/main/tiny.gguf"
    with FaultServer({path: old}) as srv:
        srv.hub(path, sha256=hashlib.sha256(old).hexdigest(), size=len(old))
        monkeypatch.setattr(spec_module, "HF", srv.url("").rstrip("/"))
        data = knobs(ssh_user="me", model={"name": "tiny", "url": srv.url(path)},
                     cache_dir=str(tmp_path / "cache"), webui="simplechat")

        def deploy(**more: object) -> str:
            run_lock.forget()
            local_model._seen.clear()
            run = run_deploy("debian.local", {**data, **more}, load_fixture("debian"))
            assert not run.names()[0].startswith("Preflight | Refuse"), run.names()
            run_lock.flush()
            return lockfile.read(lock_file).models["tiny"].file.sha256

        assert deploy() == hashlib.sha256(old).hexdigest()
        srv.put(path, new)
        srv.hub(path, sha256=hashlib.sha256(new).hexdigest(), size=len(new))
        capsys.readouterr()
        asked = srv.requests
        assert deploy() == hashlib.sha256(old).hexdigest()
        assert srv.requests == asked  # not even a HEAD
        assert "llama-docker.lock:" not in capsys.readouterr().err
        assert deploy(lock_upgrade="tiny") == hashlib.sha256(new).hexdigest()
        err = capsys.readouterr().err
        assert (f"llama-docker.lock: tiny: upgraded, sha256 {hashlib.sha256(old).hexdigest()[:12]}"
                f" -> {hashlib.sha256(new).hexdigest()[:12]}") in err
        assert srv.stats(path).head >= 2
