"""The relay's plan (what --dry prints) and its live scheduling, with fake copies."""

from __future__ import annotations

import gevent

from llama_docker.knobs.errors import VerifyError
from llama_docker.transfer.relay import LinkDown, Relay
from llama_docker.transfer.relay_plan import (
    CONTROLLER,
    controller_copies,
    plan_lines,
    rounds,
)


def test_four_devices_one_controller_copy_and_doubling_rounds() -> None:
    plan = rounds([], ["a", "b", "c", "d"])
    assert plan == [[(CONTROLLER, "a")], [("a", "b")], [("a", "c"), ("b", "d")]]
    assert controller_copies([], ["a", "b", "c", "d"]) == 1


def test_eight_devices_take_log2_rounds_after_the_push() -> None:
    plan = rounds([], [f"d{i}" for i in range(8)])
    assert [len(r) for r in plan] == [1, 1, 2, 4]
    assert sum(1 for r in plan for s, _ in r if s == CONTROLLER) == 1


def test_a_holder_seeds_and_the_controller_sends_nothing() -> None:
    assert rounds(["old"], ["a", "b"]) == [[("old", "a")], [("old", "b")]]
    assert rounds(["old"], ["a", "b", "c"]) == [[("old", "a")], [("old", "b"), ("a", "c")]]
    assert controller_copies(["old"], ["a"]) == 0
    assert controller_copies([], []) == 0
    assert rounds(["old"], []) == []


def test_plan_line() -> None:
    assert plan_lines("m.gguf", [], ["a", "b", "c"]) == [
        f"relay m.gguf: round 1: {CONTROLLER} -> a; round 2: a -> b; round 3: a -> c"]
    assert plan_lines("m.gguf", ["a"], []) == []


def _run(relay: Relay, names: list[str], peer, controller) -> dict[str, tuple[bool, str]]:  # noqa: ANN001
    said: list[str] = []
    jobs = {n: gevent.spawn(relay.obtain, n, lambda src, n=n: peer(src, n),
                            lambda n=n: controller(n), said.append) for n in names}
    gevent.joinall(list(jobs.values()), timeout=30, raise_error=True)
    return {n: j.get() for n, j in jobs.items()}


def test_the_controller_sends_once_and_every_other_device_from_a_peer() -> None:
    relay = Relay(name="m", sha="0" * 64, ext="gguf", size=10, receivers=list("abcd"))
    pushed: list[str] = []
    copies: list[tuple[str, str]] = []

    def controller(n: str) -> tuple[bool, str]:
        gevent.sleep(0.05)
        pushed.append(n)
        return True, "sent 10 bytes"

    def peer(src: str, n: str) -> tuple[int, int]:
        gevent.sleep(0.05)
        copies.append((src, n))
        return 10, 0

    got = _run(relay, list("abcd"), peer, controller)
    assert len(pushed) == 1 and all(ok for ok, _ in got.values())
    assert len(copies) == 3 and {d for _, d in copies} | set(pushed) == set("abcd")
    # a source sends to one receiver at a time: the second round has two senders
    assert len({s for s, _ in copies}) == 2


def test_an_unreachable_device_falls_back_to_the_controller_and_says_so() -> None:
    relay = Relay(name="m", sha="0" * 64, ext="gguf", size=10, holders=["old"])

    def peer(src: str, n: str) -> tuple[int, int]:
        if n == "walled":
            raise LinkDown(f"{src} cannot reach walled")
        return 10, 0

    got = _run(relay, ["a", "walled"], peer, lambda n: (True, "sent 10 bytes"))
    assert got["a"][1].startswith("received 10 bytes of m from old")
    assert got["walled"] == (True, "sent 10 bytes (from this controller: no peer could be "
                                   "reached: old cannot reach walled)")


def test_a_source_whose_bytes_do_not_verify_is_not_used_again() -> None:
    relay = Relay(name="m", sha="0" * 64, ext="gguf", size=10, holders=["rotten"])
    pushed: list[str] = []

    def peer(src: str, n: str) -> tuple[int, int]:
        gevent.sleep(0.01)
        if src == "rotten":
            raise VerifyError("hashes 1111, expected 0000")
        return 10, 0

    def controller(n: str) -> tuple[bool, str]:
        pushed.append(n)
        return True, "sent 10 bytes"

    got = _run(relay, ["a", "b", "c"], peer, controller)
    assert "rotten" in relay.bad and len(pushed) == 1
    assert all(ok for ok, _ in got.values())
    assert sum("from rotten" in line for _, line in got.values()) == 0


def test_a_failed_seed_push_is_taken_over_by_the_next_device() -> None:
    relay = Relay(name="m", sha="0" * 64, ext="gguf", size=10)
    pushed: list[str] = []

    def controller(n: str) -> tuple[bool, str]:
        gevent.sleep(0.01)
        pushed.append(n)
        return (n != "a"), "sent" if n != "a" else "push failed"

    got = _run(relay, ["a", "b", "c"], lambda src, n: (10, 0), controller)
    assert got["a"] == (False, "push failed")
    assert pushed == ["a", "b"] and got["c"][0]
