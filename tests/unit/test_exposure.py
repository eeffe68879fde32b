"""Who can use a device's API, as the run's summary and status say it."""

from __future__ import annotations

from pathlib import Path

from llama_docker.device.exposure import lan_access, open_line
from llama_docker.tasks import summary

from .fixtures.harness import knobs, load_fixture, model_knob, run_deploy


def test_a_loopback_bind_is_local_only_with_or_without_a_key() -> None:
    for bind in ("127.0.0.1", "127.0.1.1", "::1"):
        assert lan_access(bind, False) == "local only"
        assert lan_access(bind, None) == "local only"


def test_a_lan_bind_is_open_without_a_key_and_key_with_one() -> None:
    for bind in ("0.0.0.0", "::", "192.168.1.20"):
        assert lan_access(bind, False) == "open"
        assert lan_access(bind, True) == "key"
        assert lan_access(bind, None) is None  # sudo could not look at the key file
    assert lan_access(None, False) is None


def test_the_summary_line_names_each_open_host_and_the_knob() -> None:
    line = open_line({"raspi": [":8080"], "nas": [":8081", ":8080 (gateway)"], "mac": []})
    assert line == ('open to the whole LAN without a key: raspi :8080, nas :8081 and :8080 '
                    '(gateway); set api_key = "generate" (or bind = "127.0.0.1" to keep it to '
                    'the device)')
    assert open_line({}) is None and open_line({"mac": []}) is None


def _noted(tmp_path: Path, **knob: object) -> list[str] | None:
    summary._open.clear()
    data = knobs(ssh_user="me", cache_dir=str(tmp_path / "cache"), model=model_knob(tmp_path),
                 **knob)
    run_deploy("debian.local", data, load_fixture("debian"))
    return summary._open.get("debian.local")


def test_the_deploy_notes_a_host_open_to_the_lan_for_the_summary(tmp_path: Path) -> None:
    assert _noted(tmp_path) == [":8080"]  # the defaults: every interface, no key
    assert _noted(tmp_path, api_key="generate") is None
    assert _noted(tmp_path, bind="127.0.0.1") is None


def test_a_gateway_without_a_key_is_named_with_its_port(tmp_path: Path) -> None:
    fixture = {**load_fixture("debian")}
    summary._open.clear()
    data = knobs(ssh_user="me", cache_dir=str(tmp_path / "cache"), model=model_knob(tmp_path),
                 gateway=True, gateway_port=4000)
    run_deploy("debian.local", data, fixture)
    assert summary._open.get("debian.local") == [":8080", ":4000 (gateway)"]
