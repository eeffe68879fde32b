"""macOS: what the deploy runs on a Mac, from fact fixtures (this machine cannot run macOS).

The real tasks run against a fake host (tests/unit/fixtures/macos.json); the tests read the
commands and files they produce: brew with Homebrew's PATH, LaunchAgent plists that parse
and say the right thing, launchctl only when a plist changed, never sudo, apt or systemd.
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path

import pytest

from llama_docker.device import launchd
from llama_docker.device.image import build_args, image_tag
from llama_docker.device.target import choose
from llama_docker.tasks.facts import MacPhysicalCores, PhysicalCores, cores_fact
from llama_docker.tasks.runtime.macos import BREW_INSTALL

from .fixtures.harness import (
    MODEL_SHA,
    Run,
    check_golden,
    converged,
    deploy_fixture,
    load_fixture,
)
from .fixtures.image_cache import IMAGE_ID, seed_image_cache

HOME = "/Users/me"
BREW_PATH = "/opt/homebrew/bin:/opt/homebrew/sbin:/usr/bin:/bin:/usr/sbin:/sbin"
AGENTS = f"{HOME}/Library/LaunchAgents"
SERVER_PLIST = f"{AGENTS}/com.llama-docker.llama-docker.plist"
COLIMA_PLIST = f"{AGENTS}/com.llama-docker.colima.plist"
MODELS = f"{HOME}/.llama-docker/models"
TAG = image_tag(build_args("docker.io/library/debian:forky-slim", True))
LINUX_ONLY = ("sudo", "apt", "dpkg", "systemctl", "journalctl", "pacman", "brew services",
              "mv -T")


def plist(run: Run, path: str) -> dict:
    return plistlib.loads(run.upload(path).encode())


@pytest.fixture
def docker(tmp_path: Path) -> Run:
    return deploy_fixture(tmp_path, "macos")


@pytest.fixture
def native(tmp_path: Path) -> Run:
    return deploy_fixture(tmp_path, "macos", runtime="native")


@pytest.mark.parametrize("runtime", ["docker", "native"])
def test_golden_command_list(tmp_path: Path, runtime: str) -> None:
    run = deploy_fixture(tmp_path, "macos", runtime=runtime)
    assert not run.missing, f"facts the fixture does not answer: {run.missing}"
    check_golden(run, f"macos-{runtime}", {TAG: "<image>"})


@pytest.mark.parametrize("runtime", ["docker", "native"])
def test_nothing_linux_nothing_as_root(tmp_path: Path, runtime: str) -> None:
    run = deploy_fixture(tmp_path, "macos", runtime=runtime)
    assert run.ops and not [op.name for op in run.ops if op.sudo]
    assert not [key for key, sudo, _ in run.facts if sudo]
    for command in run.commands():
        assert not any(word in command for word in LINUX_ONLY), command


def test_brew_installs_colima_and_docker_with_its_path(docker: Run) -> None:
    op = docker.op("Container runtime | Install colima and docker")
    assert op.commands == ["brew install colima docker"]
    assert op.env["PATH"] == BREW_PATH
    # BrewPackages runs inside the op: it must see the same PATH, or brew "is missing".
    assert [env for key, _, env in docker.facts if key == "BrewPackages"][0]["PATH"] == BREW_PATH


def test_colima_agent_runs_its_own_vm_in_the_foreground(docker: Run) -> None:
    agent = plist(docker, COLIMA_PLIST)
    assert agent["Label"] == "com.llama-docker.colima"
    assert agent["ProgramArguments"] == [
        "/opt/homebrew/bin/colima", "start", "llama-docker", "--foreground", "--cpu", "8",
        "--memory", "3", "--activate=false"]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}  # `colima stop` stays stopped
    assert agent["EnvironmentVariables"] == {"PATH": BREW_PATH}
    assert agent["StandardErrorPath"] == f"{HOME}/Library/Logs/llama-docker/colima.log"


def test_colima_is_bootstrapped_then_checked_with_colima_status(docker: Run) -> None:
    load = docker.op("Container runtime | Load com.llama-docker.colima")
    assert load.commands[0] == ("launchctl bootout gui/501/com.llama-docker.colima "
                                "2>/dev/null || true")
    assert load.commands[-1].startswith(f"i=0; until launchctl bootstrap gui/501 {COLIMA_PLIST};")
    wait = docker.op("Container runtime | Wait for colima's VM")
    assert "until colima status llama-docker" in wait.commands[0]
    assert wait.env == {"PATH": BREW_PATH, "DOCKER_CONTEXT": "colima-llama-docker"}
    names = docker.names()
    assert names.index(load.name) < names.index(wait.name) < names.index(
        docker.op("Server image | Server image").name)


def test_image_is_built_by_brews_docker_in_colimas_context(docker: Run) -> None:
    need = docker.op("Server image | Server image").calls[0]["need"]
    assert need.stage_build.startswith("DOCKER_BUILDKIT=0 docker build ")
    assert need.env == {"PATH": BREW_PATH, "DOCKER_CONTEXT": "colima-llama-docker"}
    assert (f"ImageId(docker,{TAG})", False, need.env) in docker.facts


def test_server_agent_runs_docker_run_with_the_units_flags(docker: Run) -> None:
    agent = plist(docker, SERVER_PLIST)
    argv = agent["ProgramArguments"]
    assert argv[:4] == ["/bin/sh", "-c", '"$0" rm -f llama >/dev/null 2>&1; exec "$0" "$@"',
                        "/opt/homebrew/bin/docker"]
    run = " ".join(argv[4:])
    assert run.startswith("run --rm --name llama --publish 0.0.0.0:8080:8080 "
                          f"--volume {MODELS}:/models:ro --user 501 ")
    for flags in ("--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges "
                  "--pids-limit 256", f"{TAG} --ctx-size 2048 --threads 8"):
        assert flags in run
    assert agent["KeepAlive"] is True and agent["RunAtLoad"] is True
    assert agent["EnvironmentVariables"]["DOCKER_CONTEXT"] == "colima-llama-docker"
    assert agent["StandardOutPath"] == f"{HOME}/Library/Logs/llama-docker/llama-docker.log"


def test_server_agent_is_bootstrapped_in_the_login_session(docker: Run) -> None:
    label = "com.llama-docker.llama-docker"
    assert docker.op(f"Service | Load {label} (gui/501)").commands == [
        f"launchctl bootout gui/501/{label} 2>/dev/null || true",
        f"launchctl enable gui/501/{label}",
        f"i=0; until launchctl bootstrap gui/501 {SERVER_PLIST}; do i=$((i+1)); "
        "[ $i -lt 5 ] || exit 1; sleep 2; done"]


def test_threads_count_a_macs_performance_cores_not_lscpus() -> None:
    """macOS has no lscpu: the one place that picks the cores fact picks the Mac's own,
    which the Mac fixture answers (8) and the server's --threads shows above."""
    mac = choose("macos", "docker", "auto", HOME, "llama-docker")
    assert cores_fact(mac) is MacPhysicalCores
    assert load_fixture("macos")[cores_fact(mac).__name__] == 8
    assert cores_fact(choose("steamos", "auto", "auto", "/home/deck", "x")) is PhysicalCores


def test_native_runs_brews_llama_server_on_metal(native: Run) -> None:
    assert native.op("Container runtime | Install llama.cpp").commands == [
        "brew install llama.cpp"]
    agent = plist(native, SERVER_PLIST)
    assert agent["ProgramArguments"] == [
        "/opt/homebrew/bin/llama-server", "--host", "0.0.0.0", "--port", "8080",
        "--model", f"{MODELS}/current.gguf", "--ctx-size", "2048", "--threads", "8",
        "--n-gpu-layers", "999", "--cors-origins", "", "--alias", "tiny"]
    assert agent["KeepAlive"] is True and agent["RunAtLoad"] is True
    assert agent["EnvironmentVariables"] == {"PATH": BREW_PATH}


def test_native_has_no_vm_and_no_image(native: Run) -> None:
    assert not [c for c in native.commands() if re.search(r"(^|[ ;&|])(docker|colima) ", c)]
    assert not [n for n in native.names() if n.startswith("Server image")]


def test_native_projector_key_and_args(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "macos", runtime="native", mmproj=True,
                         api_key="k" * 20, server_args=["--temp", "0.7"], port=9000,
                         bind="127.0.0.1")
    argv = plist(run, SERVER_PLIST)["ProgramArguments"]
    assert argv[1:5] == ["--host", "127.0.0.1", "--port", "9000"]
    assert argv[-12:] == ["--n-gpu-layers", "999", "--mmproj", f"{MODELS}/current-mmproj.gguf",
                          "--api-key-file", f"{HOME}/.llama-docker/api-key",
                          "--cors-origins", "", "--alias", "tiny", "--temp", "0.7"]
    key = run.op("Service | API key for llama-server")
    assert not key.sudo and "chmod 400" in " ".join(key.commands)
    assert run.upload(f"{HOME}/.llama-docker/api-key") == "k" * 20 + "\n"


def test_intel_mac_uses_usr_local_and_no_metal_flag(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "macos", runtime="native",
                         facts={"Arch": "x86_64", "HomebrewPrefix": "/usr/local"})
    argv = plist(run, SERVER_PLIST)["ProgramArguments"]
    assert argv[0] == "/usr/local/bin/llama-server" and "--n-gpu-layers" not in argv


def test_without_homebrew_one_line_refusal_with_the_install_command(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "macos", facts={"HomebrewPrefix": None})
    assert len(run.ops) == 1
    (op,) = run.ops
    message = op.calls[0]["message"]
    assert message.startswith("Homebrew is missing")
    assert message.endswith(f"install it on the Mac: {BREW_INSTALL}")
    assert "\n" not in message and op.commands == ["python _fail"]
    assert BREW_INSTALL.startswith('/bin/bash -c "$(curl -fsSL https://raw.githubusercontent')


def test_nobody_at_the_screen_uses_the_user_domain(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "macos", runtime="native",
                         facts={"LaunchdDomain": "user/501"})
    load = run.op("Service | Load com.llama-docker.llama-docker (user/501)")
    assert f"launchctl bootstrap user/501 {SERVER_PLIST}" in load.commands[-1]


def _settled(first: Run, runtime: str) -> dict:
    """The Mac after a successful first run."""
    brewed = {"docker": {"colima": ["0.9.1"], "docker": ["28.3.3"]},
              "native": {"llama.cpp": ["8770"]}}[runtime]
    return {**converged(first), "BrewPackages": brewed, "LaunchAgentLoaded(*)": True,
            "ColimaRunning(*)": True, f"ImageId(docker,{TAG})": f"sha256:{IMAGE_ID}",
            f"StoreState({MODELS})": {"files": [f"{MODEL_SHA}.gguf", f"{MODEL_SHA}.ok"],
                                      "links": {"current.gguf": f"{MODEL_SHA}.gguf"}},
            "HttpStatus(*)": 200}


@pytest.mark.parametrize("runtime", ["docker", "native"])
def test_second_run_changes_nothing(tmp_path: Path, runtime: str) -> None:
    first = deploy_fixture(tmp_path, "macos", runtime=runtime)
    seed_image_cache(tmp_path / "cache", TAG, "arm64")
    again = deploy_fixture(tmp_path, "macos", runtime=runtime, facts=_settled(first, runtime))
    assert again.ops == []


def test_new_model_kickstarts_the_server_without_reloading_agents(tmp_path: Path) -> None:
    first = deploy_fixture(tmp_path, "macos")
    old = "f" * 64
    again = deploy_fixture(tmp_path, "macos", facts={
        **_settled(first, "docker"),
        f"StoreState({MODELS})": {"files": [f"{MODEL_SHA}.gguf", f"{MODEL_SHA}.ok"],
                                  "links": {"current.gguf": f"{old}.gguf"}}})
    assert not [c for c in again.commands() if "bootout" in c or "bootstrap" in c]
    restart = again.op("Service | Restart com.llama-docker.llama-docker")
    assert restart.commands == ["launchctl kickstart -k gui/501/com.llama-docker.llama-docker"]
    assert not [n for n in again.names() if "colima" in n]


def test_changed_plist_reloads_only_that_agent(tmp_path: Path) -> None:
    first = deploy_fixture(tmp_path, "macos")
    again = deploy_fixture(tmp_path, "macos", facts=_settled(first, "docker"), ctx_size=4096)
    assert again.op("Service | Load com.llama-docker.llama-docker")
    # A bigger context needs a bigger VM: colima's plist changes too, and it restarts.
    colima = again.op("Container runtime | Load com.llama-docker.colima")
    assert "colima stop llama-docker" in colima.commands[1]
    assert again.op("Container runtime | Wait for colima's VM")


def test_unloaded_agent_is_bootstrapped_again(tmp_path: Path) -> None:
    first = deploy_fixture(tmp_path, "macos", runtime="native")
    again = deploy_fixture(tmp_path, "macos", runtime="native", facts={
        **_settled(first, "native"), "LaunchAgentLoaded(*)": False})
    load = again.op("Service | Load com.llama-docker.llama-docker")
    assert "colima stop" not in " ".join(load.commands)  # unchanged plist: no extra steps
    assert [n for n in again.names() if n.startswith("Health")]


def test_health_rolls_back_with_launchctl_and_points_at_the_log(tmp_path: Path) -> None:
    run = deploy_fixture(tmp_path, "macos", runtime="native")
    (call,) = run.op("Health | Wait for http://127.0.0.1:8080/health").calls
    assert call["restart"] == "launchctl kickstart -k gui/501/com.llama-docker.llama-docker"
    assert call["logs"] == f"tail -n 50 {HOME}/Library/Logs/llama-docker/llama-docker.log"
    assert call["env"] == {}


# --- plists: rendered, validated, malformed ones refused -------------------------------


def _agent(*program: str) -> launchd.Agent:
    return launchd.server_agent(service="llama-docker", home=HOME, program=program,
                                env={"PATH": BREW_PATH})


def test_arguments_survive_xml_escaping() -> None:
    argv = ("/opt/homebrew/bin/llama-server", "--alias", "a&b <c> \"d\" 'e'", "--temp", "0.7")
    text = launchd.render(_agent(*argv))
    assert plistlib.loads(text.encode())["ProgramArguments"] == list(argv)
    assert "&#" not in text  # quotes stay readable: only &, < and > are escaped


def test_render_refuses_an_argument_xml_cannot_hold() -> None:
    with pytest.raises(launchd.PlistError, match="not a valid plist"):
        launchd.render(_agent("/opt/homebrew/bin/llama-server", "--alias", "bell\x07"))


GOOD = launchd.render(_agent("/opt/homebrew/bin/llama-server"))


@pytest.mark.parametrize(("text", "why"), [
    (GOOD[: len(GOOD) // 2], "not a valid plist"),
    ("", "not a valid plist"),
    (GOOD.replace("<key>Label</key>\n\t<string>com.llama-docker.llama-docker</string>", ""),
     "no Label"),
    (GOOD.replace("/opt/homebrew/bin/llama-server", "llama-server"), "absolute path"),
    (GOOD.replace("<key>KeepAlive</key>\n\t<true/>", "<key>KeepAlive</key>\n\t<string>yes"
                  "</string>"), "KeepAlive"),
    (GOOD.replace("<key>RunAtLoad</key>\n\t<true/>", ""), "RunAtLoad"),
    (GOOD.replace("<array>\n\t\t<string>/opt/homebrew/bin/llama-server</string>\n\t</array>",
                  "<array/>"), "ProgramArguments"),
], ids=["truncated", "empty", "no-label", "relative-program", "keepalive-string",
        "no-runatload", "no-arguments"])
def test_validate_rejects_malformed_plists(text: str, why: str) -> None:
    assert text != GOOD
    with pytest.raises(launchd.PlistError, match=why):
        launchd.validate(text)


def test_validate_accepts_what_render_writes() -> None:
    parsed = launchd.validate(GOOD)
    assert parsed["LimitLoadToSessionType"][:2] == ["Aqua", "Background"]
    assert parsed["ThrottleInterval"] == 10
