"""The lock's side of `llama-docker`: `--upgrade` becomes the lock_upgrade knob, `bundle`
writes the lock and its cached files into one archive, `deploy --from` unpacks one into this
controller's cache (each file checked against its lock) before the deploy starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_docker.knobs.lock import FILENAME
from llama_docker.tasks import cli
from llama_docker.transfer import lockfile
from tests.unit.test_bundle import MODEL, UI, _sha
from tests.unit.test_bundle import home as controller  # noqa: F401 - a fixture
from tests.unit.test_cli import closed_port, llama_docker

DEPLOY = str(cli.ENTRY / "deploy.py")


def folder_with(where: Path, cache: Path) -> Path:
    """An inventory of one host (nobody listens at its address) using `cache`."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "inventory.py").write_text(
        f'home = [("nas", {{"ssh_hostname": "127.0.0.1", "ssh_port": {closed_port()}, '
        f'"cache_dir": {str(cache)!r}}})]\n')
    return where


@pytest.mark.parametrize(("name", "says"), [
    ("deploy", ["--upgrade", "--from FILE", "--upgrade=NAME[,NAME]", "lock_upgrade=True"]),
    ("plan", ["--upgrade"]),
    ("model", ["--upgrade"]),
    ("bundle", ["llama-docker bundle FILE INVENTORY", "deploy --from FILE"]),
])
def test_the_lock_options_are_in_the_help(name: str, says: list[str],
                                          capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    said = " ".join(capsys.readouterr().out.split())
    for text in says:
        assert text in said, said


@pytest.mark.parametrize(("args", "data"), [
    (["deploy", "--upgrade"], "lock_upgrade=True"),
    (["deploy", "--upgrade=qwen2.5-0.5b-instruct"], "lock_upgrade=qwen2.5-0.5b-instruct"),
    (["plan", "--upgrade=qwen2.5-0.5b-instruct,webui"], "lock_upgrade=qwen2.5-0.5b-instruct,webui"),
    (["model", "--upgrade"], "lock_upgrade=True"),
])
def test_upgrade_is_the_lock_upgrade_knob(tmp_path: Path, args: list[str], data: str) -> None:
    folder_with(tmp_path, tmp_path / "cache")
    done = llama_docker(tmp_path, *args, "inventory.py", "-y")
    assert done.code == 0 and done.argv is not None, done
    assert done.argv[5:7] == ["--data", data] or done.argv[6:8] == ["--data", data], done.argv
    assert "inventory.py" in done.argv and "--upgrade" not in " ".join(done.argv)


@pytest.mark.parametrize(("args", "said"), [
    (["deploy", "--upgrade=no such name!", "inventory.py"],
     "--upgrade='no such name!' is invalid: expected False, True"),
    (["rollback", "--upgrade", "inventory.py"], "--upgrade goes with deploy, plan, model"),
    (["deploy", "--upgrade", "--from", "x.tar", "inventory.py"], "one or the other"),
    (["deploy", "--from", "nowhere.tar", "inventory.py"], "no bundle nowhere.tar"),
    (["bundle", "fleet.tar"], "give the file to write and the inventory"),
    (["bundle", "fleet.tar", "nowhere.py"], "no inventory file nowhere.py"),
])
def test_what_cannot_run_is_one_line(tmp_path: Path, args: list[str], said: str) -> None:
    folder_with(tmp_path, tmp_path / "cache")
    done = llama_docker(tmp_path, *args)
    assert done.code == 2 and done.argv is None, done
    assert len(done.err) == 1 and said in done.err[0], done


def test_a_bundle_made_here_deploys_from_another_controllers_cache(
        controller: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    cache, lock_path = controller  # a controller that has deployed (its lock, its cache)
    here = folder_with(lock_path.parent, cache)
    made = llama_docker(here, "bundle", str(tmp_path / "fleet.tar"), "inventory.py")
    assert made.code == 0, made
    assert made.err[0].startswith(f"llama-docker: wrote {tmp_path / 'fleet.tar'} (")
    assert ("llama-docker.lock and 5 files from" in made.err[0]
            and "(models vision; web UI b11669; server images arm64)" in made.err[0]), made
    assert made.err[1] == ("llama-docker: not in it: mine, a file on this controller's disk "
                           "(a `path` model): the other controller needs it at the same path")

    laptop = folder_with(tmp_path / "laptop", tmp_path / "laptop-cache")
    done = llama_docker(laptop, "deploy", "--from", str(tmp_path / "fleet.tar"),
                        "inventory.py", "-y")
    assert done.code == 0 and done.argv is not None, done
    assert done.argv[-1] == DEPLOY and "--from" not in done.argv
    assert lockfile.read(laptop / FILENAME) == lockfile.read(lock_path)
    model = tmp_path / "laptop-cache" / "models" / f"{_sha(MODEL)}.gguf"
    assert model.read_bytes() == MODEL
    assert (tmp_path / "laptop-cache" / "webui" / f"{_sha(UI)}.tar.gz").read_bytes() == UI
    assert any("fleet.tar is in " in line and "every file checked against its lock" in line
               for line in done.err), done

    again = llama_docker(laptop, "deploy", "--from", str(tmp_path / "fleet.tar"),
                         "inventory.py", "-y")
    assert again.code == 0 and again.argv is not None, again  # already there: nothing to do


def test_an_altered_bundle_deploys_nothing(controller: tuple[Path, Path],  # noqa: F811
                                           tmp_path: Path) -> None:
    cache, lock_path = controller
    here = folder_with(lock_path.parent, cache)
    assert llama_docker(here, "bundle", str(tmp_path / "fleet.tar"), "inventory.py").code == 0
    raw = bytearray((tmp_path / "fleet.tar").read_bytes())
    raw[raw.index(b"GGUF a model")] ^= 0x01
    (tmp_path / "fleet.tar").write_bytes(bytes(raw))
    laptop = folder_with(tmp_path / "laptop", tmp_path / "laptop-cache")
    done = llama_docker(laptop, "deploy", "--from", str(tmp_path / "fleet.tar"),
                        "inventory.py", "-y")
    assert done.code == 2 and done.argv is None, done
    assert done.err[-1].startswith("llama-docker: nothing deployed: the bundle's models/")
    assert "hashes" in done.err[-1] and not (laptop / FILENAME).exists()


def test_a_cache_that_lacks_a_file_makes_no_bundle(controller: tuple[Path, Path],  # noqa: F811
                                                   tmp_path: Path) -> None:
    cache, lock_path = controller
    (cache / "webui" / f"{_sha(UI)}.tar.gz.ok").unlink()
    here = folder_with(lock_path.parent, cache)
    done = llama_docker(here, "bundle", str(tmp_path / "fleet.tar"), "inventory.py")
    assert done.code == 2 and not (tmp_path / "fleet.tar").exists(), done
    assert done.err == [f"llama-docker: no bundle written: the cache {cache} lacks web UI "
                        "b11669: run the deploy from this controller first, then bundle"]

