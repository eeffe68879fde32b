"""fetch() and hub_sha256() over real HTTP on 127.0.0.1, against a server that misbehaves."""

from __future__ import annotations

import hashlib
import json
import random
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from llama_docker.knobs.errors import FetchError, VerifyError
from llama_docker.transfer.download import fetch, hub_sha256
from tests.lab.fault_server import FaultServer

MiB = 1 << 20
SIZE = 4 * MiB + 12345  # deliberately not a multiple of any chunk size
DATA = random.Random(7).randbytes(SIZE)
SHA = hashlib.sha256(DATA).hexdigest()
NEW = random.Random(8).randbytes(SIZE)
NEW_SHA = hashlib.sha256(NEW).hexdigest()
PATH = "/models/m.gguf"
HUB = "/org/repo/resolve/main/m.gguf"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def srv() -> Iterator[FaultServer]:
    with FaultServer({PATH: DATA}) as s:
        yield s


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "m.gguf"


def part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def meta(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.meta")


def marker(dest: Path) -> Path:
    return dest.with_name(dest.name + ".ok")


def get(srv: FaultServer, dest: Path, sha: str = SHA, **kw: object):
    kw.setdefault("stall_timeout", 5)  # a hang fails the test fast instead of hanging the suite
    return fetch(srv.url(PATH), dest, sha, backoff=0, **kw)


def gets(srv: FaultServer) -> list[dict]:
    return [e for e in srv.log if e["method"] == "GET"]


def nothing_left(dest: Path) -> bool:
    return not any(p.exists() for p in (dest, part(dest), meta(dest), marker(dest)))


def interrupted(srv: FaultServer, dest: Path, at: int, sha: str = SHA) -> None:
    """An earlier run (asking for `sha`) that lost its connection after `at` bytes, gave up."""
    srv.set(drop_after=at)
    with pytest.raises(FetchError, match=f"resume from byte {at}"):
        get(srv, dest, sha, retries=1)
    assert part(dest).stat().st_size == at and meta(dest).is_file() and not dest.exists()


# -- the happy paths -------------------------------------------------------------------------

def test_fresh_download_verifies_renames_and_marks(srv: FaultServer, dest: Path) -> None:
    r = get(srv, dest)
    assert (r.path, r.sha256, r.size, r.downloaded, r.resumed_from, r.attempts) == (
        dest, SHA, SIZE, SIZE, 0, 1)
    assert dest.read_bytes() == DATA
    assert marker(dest).read_text().strip() == SHA
    assert not part(dest).exists() and not meta(dest).exists()
    assert srv.bytes_sent == SIZE and [e["range"] for e in gets(srv)] == [None]


def test_second_call_downloads_nothing(srv: FaultServer, dest: Path) -> None:
    get(srv, dest)
    srv.reset_counters()
    r = get(srv, dest)
    assert (r.downloaded, r.attempts, r.size) == (0, 0, SIZE)
    assert srv.requests == 0


def test_unmarked_dest_with_the_right_hash_is_kept(srv: FaultServer, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(DATA)  # put there by hand: hashed once, then marked
    r = get(srv, dest)
    assert (r.downloaded, srv.requests) == (0, 0)
    assert marker(dest).read_text().strip() == SHA


def test_progress_bar_goes_to_stderr(srv: FaultServer, dest: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    get(srv, dest, progress=True, label="tiny model")
    assert "tiny model" in capsys.readouterr().err


# -- resuming --------------------------------------------------------------------------------

def test_interrupted_download_resumes_from_the_exact_byte(srv: FaultServer, dest: Path) -> None:
    interrupted(srv, dest, SIZE // 2)
    saved = json.loads(meta(dest).read_text())
    assert saved["url"] == srv.url(PATH) and saved["total"] == SIZE and saved["etag"]
    r = get(srv, dest)
    assert (r.resumed_from, r.downloaded, r.attempts) == (SIZE // 2, SIZE - SIZE // 2, 1)
    assert dest.read_bytes() == DATA
    assert srv.bytes_sent <= SIZE + MiB
    last = gets(srv)[-1]
    assert (last["status"], last["range"], last["if_range"]) == (
        206, f"bytes={SIZE // 2}-", saved["etag"])


def test_truncated_bodies_resume_within_one_call(srv: FaultServer, dest: Path) -> None:
    srv.set(drop_after=MiB + 7, drop_times=3)
    r = get(srv, dest)
    assert (r.attempts, r.downloaded) == (4, SIZE)
    assert dest.read_bytes() == DATA
    assert srv.bytes_sent == SIZE  # not one byte sent twice
    assert [e["range"] for e in gets(srv)] == [None] + [
        f"bytes={n * (MiB + 7)}-" for n in (1, 2, 3)]


def test_resume_with_last_modified_when_there_is_no_etag(srv: FaultServer, dest: Path) -> None:
    srv.set(etag=False)
    interrupted(srv, dest, MiB)
    get(srv, dest)
    last = gets(srv)[-1]
    assert last["status"] == 206 and last["if_range"].endswith("GMT")
    assert dest.read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(srv: FaultServer, dest: Path) -> None:
    interrupted(srv, dest, SIZE // 2)
    srv.set(ranges=False)
    r = get(srv, dest)
    assert (r.resumed_from, r.downloaded) == (SIZE // 2, SIZE)
    assert gets(srv)[-1]["status"] == 200
    assert dest.read_bytes() == DATA  # truncated and rewritten, not spliced


def test_server_ignoring_range_within_one_call(srv: FaultServer, dest: Path) -> None:
    srv.set(ranges=False, drop_after=SIZE // 2)
    r = get(srv, dest)
    assert (r.attempts, r.downloaded) == (2, SIZE + SIZE // 2)
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("etag", [True, False], ids=["etag", "last-modified"])
def test_upstream_change_restarts_on_the_new_content(srv: FaultServer, dest: Path,
                                                     etag: bool) -> None:
    srv.set(etag=etag)
    # The knob already names the new file while the server still had the old one.
    interrupted(srv, dest, SIZE // 2, NEW_SHA)
    srv.put(PATH, NEW)  # new bytes, new validators: If-Range fails, the server sends 200
    r = get(srv, dest, NEW_SHA)
    assert (r.sha256, r.resumed_from, r.downloaded) == (NEW_SHA, SIZE // 2, SIZE)
    last = gets(srv)[-1]
    assert last["status"] == 200 and last["range"] and last["if_range"]
    assert dest.read_bytes() == NEW


def test_upstream_change_with_the_old_sha256_fails_and_deletes(srv: FaultServer,
                                                                dest: Path) -> None:
    interrupted(srv, dest, SIZE // 2)
    srv.put(PATH, NEW)
    with pytest.raises(VerifyError, match=f"hashes {NEW_SHA}, expected {SHA}"):
        get(srv, dest)
    assert nothing_left(dest)


def test_upstream_change_is_caught_when_the_server_ignores_if_range(srv: FaultServer,
                                                                     dest: Path) -> None:
    interrupted(srv, dest, SIZE // 2, NEW_SHA)
    srv.put(PATH, NEW)
    srv.set(if_range=False)  # it answers 206 from the NEW file: splicing would corrupt
    r = get(srv, dest, NEW_SHA)
    assert [e["status"] for e in gets(srv)][-2:] == [206, 200]
    assert r.attempts == 2 and dest.read_bytes() == NEW


@pytest.mark.parametrize("with_meta", [True, False], ids=["meta", "no-meta"])
def test_garbage_part_of_full_size_is_never_renamed(srv: FaultServer, dest: Path,
                                                    with_meta: bool) -> None:
    dest.parent.mkdir(parents=True)
    part(dest).write_bytes(random.Random(9).randbytes(SIZE))
    if with_meta:
        etag = requests.head(srv.url(PATH), timeout=5).headers["ETag"]
        meta(dest).write_text(json.dumps({"url": srv.url(PATH), "sha256": SHA, "etag": etag,
                                          "last_modified": None, "total": SIZE}))
    with pytest.raises(VerifyError, match="the download was deleted"):
        get(srv, dest)
    assert [e["status"] for e in gets(srv)] == [416]
    assert nothing_left(dest)


def test_part_of_another_sha256_is_not_resumed(srv: FaultServer, dest: Path) -> None:
    interrupted(srv, dest, SIZE // 2)
    srv.put(PATH, NEW)
    srv.set(if_range=False)
    r = get(srv, dest, NEW_SHA)  # the meta says the .part was for SHA: start over
    assert (r.resumed_from, r.downloaded, r.attempts) == (0, SIZE, 1)
    assert dest.read_bytes() == NEW


# -- failures --------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "hint"), [
    (404, "check the URL"), (410, "check the URL"), (403, "HF_TOKEN"), (401, "HF_TOKEN"),
    (400, "HTTP 400 Bad Request"),
])
def test_client_errors_fail_at_once(srv: FaultServer, dest: Path, status: int,
                                    hint: str) -> None:
    srv.set(status=status, status_times=-1)
    with pytest.raises(FetchError) as err:
        get(srv, dest)
    msg = str(err.value)
    assert srv.url(PATH) in msg and f"HTTP {status}" in msg and hint in msg
    assert "\n" not in msg
    assert srv.requests == 1
    assert nothing_left(dest)


def test_missing_file(srv: FaultServer, dest: Path) -> None:
    with pytest.raises(FetchError, match="/nope.gguf: HTTP 404 Not Found; check the URL"):
        fetch(srv.url("/nope.gguf"), dest, SHA, backoff=0)
    assert srv.requests == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_statuses_are_retried(srv: FaultServer, dest: Path, status: int) -> None:
    srv.set(status=status, status_times=2)
    r = get(srv, dest)
    assert r.attempts == 3 and dest.read_bytes() == DATA


def test_500_forever_gives_up_and_keeps_the_part(srv: FaultServer, dest: Path) -> None:
    at = MiB + 3
    interrupted(srv, dest, at)
    srv.set(status=500, status_times=-1)
    with pytest.raises(FetchError) as err:
        get(srv, dest, retries=3)
    msg = str(err.value)
    assert srv.url(PATH) in msg and "after 3 attempts" in msg and "HTTP 500" in msg
    assert f"{at} bytes kept" in msg and f"resume from byte {at}" in msg
    assert [e["status"] for e in gets(srv)][-3:] == [500] * 3 and len(gets(srv)) == 4
    assert part(dest).stat().st_size == at and meta(dest).is_file()
    srv.set(status=None)
    assert get(srv, dest).resumed_from == at and dest.read_bytes() == DATA


def test_stall_longer_than_stall_timeout_resumes(srv: FaultServer, dest: Path) -> None:
    srv.set(stall_after=SIZE // 3, stall_seconds=10)
    began = time.monotonic()
    r = get(srv, dest, stall_timeout=0.5)
    assert time.monotonic() - began < 5
    assert r.attempts == 2 and dest.read_bytes() == DATA
    # A read cut by the timeout loses what it had buffered: at most one chunk is sent again.
    resumed = int(gets(srv)[-1]["range"].removeprefix("bytes=").rstrip("-"))
    assert SIZE // 3 - MiB <= resumed <= SIZE // 3
    assert srv.bytes_sent <= SIZE + MiB


def test_connection_refused_gives_up(dest: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/m.gguf"
    with pytest.raises(FetchError, match="after 2 attempts; nothing kept; last error"):
        fetch(url, dest, SHA, retries=2, backoff=0, stall_timeout=2)


def test_wrong_sha256_deletes_the_download(srv: FaultServer, dest: Path) -> None:
    wrong = "0" * 64
    with pytest.raises(VerifyError) as err:
        get(srv, dest, wrong)
    assert str(err.value) == (f"m.gguf from {srv.url(PATH)} hashes {SHA}, expected {wrong}; "
                              "the download was deleted")
    assert nothing_left(dest)


def test_size_mismatch_fails_before_the_download(srv: FaultServer, dest: Path) -> None:
    with pytest.raises(FetchError, match=f"is {SIZE} bytes on the server, but {SIZE + 1} bytes"):
        get(srv, dest, size=SIZE + 1)
    assert nothing_left(dest)
    assert srv.requests == 1


# -- Hugging Face ----------------------------------------------------------------------------

@pytest.mark.parametrize("linked", [f'"{SHA}"', f'W/"{SHA}"', f'"{SHA.upper()}"', SHA])
def test_hub_sha256_reads_the_302_without_following_it(srv: FaultServer, linked: str) -> None:
    srv.hub(HUB, linked_etag=linked, size=SIZE, location=PATH)
    assert hub_sha256(srv.url(HUB)) == (SHA, SIZE)
    assert srv.stats(HUB).statuses == [302] and srv.stats(HUB).get == 0
    assert srv.stats(PATH).requests == 0  # the CDN side was never asked


def test_hub_sha256_size_is_optional(srv: FaultServer) -> None:
    srv.hub(HUB, sha256=SHA, location=PATH)
    assert hub_sha256(srv.url(HUB)) == (SHA, None)


@pytest.mark.parametrize(("hub", "fragment"), [
    ({"sha256": None, "size": SIZE}, "without X-Linked-Etag"),
    ({"linked_etag": '"abc123"'}, "is not a sha256"),
    (None, "HTTP 200 without X-Linked-Etag"),
])
def test_hub_sha256_without_a_usable_header(srv: FaultServer, hub: dict | None,
                                            fragment: str) -> None:
    path = HUB if hub is not None else PATH
    if hub is not None:
        srv.hub(HUB, location=PATH, **hub)
    with pytest.raises(FetchError, match=fragment) as err:
        hub_sha256(srv.url(path))
    assert str(err.value).startswith(srv.url(path))


def test_hub_sha256_on_a_missing_file(srv: FaultServer) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        hub_sha256(srv.url("/org/repo/resolve/main/nope.gguf"))


def test_fetch_follows_the_hub_redirect_and_resumes_through_it(srv: FaultServer,
                                                                dest: Path) -> None:
    srv.hub(HUB, sha256=SHA, size=SIZE, location=PATH)
    sha, size = hub_sha256(srv.url(HUB))
    srv.set(drop_after=SIZE // 2)
    r = fetch(srv.url(HUB), dest, sha, size=size, backoff=0, stall_timeout=5)
    assert r.attempts == 2 and dest.read_bytes() == DATA
    assert [e["range"] for e in gets(srv) if e["path"] == PATH] == [None, f"bytes={SIZE // 2}-"]


# -- the fault server itself -----------------------------------------------------------------

def test_rate_limit(srv: FaultServer, dest: Path) -> None:
    srv.set(rate=16 * MiB)
    began = time.monotonic()
    get(srv, dest)
    assert time.monotonic() - began >= 0.2  # 4 MiB at 16 MiB/s: about 0.25 s


def test_control_endpoint(srv: FaultServer) -> None:
    state = requests.get(srv.url("/_fault?drop_after=1000&ranges=false"), timeout=5).json()
    assert state["faults"]["drop_after"] == 1000 and state["faults"]["ranges"] is False
    requests.put(srv.url("/_fault/files/other.bin"), data=b"x" * 10, timeout=5)
    assert requests.get(srv.url("/other.bin"), timeout=5).content == b"x" * 10
    requests.post(srv.url("/_fault/reset"), timeout=5)
    assert requests.get(srv.url("/_fault"), timeout=5).json()["faults"]["drop_after"] is None


def test_command_line_server_with_hub(tmp_path: Path, dest: Path) -> None:
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "m.gguf").write_bytes(DATA)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.lab.fault_server", "--port", "0", "--root", str(tmp_path),
         "--hub", "--drop-after", str(MiB)],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 10)
        assert ready, "the fault server did not start within 10 s"
        line = proc.stderr.readline()
        base = line.split(" on ", 1)[1].split()[0].rstrip("/")
        url = f"{base}/org/m.gguf"
        assert hub_sha256(url) == (SHA, SIZE)
        r = fetch(url, dest, SHA, backoff=0, stall_timeout=5)
        assert r.attempts == 2 and dest.read_bytes() == DATA
    finally:
        proc.terminate()
        proc.wait(5)


# -- gated models: a Hugging Face token, for the hub only ------------------------------------

TOKEN = "hf_test_token_0123456789"


@pytest.fixture
def hub_env(srv: FaultServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FaultServer:
    monkeypatch.setenv("HF_ENDPOINT", srv.url("/").rstrip("/"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return srv


def auth_by_path(srv: FaultServer) -> dict[str, set]:
    seen: dict[str, set] = {}
    for e in srv.log:
        seen.setdefault(e["path"], set()).add(e["authorization"])
    return seen


def test_token_goes_to_the_hub_never_to_its_cdn(hub_env: FaultServer, dest: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FaultServer({PATH: DATA}) as cdn:  # another port: another origin, as a CDN is
        hub_env.hub(HUB, sha256=SHA, size=SIZE, location=cdn.url(PATH))
        sha, size = hub_sha256(hub_env.url(HUB))
        fetch(hub_env.url(HUB), dest, sha, size=size, backoff=0, stall_timeout=5)
        assert dest.read_bytes() == DATA
        assert auth_by_path(hub_env) == {HUB: {f"Bearer {TOKEN}"}}
        assert auth_by_path(cdn) == {PATH: {None}}


def test_token_from_the_login_file(hub_env: FaultServer, tmp_path: Path) -> None:
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text(TOKEN + "\n")  # what `huggingface-cli login` writes
    hub_env.hub(HUB, sha256=SHA, size=SIZE, location=PATH)
    hub_sha256(hub_env.url(HUB))
    assert auth_by_path(hub_env)[HUB] == {f"Bearer {TOKEN}"}


def test_no_token_no_header(hub_env: FaultServer) -> None:
    hub_env.hub(HUB, sha256=SHA, size=SIZE, location=PATH)
    hub_sha256(hub_env.url(HUB))
    assert auth_by_path(hub_env)[HUB] == {None}


def test_gated_model_says_how_to_get_in_and_never_shows_the_token(
        hub_env: FaultServer, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub_env.set(status=403)
    with pytest.raises(FetchError) as err:
        fetch(hub_env.url(PATH), dest, SHA, size=SIZE, backoff=0, stall_timeout=5)
    message = str(err.value)
    assert "HTTP 403" in message and "accept its licence" in message and "HF_TOKEN" in message
    assert TOKEN not in message and "\n" not in message
    assert nothing_left(dest)
