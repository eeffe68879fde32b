"""Knob rules: group_data/all.py loads as is; each bad value names knob, value, accepted."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from llama_docker.knobs import config
from llama_docker.knobs.errors import ConfigError

DEFAULTS = {k: v for k, v in runpy.run_path(
    str(Path(__file__).resolve().parents[2] / "group_data" / "all.py")).items()
    if not k.startswith("__")}


def test_defaults_load() -> None:
    cfg = config.load(DEFAULTS)
    assert cfg.port == 8080 and cfg.bind == "0.0.0.0"
    assert cfg.model.name == "qwen2.5-0.5b-instruct"


def test_every_rule_has_a_default() -> None:
    assert set(config.RULES) <= set(DEFAULTS)


@pytest.mark.parametrize(("knob", "value", "accepted"), [
    ("port", 0, "from 1 to 65535"),
    ("port", 70000, "from 1 to 65535"),
    ("port", "8080", "a whole number"),
    ("port", True, "a whole number"),
    ("bind", "everywhere", "an IP address"),
    ("models_dir", "models", "an absolute path"),
    ("runtime", "lxc", "one of 'auto', 'docker', 'podman'"),
    ("registry_mirror", "http://mirror:5000", "no scheme"),
    ("apt_check_valid_until", "no", "True or False"),
    ("server_args", "--temp 0.7", "a list of strings"),
    ("service_name", "llama docker", "a name of"),
    ("ctx_size", 16, "from 128"),
    ("cors_origins", "*", "[] (same origin only)"),
    ("cors_origins", ["http://a.lan", "http://b.lan"], "one of: an origin"),
    ("cors_origins", ["http://laptop.lan:3000/"], "an origin such as"),
    ("cors_origins", ["laptop.lan"], "an origin such as"),
])
def test_bad_value_is_one_line_naming_host_knob_value(knob: str, value: object,
                                                      accepted: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load({**DEFAULTS, knob: value}, host="raspi")
    msg = str(err.value)
    assert msg.startswith(f"raspi: knob {knob}={value!r} is invalid: expected ")
    assert accepted in msg and "\n" not in msg


def test_missing_knob_points_at_group_data() -> None:
    data = dict(DEFAULTS)
    del data["port"]
    with pytest.raises(ConfigError, match="group_data/all.py"):
        config.load(data)


def test_ipv6_bind_normalised() -> None:
    assert config.load({**DEFAULTS, "bind": "::1"}).bind == "::1"


def test_unknown_knob_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as err:
        config.load({**DEFAULTS, "modle": "x"}, host="raspi")
    assert str(err.value).startswith("raspi: knob modle='x' is invalid")
    assert "did you mean 'model'?" in str(err.value)


def test_pyinfra_connection_data_is_not_a_knob() -> None:
    config.load({**DEFAULTS, "ssh_user": "pi", "ssh_port": 2222, "_sudo": True})


@pytest.mark.parametrize(("typo", "knob"), [
    ("ctx_sise", "ctx_size"), ("modle", "model"), ("ctxsize", "ctx_size"),
    ("CTX_SIZE", "ctx_size"), ("ctx-size", "ctx_size"), ("prot", "port"), ("bnid", "bind"),
    ("threds", "threads"), ("health_timout", "health_timeout"),
    ("registry_mirrors", "registry_mirror"), ("api-key", "api_key"),
    ("ram_margin", "ram_margin_mib"), ("model_dir", "models_dir"), ("Port", "port"),
])
def test_misspelt_knob_stops_the_host_with_the_knob_it_resembles(typo: str, knob: str
                                                                 ) -> None:
    with pytest.raises(ConfigError) as err:
        config.load({**DEFAULTS, typo: 1}, host="raspi")
    msg = str(err.value)
    assert msg.startswith(f"raspi: knob {typo}=1 is invalid: expected a knob of ")
    assert f"did you mean {knob!r}?" in msg and "\n" not in msg


FOREIGN = ["profile", "lab_ip", "role", "location", "owner", "backup_target", "nas_share",
           "mqtt_host", "hostname", "kind", "sshport", "cache", "service", "timezone"]


@pytest.mark.parametrize("key", FOREIGN)
def test_other_deploys_host_data_is_ignored(key: str) -> None:
    assert config.near_miss(key) == ""
    cfg = config.load({**DEFAULTS, key: "raspi"}, host="raspi")
    assert cfg.port == 8080
    assert config.ignored_keys([*DEFAULTS, key]) == [key]


def test_underscore_and_connection_keys_are_never_looked_at() -> None:
    keys = ["_sudo", "_ctx_sise", "_modle", "ssh_user", "ssh_port", "ssh_key"]
    config.load({**DEFAULTS, **dict.fromkeys(keys, "x")})
    assert config.ignored_keys(keys) == []
    assert [config.near_miss(k) for k in keys] == [""] * len(keys)


@pytest.mark.parametrize("key", ["short", "has space in it 1234", "tab\there-0123456789"])
def test_bad_api_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.load({**DEFAULTS, "api_key": key})
    assert key not in str(err.value) and "<hidden>" in str(err.value)


def test_generated_api_key_is_kept_private_and_stable(tmp_path: Path,
                                                     own_config_home: Path) -> None:
    import stat

    from llama_docker.knobs.apikey import resolve

    assert resolve("", tmp_path) is None
    key = resolve("generate", tmp_path)
    assert key and len(key) >= 32 and resolve("generate", tmp_path) == key
    assert stat.S_IMODE((own_config_home / "api-key").stat().st_mode) == 0o600
    assert resolve("my-own-key-0123456789", tmp_path) == "my-own-key-0123456789"


def test_cors_default_allows_no_other_origin() -> None:
    assert config.load(DEFAULTS).cors_origins == ()


@pytest.mark.parametrize("origins", [["http://laptop.lan:3000"], ["https://[fd00::1]"],
                                     ["localhost"], ["*"], []])
def test_cors_origins_accepted(origins: list[str]) -> None:
    assert config.load({**DEFAULTS, "cors_origins": origins}).cors_origins == tuple(origins)
