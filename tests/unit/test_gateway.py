"""The gateway's routing table and HAProxy configuration, from inventory data (pure)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pyinfra.facts.files import File

from llama_docker.device.gateway_config import (
    CONTAINERFILE,
    haproxy_config,
    image_tag,
    quote,
    systemd_unit,
)
from llama_docker.device.gateway_routes import Upstream, check, routes
from llama_docker.device.target import choose
from llama_docker.device.units import FILES
from llama_docker.knobs import config
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import ConfigError, RefusedError

SHA = "a" * 64


def host(tmp_path: Path, model: str, **knobs: object) -> dict:
    return {**DEFAULTS, "cache_dir": str(tmp_path),
            "model": {"name": model, "path": "/m.gguf", "sha256": SHA}, **knobs}


def test_devices_serving_one_model_share_its_route(tmp_path: Path) -> None:
    table, skipped = routes([
        ("raspi", host(tmp_path, "a", lan_address="192.168.1.20")),
        ("deck", host(tmp_path, "a", ssh_hostname="steamdeck.lan", port=8081)),
        ("nas", host(tmp_path, "b")),
    ])
    assert skipped == {}
    assert table == {
        "a": [Upstream("raspi", "192.168.1.20", 8080, None),
              Upstream("deck", "steamdeck.lan", 8081, None)],
        "b": [Upstream("nas", "nas", 8080, None)],
    }


def test_a_split_model_is_one_route_its_head(tmp_path: Path) -> None:
    """The devices a head's split_over names run only an RPC worker: not routes."""
    table, _ = routes([
        ("pi1", host(tmp_path, "big", split_over=["pi2", "pi3"])),
        ("pi2", host(tmp_path, "big")), ("pi3", host(tmp_path, "big")),
        ("deck", host(tmp_path, "big")),
    ])
    assert [u.host for u in table["big"]] == ["pi1", "deck"]


def test_a_host_with_a_bad_knob_is_left_out_with_its_reason(tmp_path: Path) -> None:
    table, skipped = routes([("ok", host(tmp_path, "a")), ("bad", host(tmp_path, "a", port=0))])
    assert [u.host for u in table["a"]] == ["ok"]
    assert skipped["bad"].startswith("bad: knob port=0 is invalid")


def test_generated_key_is_the_fleets_key(tmp_path: Path, own_config_home: Path) -> None:
    table, _ = routes([("x", host(tmp_path, "a", api_key="generate"))])
    assert table["a"][0].api_key == (own_config_home / "api-key").read_text().strip()


@pytest.mark.parametrize(("table", "says"), [
    ({}, "no device of the inventory serves a model"),
    ({"a": [Upstream("p", "10.0.0.1", 8080, "k" * 16), Upstream("q", "10.0.0.2", 8080, None)]},
     "the devices serving a (p, q) have different api_key values"),
    ({"a": [Upstream("p", "127.0.0.1", 8080, None)]}, "p is reached at a loopback address"),
])
def test_tables_the_gateway_cannot_serve_are_refused(table: dict, says: str) -> None:
    with pytest.raises(RefusedError, match=re.escape(says)):
        check(table)


def test_gateway_knobs_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"knob gateway='yes' is invalid"):
        config.load({**DEFAULTS, "gateway": "yes"}, "raspi")
    with pytest.raises(ConfigError, match=r"raspi: knob lan_address='http://x' is invalid"):
        config.load({**DEFAULTS, "lan_address": "http://x"}, "raspi")
    cfg = config.load({**DEFAULTS, "gateway": True, "gateway_port": 4001,
                       "lan_address": "raspi.local"})
    assert (cfg.gateway, cfg.gateway_port, cfg.lan_address) == (True, 4001, "raspi.local")


TABLE = {
    "tiny-b": [Upstream("nas", "10.0.0.3", 8080, None)],
    "tiny-a": [Upstream("raspi", "10.0.0.1", 8080, "k%ey'0123456789ab"),
               Upstream("deck", "10.0.0.2", 8081, "k%ey'0123456789ab")],
}


def test_one_backend_per_model_with_all_its_devices() -> None:
    text = haproxy_config(TABLE, None)
    assert re.findall(r"^backend (\S+)", text, re.M) == ["model_0", "model_1"]
    a = text.split("\nbackend model_0")[1].split("\nbackend model_1")[0]
    assert re.findall(r"^\s+server (\S+) (\S+)$", a, re.M) == [
        ("raspi", "10.0.0.1:8080"), ("deck", "10.0.0.2:8081")]
    assert "option httpchk GET /health" in a and "balance roundrobin" in a
    # The device key: quoted as one word, % escaped for HAProxy's log-format.
    assert "http-request set-header Authorization 'Bearer k%%ey'\\''0123456789ab'" in a
    assert "http-request del-header Authorization" in text.split("\nbackend model_1")[1]
    assert "acl model_0 var(txn.model) -m str 'tiny-a'" in text
    # A retry goes to another device; a dead one is given up on within a LAN's second.
    assert "option redispatch 1" in text and "timeout connect 1s" in text
    assert "retry-on conn-failure" in text


def test_models_are_listed_once_each() -> None:
    text = haproxy_config(TABLE, None)
    listed = re.search(r"string '(\{\"object\".*?)' if METH_GET", text)
    assert listed
    assert [m["id"] for m in json.loads(listed[1])["data"]] == ["tiny-a", "tiny-b"]


def test_unknown_model_answer_names_it_and_client_key_is_checked() -> None:
    assert "req.fhdr(authorization)" not in haproxy_config(TABLE, None)
    text = haproxy_config(TABLE, "client-key-0123456789")
    assert "unless { req.fhdr(authorization) -m str 'Bearer client-key-0123456789' }" in text
    assert ("return status 404 content-type application/json lf-string "
            "'{\"error\":{\"message\":\"model %[var(txn.model),json(utf8s)] is not served")\
        in text
    assert "unless model_0 or model_1" in text


def test_health_answer_says_each_device_state() -> None:
    text = haproxy_config(TABLE, None)
    assert '"raspi": %[srv_is_up(model_0/raspi)]' in text
    assert '"nas": %[srv_is_up(model_1/nas)]' in text
    # 503 while a model has no device up; a device is up only once a check has passed.
    assert "acl model_1_down nbsrv(model_1) lt 1" in text
    assert re.search(r"return status 503 .* if gw_health model_0_down or gw_health "
                     r"model_1_down$", text, re.M)
    assert "default-server check init-state down " in text


def test_gateway_stops_on_its_soft_stop_signal() -> None:
    """HAProxy as the container's PID 1 ignores SIGTERM: a stop would wait for the kill."""
    assert "STOPSIGNAL SIGUSR1" in (FILES / CONTAINERFILE).read_text()
    assert "hard-stop-after 5s" in haproxy_config(TABLE, None)


def test_quote_is_one_word() -> None:
    assert quote("a b") == "'a b'"
    assert quote("it's") == "'it'\\''s'"


def test_unit_runs_the_gateway_locked_down() -> None:
    unit = systemd_unit(runtime="docker", image="llama-docker/gateway:abc", port=4000,
                        bind="0.0.0.0", config_file="/etc/llama-docker/gateway.cfg")
    for flag in ("--read-only", "--cap-drop ALL", "--security-opt no-new-privileges",
                 "--publish 0.0.0.0:4000:8080",
                 "--volume /etc/llama-docker/gateway.cfg:/etc/llama-gateway/haproxy.cfg:ro"):
        assert flag in unit
    assert image_tag("debian:forky-slim", True) != image_tag("debian:forky-slim", False)


def test_no_gateway_reads_only_whether_one_is_left() -> None:
    """A host without the gateway reads one fact more, in preflight's batch (a no-op run
    stays at 2 round trips): whether a gateway switched off left its unit behind."""
    from pyinfra.facts.files import File

    from llama_docker.tasks import gateway

    cfg = config.load(DEFAULTS)
    tgt = choose("debian", "auto", "auto", "/home/pi", "llama-docker")
    assert gateway.wants(cfg, tgt) == [(File, {"path": gateway.unit_path()})]
    assert len(gateway.wants(config.load({**DEFAULTS, "gateway": True}), tgt)) > 1


def test_a_device_serving_a_set_is_routed_for_each_of_its_models() -> None:
    from llama_docker.device.gateway_routes import served_models
    from llama_docker.knobs import config
    from llama_docker.knobs.defaults import DEFAULTS

    sha = "a" * 64
    cfg = config.load({**DEFAULTS, "models": [
        {"name": "chat", "path": "/m/a.gguf", "sha256": sha},
        {"name": "small", "path": "/m/b.gguf", "sha256": "b" * 64}]})
    assert served_models(cfg) == ["chat", "small"]
    assert served_models(config.load(DEFAULTS)) == ["qwen2.5-0.5b-instruct"]


def test_a_gateway_only_box_is_no_route(tmp_path: Path) -> None:
    table, skipped = routes([("raspi", host(tmp_path, "a")),
                             ("gw", host(tmp_path, "a", gateway="only"))])
    assert skipped == {} and table == {"a": [Upstream("raspi", "raspi", 8080, None)]}
    assert config.load({**DEFAULTS, "gateway": "only"}).gateway_only
    assert not config.load({**DEFAULTS, "gateway": True}).gateway_only
    with pytest.raises(ConfigError, match="'only'"):
        config.load({**DEFAULTS, "gateway": "yes"})


def test_a_gateway_only_box_runs_the_runtime_and_the_gateway() -> None:
    """No model, image, web UI, service or health step there, and none of their facts; the
    step that retires a server of an earlier run asks for the unit file alone, and only
    there; the split step only undoes what a former head or worker left."""
    from llama_docker.tasks import steps

    only = config.load({**DEFAULTS, "gateway": "only"})
    assert [s.name for s in steps.of_host(only, steps.ALL)] == ["runtime", "split", "retire",
                                                                "gateway"]
    assert [s.name for s in steps.of_host(only, steps.MODEL_ONLY)] == ["split", "retire",
                                                                       "gateway"]
    both = config.load({**DEFAULTS, "gateway": True})
    assert steps.of_host(both, steps.ALL) == steps.ALL
    tgt = choose("debian", "auto", "auto", "/home/pi", "llama-docker")
    asked = {cls.__name__ for cls, _ in steps.wants(only, tgt)}
    assert "ImageId" in asked and not asked & {"StoreState", "UnitHealth"}
    assert len(steps.wants(only, tgt)) < len(steps.wants(both, tgt))
    retire = next(s for s in steps.ALL if s.name == "retire")
    assert retire.wants(only, tgt) == [(File, {"path": tgt.unit_path})]
    assert retire.wants(both, tgt) == []


def _check_split(name: str, hosts: list, profile: str = "debian", **knobs: object) -> str:
    """tasks/split.py check() for one host of an inventory, as preflight calls it."""
    from pyinfra.api import Config as PyinfraConfig
    from pyinfra.api import Inventory, State

    from llama_docker.tasks import split

    from .fixtures.harness import in_context

    inv = Inventory((hosts, {}))
    state = State(inv, PyinfraConfig())
    tgt = choose(profile, "auto", "auto", "/home/pi", "llama-docker")
    with in_context(state, inv.get_host(name)):
        return split.check(config.load({**DEFAULTS, **knobs}), tgt)


def test_a_split_neither_runs_on_nor_reaches_a_gateway_only_box() -> None:
    """A gateway-only box serves no model and runs no RPC worker: split_over there, or a
    head's split_over naming it, is refused in one line (it was silently ignored)."""
    with pytest.raises(RefusedError, match="split_over is not for a gateway-only box"):
        _check_split("gw", [("gw", {"split_over": ["pi2"]}), "pi2"],
                     gateway="only", split_over=["pi2"])
    with pytest.raises(RefusedError, match="split_over of pi1 names gw, a gateway-only box"):
        _check_split("gw", [("pi1", {"split_over": ["gw"]}), "gw"], gateway="only")
    assert _check_split("pi2", [("pi1", {"split_over": ["pi2"]}), "pi2"]) == "pi1"


def test_a_mac_is_refused_as_a_worker_and_a_deck_is_taken() -> None:
    """A worker's RPC server is a systemd unit: a Mac named in split_over is refused in one
    line (it would run no worker and leave its head waiting); a Steam Deck is a worker."""
    with pytest.raises(RefusedError, match="split_over of pi1 names mac, a Mac: an RPC worker"):
        _check_split("mac", [("pi1", {"split_over": ["mac"]}), "mac"], profile="macos")
    assert _check_split("deck", [("pi1", {"split_over": ["deck"]}), "deck"],
                        profile="steamos") == "pi1"
