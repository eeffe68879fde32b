"""Status rows: the device script (run here against stub commands), parsing, table, JSON."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
from pathlib import Path

import pytest

from llama_docker.device.probes import free_kib
from llama_docker.device.target import Target, choose, device_url
from llama_docker.knobs import config
from llama_docker.knobs.errors import ConfigError, RefusedError
from llama_docker.status import parse, probe, table
from llama_docker.status.row import Row
from llama_docker.tasks.facts import FreeBytes

DEFAULTS = {k: v for k, v in runpy.run_path(
    str(Path(__file__).resolve().parents[2] / "group_data" / "all.py")).items()
    if not k.startswith("__")}
SHA_A, SHA_B = "a" * 64, "b" * 64
COMPLETION = {"content": " world", "tokens_predicted": 16,
              "timings": {"predicted_n": 16, "predicted_per_second": 123.456}}


def cfg(**knobs: object) -> config.Config:
    model = {"name": "tiny-a", "path": "/m/tiny-a.gguf", "sha256": SHA_A}
    return config.load({**DEFAULTS, "model": model, **knobs}, "h")


def debian(c: config.Config | None = None) -> Target:
    c = c or cfg()
    return choose("debian", c.runtime, c.models_dir, "/home/pi", c.service_name)


def make_row(host: str, c: config.Config, facts: dict[str, str]) -> Row:
    return parse.row_from(host, c, debian(c), facts)


def healthy_facts(**over: str) -> dict[str, str]:
    facts = {
        "kernel": "Linux", "os_ID": "debian", "os_PRETTY_NAME": "Debian GNU/Linux 12",
        "service": "active", "current": f"{SHA_A}.gguf",
        "previous": f"{SHA_B}.gguf", "disk_free_kib": str(40 * 1024 * 1024),
        "ram_kib": str(16 * 1024 * 1024), "api_key": "off", "health": "200",
        "completion": json.dumps(COMPLETION),
    }
    facts.update(over)
    return facts


# --- parsing ------------------------------------------------------------------------------


def test_parse_keeps_completion_json_whole() -> None:
    lines = ["kernel=Linux", 'os_PRETTY_NAME="Debian GNU/Linux 12"', "health=200",
             'completion={"content":"a=b', 'c","timings":{}}']
    facts = parse.parse(lines)
    assert facts["os_PRETTY_NAME"] == "Debian GNU/Linux 12"
    assert facts["completion"] == '{"content":"a=b\nc","timings":{}}'


@pytest.mark.parametrize(("text", "expected"), [
    (json.dumps(COMPLETION), 123.456),
    ('{"timings": {"predicted_per_second": 0}}', None),
    ('{"error": {"code": 401, "message": "Invalid API Key"}}', None),
    ("not json", None),
    ("", None),
    (None, None),
])
def test_tokens_per_second(text: str | None, expected: float | None) -> None:
    assert parse.tokens_per_second(text) == expected


def test_healthy_row() -> None:
    row = make_row("raspi", cfg(), healthy_facts())
    assert (row.profile, row.runtime, row.service, row.health) == ("debian", "docker",
                                                                  "active", 200)
    assert (row.sha256, row.previous_sha256, row.model) == (SHA_A, SHA_B, "tiny-a")
    assert row.tokens_per_s == pytest.approx(123.456)
    assert row.disk_free_bytes == 40 << 30 and row.ram_bytes == 16 << 30
    assert row.api_key is False and not row.drift
    assert row.healthy


@pytest.mark.parametrize("over", [
    {"service": "failed"},
    {"health": "000", "completion": ""},
    {"health": "503"},
    {"completion": '{"error": {"code": 401}}'},
])
def test_not_healthy(over: dict[str, str]) -> None:
    assert not make_row("raspi", cfg(), healthy_facts(**over)).healthy


def test_missing_links_and_unknown_values() -> None:
    row = make_row("raspi", cfg(), healthy_facts(
        current="", previous="elsewhere.gguf", api_key="unknown", disk_free_kib="",
        ram_kib="", health=""))
    assert row.sha256 is None and row.previous_sha256 is None
    assert row.api_key is None and row.disk_free_bytes is None and row.ram_bytes is None
    assert row.health == 0


def test_ram_from_sysctl_on_macos() -> None:
    assert make_row("mac", cfg(), healthy_facts(ram_kib="", ram_bytes=str(8 << 30))
                    ).ram_bytes == 8 << 30


@pytest.mark.parametrize(("profile", "runtime", "expected"), [
    ("debian", "auto", "docker"), ("debian", "podman", "podman"), ("steamos", "auto", "podman"),
])
def test_target_picks_runtime_as_the_deploy_does(profile: str, runtime: str, expected: str
                                                  ) -> None:
    c = cfg(runtime=runtime)
    facts = {"kernel": "Linux", "os_ID": profile, "home": "/home/deck", "uid": "1000"}
    t = parse.target_of(c, facts, "deck")
    assert (t.profile, t.runtime) == (profile, expected)
    assert parse.row_from("h", c, t, healthy_facts()).runtime == expected


def test_unsupported_os_is_a_reached_row_with_a_reason() -> None:
    facts = {"kernel": "Linux", "os_ID": "fedora", "os_PRETTY_NAME": "Fedora Linux 40"}
    with pytest.raises(RefusedError) as err:
        parse.target_of(cfg(), facts, "me")
    row = parse.refused_row("box", facts, err.value)
    assert (row.reachable, row.profile, row.error) == (True, "fedora",
                                                       "unsupported OS: Fedora Linux 40")
    assert "\nbox   unsupported OS: Fedora Linux 40\n" in table.table([row])


def test_drift_when_device_serves_another_file() -> None:
    row = make_row("h", cfg(), healthy_facts(current=f"{SHA_B}.gguf"))
    assert row.drift and row.healthy  # serving, but not what the knob says
    assert "b" * 12 + "*" in table.table([row])


@pytest.mark.parametrize(("message", "phrase"), [
    ("Could not connect ([Errno 111] Connection refused)", "connection refused"),
    ("Could not connect ([Errno None] Unable to connect to port 2222 on 127.0.0.1)",
     "connection refused or host down"),
    ("Could not connect (timed out)", "connection timed out"),
    ("SSH host key error (Host key for 127.0.0.1 does not match.)", "host key changed"),
    ("SSH error (StrictPolicy: No host key for [127.0.0.1]:2222 found in known_hosts)",
     "host key not in known_hosts"),
    ("Authentication error (username=pi, key=/k) (Authentication failed.)",
     "ssh login refused (key or user)"),
    ("Could not resolve hostname ([Errno -2] Name or service not known)",
     "name does not resolve"),
    ("Something new\nwith detail", "Something new"),
])
def test_connect_reason(message: str, phrase: str) -> None:
    assert parse.connect_reason(message) == phrase


def test_config_row_names_the_knob() -> None:
    with pytest.raises(ConfigError) as err:
        config.load({**DEFAULTS, "port": 70000}, "h")
    row = parse.config_row("h", err.value)
    assert row.reachable is None and row.error == "knob port=70000 is invalid"
    assert not row.healthy


# --- table and JSON ---------------------------------------------------------------------------


def fleet() -> list[Row]:
    return [
        make_row("raspi.local", cfg(), healthy_facts()),
        make_row("nas.lan", cfg(bind="127.0.0.1", port=8081),
                        healthy_facts(service="inactive", health="000", completion="")),
        Row(host="pinebook.local", reachable=False, error="connection refused"),
        parse.config_row("deck", ConfigError("port", 0, "x")),
    ]


OPEN_LINE = ('open: anyone on the LAN can use it, no key asked: set api_key = "generate" (or '
             'bind = "127.0.0.1" to keep it to the device)')


def test_the_lan_column_says_open_key_or_local_only() -> None:
    """Who can use each device's API: the bind knob, and the key file the device holds."""
    rows = [make_row("raspi", cfg(), healthy_facts(api_key="off")),
            make_row("deck", cfg(), healthy_facts(api_key="on")),
            make_row("mac", cfg(bind="127.0.0.1"), healthy_facts(api_key="off")),
            make_row("pi5", cfg(), healthy_facts(api_key="unknown"))]
    assert [r.lan for r in rows] == ["open", "key", "local only", None]
    lines = table.table(rows).splitlines()
    col = lines[0].index("LAN")
    assert [ln[col:].split("  ")[0] for ln in lines[1:5]] == ["open", "key", "local only", "?"]
    assert lines[-1] == OPEN_LINE
    assert [d["lan"] for d in json.loads(table.to_json(rows))] == [
        "open", "key", "local only", None]
    assert OPEN_LINE not in table.table(rows[1:])


def test_table_columns_align() -> None:
    lines = table.table(fleet()).splitlines()
    header, ok, down = lines[0], lines[1], lines[2]
    for name in ("SHA", "HEALTH", "LISTEN", "LAN"):
        col = header.index(name)
        assert ok[col - 1] == " " and down[col - 1] == " ", name
    assert ok[header.index("SHA"):].startswith("a" * 12 + " ")
    assert ok[header.index("PREVIOUS"):].startswith("b" * 12 + " ")
    assert down[header.index("LISTEN"):].startswith("127.0.0.1:8081")
    assert down[header.index("HEALTH"):].startswith("down")
    # right-aligned numbers end where their header ends
    assert ok[:header.index("TOK/S") + 5].endswith("123.5")
    # LLAMA.CPP, then BACKEND last: both unknown without the image's label and the log
    assert ok.endswith("  40G  16G  -          -")


def test_table_unreachable_rows_carry_reason() -> None:
    lines = table.table(fleet()).splitlines()
    assert lines[3].split() == ["pinebook.local", "unreachable:", "connection", "refused"]
    assert lines[4].startswith("deck ") and "not asked: knob port=0 is invalid" in lines[4]
    assert lines[-2:] == ["1 of 4 hosts healthy", OPEN_LINE]


def test_table_width_for_a_typical_home() -> None:
    """14 columns with two 12-hex shas cannot fit 100; a home with a preset fits 160."""
    home = [make_row("pinebook.local", config.load(DEFAULTS, "p"), healthy_facts()),
            make_row("raspi.local", cfg(), healthy_facts(service="inactive"))]
    width = max(len(line) for line in table.table(home).splitlines())
    assert width <= 160, width


@pytest.mark.parametrize(("n", "text"), [
    (None, "-"), (512 << 20, "512M"), (int(7.6 * (1 << 30)), "7.6G"), (40 << 30, "40G")])
def test_size(n: int | None, text: str) -> None:
    assert table.size(n) == text


def rows_from(items: list[dict]) -> list[Row]:
    """Rows back from `--json` output, as a script reading it would."""
    return [Row(**{k: v for k, v in item.items() if k not in ("healthy", "lan")}) for item in items]


def test_json_round_trip() -> None:
    rows = fleet()
    data = json.loads(table.to_json(rows))
    assert [d["healthy"] for d in data] == [True, False, False, False]
    assert data[0]["sha256"] == SHA_A and data[0]["tokens_per_s"] == pytest.approx(123.456)
    assert data[2] == {**data[2], "reachable": False, "error": "connection refused"}
    assert rows_from(data) == rows


def test_device_url() -> None:
    assert device_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert device_url("::", 80) == "http://127.0.0.1:80"
    assert device_url("::1", 80) == "http://[::1]:80"
    assert device_url("192.168.1.5", 8080) == "http://192.168.1.5:8080"


# --- the device script, run here against stub commands ----------------------------------------

STUBS = {
    # systemctl: records how it was asked (env included), answers FAKE_ACTIVE.
    "systemctl": ('echo "${XDG_RUNTIME_DIR:+XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR }$*" '
                  '> "${FAKE_LOG%/*}/systemctl.log"; echo "${FAKE_ACTIVE:-active}"'),
    # sudo -n: "test -f <key files>" answers from FAKE_KEY; anything else runs as is.
    "sudo": ('[ "$1" = -n ] && shift; [ -n "$FAKE_NOSUDO" ] && exit 1\n'
             'if [ "$1" = test ]; then [ -n "$FAKE_KEY" ]; exit; fi\nexec "$@"'),
    # curl: records its arguments; /health answers FAKE_HEALTH, /completion a JSON body.
    "curl": ('echo "$*" >> "$FAKE_LOG"\ncase "$*" in\n'
             '  */gateway/health*) printf "%s\\n%s" "$FAKE_GATEWAY" "${FAKE_GW_CODE:-200}";;\n'
             '  */health*) printf "%s" "${FAKE_HEALTH:-200}";;\n'
             f"  */completion*) printf '%s' '{json.dumps(COMPLETION)}';;\nesac"),
}


@pytest.fixture()
def device(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text(f"#!/bin/sh\n{body}\n")
        stub.chmod(0o755)
    store = tmp_path / "models"
    store.mkdir()
    (store / f"{SHA_A}.gguf").write_bytes(b"x")
    (store / "current.gguf").symlink_to(f"{SHA_A}.gguf")
    (store / "previous.gguf").symlink_to(f"{SHA_B}.gguf")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "FAKE_LOG": str(tmp_path / "curl.log")}
    return tmp_path, env


def run_script(c: config.Config, env: dict[str, str], t: Target | None = None,
               **fake: str) -> list[str]:
    full = {**env, **{f"FAKE_{k.upper()}": v for k, v in fake.items()}}
    proc = subprocess.run(["sh", "-c", probe.script(c, t or debian(c), 1000)], env=full,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_facts_script_runs_here() -> None:
    facts = parse.parse(subprocess.run(["sh", "-c", probe.FACTS_SCRIPT], capture_output=True,
                                       text=True, timeout=30).stdout.splitlines())
    assert facts["kernel"] == os.uname().sysname and facts["uid"] == str(os.getuid())


def test_script_healthy_device(device: tuple[Path, dict[str, str]]) -> None:
    tmp, env = device
    c = cfg(models_dir=str(tmp / "models"))
    row = make_row("h", c, parse.parse(run_script(c, env)))
    assert row.healthy and row.sha256 == SHA_A and row.previous_sha256 == SHA_B
    assert row.api_key is False and row.ram_bytes and row.disk_free_bytes
    calls = (tmp / "curl.log").read_text().splitlines()
    assert "--max-time 5" in calls[0] and calls[0].endswith("http://127.0.0.1:8080/health")
    assert "--max-time 30" in calls[1] and '"n_predict": 16' in calls[1]
    assert '"temperature": 0' in calls[1] and "-H @" not in calls[1]
    assert (tmp / "systemctl.log").read_text().split() == ["is-active", "llama-docker.service"]


def test_script_sends_api_key_header_under_sudo(device: tuple[Path, dict[str, str]]) -> None:
    tmp, env = device
    c = cfg(models_dir=str(tmp / "models"))
    row = make_row("h", c, parse.parse(run_script(c, env, key="1")))
    assert row.api_key is True and row.healthy
    completion = (tmp / "curl.log").read_text().splitlines()[1]
    assert "-H @/etc/llama-docker/api-key.header" in completion


def test_script_rootless_user_unit_and_own_key_files(device: tuple[Path, dict[str, str]]
                                                     ) -> None:
    """SteamOS: systemctl --user, key files in ~/.config, and no sudo anywhere."""
    tmp, env = device
    c = cfg(models_dir=str(tmp / "models"))
    t = choose("steamos", "auto", c.models_dir, str(tmp), c.service_name)
    (tmp / ".config" / "llama-docker").mkdir(parents=True)
    (tmp / ".config" / "llama-docker" / "api-key").write_text("k\n")
    (tmp / ".config" / "llama-docker" / "api-key.header").write_text("Authorization: k\n")
    row = parse.row_from("deck", c, t, parse.parse(run_script(c, env, t, nosudo="1")))
    assert row.healthy and row.api_key is True and row.runtime == "podman"
    assert (tmp / "systemctl.log").read_text().split() == [
        "XDG_RUNTIME_DIR=/run/user/1000", "--user", "is-active", "llama-docker.service"]
    completion = (tmp / "curl.log").read_text().splitlines()[1]
    assert f"-H @{tmp}/.config/llama-docker/api-key.header" in completion


def test_script_down_server_skips_generation(device: tuple[Path, dict[str, str]]) -> None:
    tmp, env = device
    c = cfg(models_dir=str(tmp / "models"))
    row = make_row("h", c, parse.parse(
        run_script(c, env, health="000", active="failed", nosudo="1")))
    assert (row.service, row.health, row.tokens_per_s, row.api_key) == ("failed", 0, None, None)
    assert len((tmp / "curl.log").read_text().splitlines()) == 1


def test_free_disk_is_the_deploys_own_command() -> None:
    """The FREE column and preflight's disk check send one command text (device/probes.py)."""
    assert FreeBytes().command("/srv/my models") == (
        "p='/srv/my models'; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
        "df -Pk \"$p\" | awk 'NR==2 {print $4}'")
    line = 'echo "disk_free_kib=$(' + free_kib('"$d"') + ')"'
    assert line in probe.script(cfg(), debian(), 1000)


def test_script_missing_store_and_home_path(device: tuple[Path, dict[str, str]]) -> None:
    tmp, env = device
    c = cfg(models_dir="~/not/there yet")
    row = make_row("h", c, parse.parse(run_script(c, env)))
    assert row.sha256 is None and row.disk_free_bytes  # df of the nearest existing parent


# --- the gateway's row ----------------------------------------------------------------------

GATEWAY_PAGE = {"models": {"tiny-a": {"raspi": 1, "pinebook": 0}, "tiny-b": {"nas": 1}}}


def test_script_reads_the_gateway_page(device: tuple[Path, dict[str, str]]) -> None:
    tmp, env = device
    c = cfg(models_dir=str(tmp / "models"), gateway=True, gateway_port=4000)
    row = make_row("nas", c, parse.parse(
        run_script(c, env, gateway=json.dumps(GATEWAY_PAGE), gw_code="503")))
    assert row.gateway == {"port": 4000, "service": "active", "health": 503,
                           "models": GATEWAY_PAGE["models"]}
    assert row.healthy  # 503: a model lacks a device, whose own row says why
    assert "%{http_code} http://127.0.0.1:4000/gateway/health" in (tmp / "curl.log").read_text()
    assert make_row("h", cfg(), healthy_facts()).gateway is None  # not the gateway's host


def test_gateway_not_answering_makes_its_host_unhealthy(device: tuple[Path, dict[str, str]]
                                                        ) -> None:
    tmp, env = device
    c = cfg(models_dir=str(tmp / "models"), gateway=True)
    row = make_row("nas", c, parse.parse(run_script(c, env, gateway="", gw_code="000")))
    assert row.gateway == {"port": 4000, "service": "active", "health": 0, "models": {}}
    assert not row.healthy
    assert table.gateway_line(row) == "gateway on nas (*:4000): not answering (unit active)"


def test_table_has_a_gateway_row_naming_devices_seen_down() -> None:
    gw = cfg(gateway=True, gateway_port=4000)
    rows = [*fleet(), make_row("nas", gw, healthy_facts(
        gateway_service="active", gateway_health="200", gateway=json.dumps(GATEWAY_PAGE)))]
    lines = table.table(rows).splitlines()
    assert lines[-3] == ("gateway on nas (*:4000): tiny-a 1 of 2 up (pinebook down), "
                         "tiny-b 1 of 1 up")
    assert lines[-2:] == ["2 of 5 hosts healthy", OPEN_LINE]
    data = json.loads(table.to_json(rows))
    assert data[-1]["gateway"]["models"] == GATEWAY_PAGE["models"]
    assert [d["gateway"] for d in data[:-1]] == [None] * 4
    assert rows_from(data) == rows


def test_gateway_only_box_is_its_gateway(device: tuple[Path, dict[str, str]]) -> None:
    """gateway = "only": no server asked for, the row is the gateway's and says so."""
    tmp, env = device
    c = cfg(models_dir=str(tmp / "models"), gateway="only", gateway_port=8080)
    row = make_row("gw", c, parse.parse(run_script(c, env, gateway=json.dumps(GATEWAY_PAGE))))
    assert row.gateway_only and row.healthy and row.model is None and row.sha256 is None
    assert (row.service, row.health, row.port) == ("active", 200, 8080)
    calls = (tmp / "curl.log").read_text()
    assert "/gateway/health" in calls and "/completion" not in calls
    assert "llama-gateway.service" in (tmp / "systemctl.log").read_text()
    lines = table.table([row]).splitlines()
    assert lines[1].split()[:6] == ["gw", "debian", "docker", "active", "(gateway", "only)"]
    assert lines[2].startswith("gateway on gw (*:8080): tiny-a 1 of 2 up")
    down = make_row("gw", c, parse.parse(run_script(c, env, gateway="", gw_code="000",
                                                     active="inactive")))
    assert not down.healthy and "0 of 1 hosts healthy" in table.table([down]).splitlines()
