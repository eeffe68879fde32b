"""The web UI: release names, what a valid UI tarball holds, the server's arguments, the
controller's download and the user's own UI, the knobs, and what status reports."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from llama_docker.device import webui
from llama_docker.device.target import choose
from llama_docker.knobs import config
from llama_docker.knobs.errors import ConfigError, FetchError, RefusedError, VerifyError
from llama_docker.status import parse, probe
from llama_docker.transfer import webui_fetch
from tests.lab.fault_server import FaultServer

from .fixtures.harness import UI_SHA, deploy_fixture, knobs, ui_served

UNIT = "/etc/systemd/system/llama-docker.service"


def tarball(members: dict[str, bytes | None], symlink: str | None = None) -> bytes:
    """A .tar.gz of files (bytes) and folders (None), plus one symlink when asked."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


RELEASE = tarball({"llama-b11669": None, "llama-b11669/index.html": b"<html>ui</html>",
                   "llama-b11669/_app/app.js": b"js"})


def write(tmp_path: Path, data: bytes, name: str = "ui.tar.gz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- names and digests ---------------------------------------------------------------------


def test_release_url_is_githubs_or_the_mirrors() -> None:
    assert webui.release_url("", "b11669") == ("https://github.com/ggml-org/llama.cpp/"
                                               "releases/download/b11669/llama-b11669-ui.tar.gz")
    assert webui.release_url("http://lan:8000/rel/", "b1") == ("http://lan:8000/rel/b1/"
                                                               "llama-b1-ui.tar.gz")


def test_digest_url_is_the_release_api_or_a_sums_file_beside_the_mirrors_tarball() -> None:
    assert webui.digest_url("", "b7") == ("https://api.github.com/repos/ggml-org/llama.cpp/"
                                          "releases/tags/b7")
    assert webui.digest_url("http://m", "b7") == "http://m/b7/llama-b7-ui.tar.gz.sha256"


def test_build_comes_from_nightly_tag_text() -> None:
    assert webui.parse_build("b11669\n") == "b11669"
    assert webui.parse_build("") is None
    assert webui.parse_build("1:0.7.0+dfsg-2") is None


def test_digest_from_githubs_release_json() -> None:
    sha = "ab" * 32
    release = {"assets": [{"name": "llama-b5-bin-ubuntu-x64.tar.gz",
                           "digest": "sha256:" + "0" * 64},
                          {"name": "llama-b5-ui.tar.gz", "digest": f"sha256:{sha.upper()}"}]}
    assert webui.digest_from_release(release, "b5") == sha
    assert webui.digest_from_release({"assets": [{"name": "llama-b5-ui.tar.gz",
                                                  "digest": None}]}, "b5") is None
    assert webui.digest_from_release([], "b5") is None


def test_digest_from_a_sums_file() -> None:
    assert webui.digest_from_sums(f"{'c' * 64}  llama-b5-ui.tar.gz\n") == "c" * 64
    assert webui.digest_from_sums("not a digest") is None


# --- what a UI tarball may hold ------------------------------------------------------------


def test_release_layout_serves_its_one_folder(tmp_path: Path) -> None:
    assert webui.ui_folder(write(tmp_path, RELEASE)) == "llama-b11669"


def test_index_at_the_top_serves_the_top(tmp_path: Path) -> None:
    assert webui.ui_folder(write(tmp_path, tarball({"index.html": b"x"}))) == ""


@pytest.mark.parametrize("members,symlink", [
    ({"../evil/index.html": b"x"}, None),
    ({"/etc/index.html": b"x"}, None),
    ({"index.html": b"x"}, "link"),
])
def test_members_outside_or_not_plain_are_refused(tmp_path: Path, members: dict,
                                                  symlink: str | None) -> None:
    with pytest.raises(VerifyError, match="refused"):
        webui.ui_folder(write(tmp_path, tarball(members, symlink)))


def test_no_index_is_not_a_ui(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="no index.html"):
        webui.ui_folder(write(tmp_path, tarball({"a/b/index.html": b"x", "readme": b"y"})))


def test_not_a_tarball(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="not a gzip tarball"):
        webui.ui_folder(write(tmp_path, b"<html>404</html>"))


# --- the server's arguments and what a device serves -----------------------------------------


def test_server_args_per_mode() -> None:
    assert webui.server_args("upstream") == ("--path", "/models/webui/current")
    assert webui.server_args("/home/me/ui") == ("--path", "/models/webui/current")
    assert webui.server_args("simplechat") == ()
    assert webui.server_args("none") == ("--no-webui",)


def test_link_targets() -> None:
    assert webui.link_target("d" * 64, "llama-b1") == f"{'d' * 64}/llama-b1"
    assert webui.link_target("d" * 64, "") == "d" * 64
    assert webui.link_target(None, "") == webui.IMAGE_UI


def test_served_reads_link_and_unit_args() -> None:
    path = "--path /models/webui/current "
    assert webui.served(f"{'e' * 64}/llama-b9", path) == ("llama.cpp", "llama-b9")
    assert webui.served(webui.IMAGE_UI, path) == ("simplechat", None)
    assert webui.served("", "") == ("simplechat", None)
    assert webui.served("", "--no-webui ") == ("none", None)


def test_status_row_reports_the_ui() -> None:
    cfg = config.load(knobs())
    t = choose("debian", "auto", "auto", "/home/pi", "llama-docker")
    script = probe.script(cfg, t, 1000)
    assert 'readlink "$d/webui/current"' in script and UNIT in script
    row = parse.row_from("h", cfg, t, {"webui_link": f"{'f' * 64}/llama-b11669",
                                       "webui_args": "--path /models/webui/current "})
    assert (row.webui, row.webui_version) == ("llama.cpp", "llama-b11669")
    assert row.to_json()["webui"] == "llama.cpp"


# --- knobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("knob,value", [("webui", "github"), ("webui", "ui/relative"),
                                        ("webui_sha256", "abc"), ("webui_mirror", "lan:8000")])
def test_bad_knobs_name_host_and_knob(knob: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^raspi: knob {knob}="):
        config.load(knobs(**{knob: value}), host="raspi")


def test_good_knobs_load() -> None:
    cfg = config.load(knobs(webui="~/ui.tar.gz", webui_sha256="a" * 64,
                            webui_mirror="http://lan:8000/rel/"))
    assert (cfg.webui, cfg.webui_mirror) == ("~/ui.tar.gz", "http://lan:8000/rel")


# --- the controller: upstream download and the user's own UI --------------------------------


@pytest.fixture()
def srv() -> Iterator[FaultServer]:
    with FaultServer() as s:
        yield s


def test_upstream_downloads_once_verified_and_remembers_the_digest(
        srv: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sha = hashlib.sha256(RELEASE).hexdigest()
    srv.put("/rel/b11669/llama-b11669-ui.tar.gz", RELEASE)
    srv.put("/rel/b11669/llama-b11669-ui.tar.gz.sha256", f"{sha}  x\n".encode())
    got = webui_fetch._upstream(tmp_path, "b11669", srv.url("/rel"), "")
    assert (got.sha256, got.folder, got.path.name) == (sha, "llama-b11669", f"{sha}.tar.gz")
    assert "pin it with webui_sha256" in capsys.readouterr().err
    assert webui_fetch.known_digest(tmp_path, "b11669", "") == sha
    srv.reset_counters()
    again = webui_fetch._upstream(tmp_path, "b11669", srv.url("/rel"), "")
    assert again == got and srv.requests == 0  # digest remembered, file verified: no request


def test_upstream_flipped_byte_is_refused_and_nothing_kept(srv: FaultServer,
                                                            tmp_path: Path) -> None:
    sha = hashlib.sha256(RELEASE).hexdigest()
    bad = bytearray(RELEASE)
    bad[len(bad) // 2] ^= 1
    srv.put("/rel/b1/llama-b1-ui.tar.gz", bytes(bad))
    with pytest.raises(VerifyError, match=f"expected {sha}"):
        webui_fetch._upstream(tmp_path, "b1", srv.url("/rel"), sha)
    assert not list((tmp_path / "webui").glob("*.tar.gz*"))


def test_a_wrong_published_digest_is_not_kept_and_asked_again(srv: FaultServer,
                                                               tmp_path: Path) -> None:
    """The mirror publishes a wrong digest, then the right one: the refusal forgets it (and
    says what to do if it stays wrong), so the next run asks again and gets the UI."""
    sha = hashlib.sha256(RELEASE).hexdigest()
    srv.put("/rel/b3/llama-b3-ui.tar.gz", RELEASE)
    srv.put("/rel/b3/llama-b3-ui.tar.gz.sha256", f"{'0' * 64}  x\n".encode())
    with pytest.raises(VerifyError) as err:
        webui_fetch._upstream(tmp_path, "b3", srv.url("/rel"), "")
    line = str(err.value)
    assert f"hashes {sha}, expected {'0' * 64}" in line and "\n" not in line
    assert "asked again next run" in line and "pin" in line and "webui_sha256" in line
    assert webui_fetch.known_digest(tmp_path, "b3", "") is None
    srv.put("/rel/b3/llama-b3-ui.tar.gz.sha256", f"{sha}  x\n".encode())  # mirror fixed
    got = webui_fetch._upstream(tmp_path, "b3", srv.url("/rel"), "")
    assert got.sha256 == sha and webui_fetch.known_digest(tmp_path, "b3", "") == sha


def test_a_wrong_digest_remembered_before_is_forgotten_on_refusal(srv: FaultServer,
                                                                  tmp_path: Path) -> None:
    """A cache written by an earlier version, which kept the digest before verifying."""
    srv.put("/rel/b4/llama-b4-ui.tar.gz", RELEASE)
    (tmp_path / "webui").mkdir()
    (tmp_path / "webui" / "b4.sha256").write_text(f"{'1' * 64}  llama-b4-ui.tar.gz\n")
    with pytest.raises(VerifyError, match="asked again next run"):
        webui_fetch._upstream(tmp_path, "b4", srv.url("/rel"), "")
    assert not (tmp_path / "webui" / "b4.sha256").exists()


def test_a_wrong_pin_is_the_users_to_fix(srv: FaultServer, tmp_path: Path) -> None:
    srv.put("/rel/b5/llama-b5-ui.tar.gz", RELEASE)
    with pytest.raises(VerifyError, match="that is webui_sha256: fix the pin"):
        webui_fetch._upstream(tmp_path, "b5", srv.url("/rel"), "2" * 64)


def test_upstream_without_a_published_digest(srv: FaultServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        webui_fetch._upstream(tmp_path, "b2", srv.url("/rel"), "")


def test_own_folder_is_packed_reproducibly(tmp_path: Path) -> None:
    ui = tmp_path / "ui"
    (ui / "assets").mkdir(parents=True)
    (ui / "index.html").write_text("<html>mine</html>")
    (ui / "assets" / "a.js").write_text("x")
    first = webui_fetch._local(str(ui), tmp_path / "cache", "")
    (ui / "index.html").touch()  # a new mtime is the same UI
    second = webui_fetch._local(str(ui), tmp_path / "cache2", "")
    assert first.sha256 == second.sha256 and first.folder == ""


def test_own_tarball_is_hashed_and_checked(tmp_path: Path) -> None:
    path = write(tmp_path, RELEASE)
    got = webui_fetch._local(str(path), tmp_path / "cache", "")
    assert (got.sha256, got.folder) == (hashlib.sha256(RELEASE).hexdigest(), "llama-b11669")
    with pytest.raises(RefusedError, match=r"hashes .* expected 0{64} \(webui_sha256\)"):
        webui_fetch._local(str(path), tmp_path / "cache", "0" * 64)


@pytest.mark.parametrize("what", ["missing", "no-index", "not-a-ui"])
def test_own_ui_refusals_name_the_path(tmp_path: Path, what: str) -> None:
    path = tmp_path / "ui"
    if what == "no-index":
        path.mkdir()
    elif what == "not-a-ui":
        path = write(tmp_path, b"not gzip", "ui.tar.gz")
    with pytest.raises(RefusedError, match=str(path)):
        webui_fetch._local(str(path), tmp_path / "cache", "")


# --- the deploy's operations -----------------------------------------------------------------


def _unit(run) -> str:  # noqa: ANN001
    return run.op("Service | Unit").uploads[UNIT]


def test_default_deploy_serves_the_store_link_and_places_the_ui(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian")
    assert "--path /models/webui/current" in _unit(run)
    op = run.op("Web UI |")
    assert op.calls and op.calls[0]["local"] is None  # upstream: fetched when the run executes


def test_simplechat_and_none_have_no_ui_step(tmp_path: Path) -> None:
    chat = deploy_fixture(tmp_path, "debian", webui="simplechat")
    assert not [n for n in chat.names() if n.startswith("Web UI")]
    assert "--path" not in _unit(chat) and "--no-webui" not in _unit(chat)
    none = deploy_fixture(tmp_path, "debian", webui="none")
    assert "--no-webui" in _unit(none)


def test_converged_ui_adds_no_operation(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian", facts=ui_served(tmp_path))
    assert not [n for n in run.names() if n.startswith("Web UI")]
    assert UI_SHA in ui_served(tmp_path)["UiState(*)"]["link"]


def test_own_ui_is_checked_in_preflight(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "debian", webui=str(tmp_path / "nope"))
    assert run.names()[0] == "Preflight | Refuse this host", run.names()
