"""Status of a split model: the head's link probes (run here against real sockets standing in
for the forward), the worker's script, the rows and the table's split line."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llama_docker.status import parse, probe, table
from llama_docker.status.split import links_from, split_line
from tests.unit.test_status import cfg, debian, healthy_facts, make_row, run_script
from tests.unit.test_status import device as device  # noqa: F401 - the fixture

W1, W2 = "pi2.local", "pi3.local"


def _free_run(n: int) -> int:
    """A port p with p+1..p+n free on 127.0.0.1."""
    for base in range(41000, 60000, 97):
        socks = []
        try:
            for p in range(base, base + n + 1):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free ports")


@pytest.fixture()
def forwards() -> Iterator[tuple[int, list[socket.socket]]]:
    """rpc_port; its first forward holds connections open (an RPC server behind it), its
    second accepts and closes at once (ssh's forward refused on the worker), its third has
    no listener (the link down)."""
    base = _free_run(3)
    held, closing = socket.socket(), socket.socket()
    held.bind(("127.0.0.1", base + 1))
    closing.bind(("127.0.0.1", base + 2))
    kept: list[socket.socket] = []
    for s in (held, closing):
        s.listen(8)

    def close_at_once() -> None:
        while True:
            try:
                c, _ = closing.accept()
            except OSError:
                return
            c.close()

    def hold() -> None:
        while True:
            try:
                c, _ = held.accept()
            except OSError:
                return
            kept.append(c)

    threading.Thread(target=close_at_once, daemon=True).start()
    threading.Thread(target=hold, daemon=True).start()
    yield base, kept
    for s in (held, closing, *kept):
        s.close()


def test_head_script_tells_each_worker_up_or_down(device: tuple[Path, dict[str, str]],  # noqa: F811
                                                  forwards: tuple[int, list]) -> None:
    tmp, env = device
    base, _ = forwards
    c = cfg(models_dir=str(tmp / "models"), split_over=[W1, W2, "pi4.local"], rpc_port=base)
    unit = tmp / "unit"
    unit.write_text("... --rpc 127.0.0.1:1,127.0.0.1:2 --n-gpu-layers 7 --tensor-split 3,2,1 "
                    "--fit off\n")
    t = debian(c)
    t = replace(t, unit_path=str(unit))
    facts = parse.parse(run_script(c, env, t))
    row = parse.row_from("pi1.local", c, t, {**healthy_facts(), **facts})
    assert [(lk["worker"], lk["rpc"], lk["layers"]) for lk in row.links or []] == [
        (W1, "up", 3), (W2, "down", 2), ("pi4.local", "down", 1)]
    assert not row.healthy  # serves, but two of its workers do not answer
    assert split_line(row.host, row.links or []) == (
        f"split on pi1.local: 3 layers on {W1} (up), 2 on {W2} (down: no RPC server answers "
        "through the link), 1 on pi4.local (down: no RPC server answers through the link)")


def test_a_link_unit_not_active_is_named() -> None:
    c = cfg(split_over=[W1])
    links = links_from(c, {"link_0": "activating down"})
    assert split_line("pi1", links or []) == f"split on pi1: {W1} (down: link activating)"
    assert links_from(cfg(), {}) is None


def test_all_links_up_keeps_the_head_healthy() -> None:
    c = cfg(split_over=[W1])
    row = make_row("pi1", c, healthy_facts(link_0="active up", split_args="--tensor-split 4"))
    assert row.healthy and row.links and row.links[0]["layers"] == 4


def test_worker_script_reads_its_listener(device: tuple[Path, dict[str, str]]) -> None:  # noqa: F811
    tmp, env = device
    port = _free_run(0)
    c = cfg(models_dir=str(tmp / "models"), rpc_port=port)
    script = probe.script(c, debian(c), 1000, worker_of="pi1")
    assert "llama-docker-rpc.service" in script and "curl" not in script
    down = parse.row_from("pi2", c, debian(c), parse.parse(run_script_worker(c, env)), "pi1")
    assert down.rpc == "down" and not down.healthy
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        up = parse.row_from("pi2", c, debian(c), parse.parse(run_script_worker(c, env)), "pi1")
    assert up.rpc == "up" and up.healthy and up.worker_of == "pi1" and up.ram_bytes
    text = table.table([up, down])
    assert "(rpc worker of pi1)" in text and "rpc up" in text and "rpc down" in text
    assert "127.0.0.1:" + str(port) in text and "1 of 2 hosts healthy" in text


def run_script_worker(c: object, env: dict[str, str]) -> list[str]:
    proc = subprocess.run(["sh", "-c", probe.script(c, debian(c), 1000, "pi1")],  # type: ignore[arg-type]
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_table_has_the_split_line() -> None:
    c = cfg(split_over=[W1])
    row = make_row("pi1", c, healthy_facts(link_0="inactive down"))
    text = table.table([row])
    assert f"split on pi1: {W1} (down: link inactive)" in text and "0 of 1 hosts" in text


def test_status_knows_each_workers_head() -> None:
    pairs = [("a", ["b", "c"]), ("b", None), ("c", []), ("d", ["b"])]
    assert parse.workers_of(pairs) == {"b": "a", "c": "a"}
