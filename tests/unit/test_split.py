"""A model split over devices, the pure parts: the layer fit, free memory under a cgroup
limit, the split_over knob, the worker's authorized_keys line and the units' text; and, on
the Raspberry Pi fixture, the port check of a head whose split_over was dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_docker.device import link, memory, rpc_units, split
from llama_docker.device.fit import GIB, MIB
from llama_docker.device.listeners import Listener
from llama_docker.knobs import config
from llama_docker.knobs.defaults import DEFAULTS
from llama_docker.knobs.errors import ConfigError
from tests.unit.fixtures.harness import deploy_fixture

M = split.Member


def test_layers_follow_free_memory_and_the_head_keeps_its_share() -> None:
    got = split.split_layers("m", 6 * GIB, 0, 24, 0, [M("head", 2 * GIB), M("a", 4 * GIB),
                                                       M("b", 6 * GIB)])
    assert isinstance(got, split.Split)
    assert got.layers == (4, 8, 12) and sum(got.layers) == 24
    args = split.server_args(got, [50053, 50054])
    assert args == ("--rpc", "127.0.0.1:50053,127.0.0.1:50054", "--n-gpu-layers", "21",
                    "--tensor-split", "8,12", "--fit", "off")


def test_no_member_gets_more_layers_than_it_holds() -> None:
    # 10 layers of 100 MiB; the head could take 2, the worker 9: a proportional deal (1:4.5)
    # would still fit, a tight one must move the rest to who has room.
    got = split.split_layers("m", 1000 * MIB, 0, 10, 0, [M("head", 250 * MIB),
                                                         M("w", 900 * MIB)])
    assert isinstance(got, split.Split)
    assert got.layers[0] <= 2 and got.layers[1] <= 9 and sum(got.layers) == 10


def test_a_sum_that_does_not_fit_is_refused_with_the_numbers() -> None:
    why = split.split_layers("big", 3 * GIB, GIB // 2, 32, 512,
                             [M("head", 2 * GIB), M("pi2", 1 * GIB)])
    assert isinstance(why, str)
    assert why.startswith("not enough memory for big split over 2 devices: needs 3.5 GiB "
                          "(3.0 GiB model + 512 MiB context), has 2.0 GiB free after a "
                          "512 MiB margin on each (head 2.0 GiB, pi2 1.0 GiB free)")


def test_the_context_cache_counts_with_its_layer() -> None:
    members = [M("head", 1 * GIB), M("w", 1 * GIB)]
    assert isinstance(split.split_layers("m", GIB, 0, 8, 0, members), split.Split)
    assert isinstance(split.split_layers("m", GIB, 1536 * MIB, 8, 0, members), str)


def test_free_memory_is_the_cgroup_limit_when_smaller_plus_our_own() -> None:
    lines = ["avail 8000000000", "own 100", "own 50",
             "cg 9223372036854771712 5 0 /sys/fs/cgroup/memory",
             "cg 1000000000 400000000 100000000 /sys/fs/cgroup/memory/docker/x"]
    assert memory.parse(lines) == memory.Free(700000150, "cgroup limit")
    assert memory.parse(["avail 500", "cg 1000000000 0 0 /x"]) == memory.Free(500,
                                                                             "MemAvailable")
    assert memory.parse([]) is None


def _load(**knobs: object) -> config.Config:
    return config.load({**DEFAULTS, **knobs}, "pi1")


def test_split_over_knob() -> None:
    assert _load().split_over == ()
    assert _load(split_over=["pi2.local", "pi3"]).split_over == ("pi2.local", "pi3")
    for bad in ("pi2", ["pi2", "pi2"], ["pi 2"], [2]):
        with pytest.raises(ConfigError, match=r"pi1: .*split_over"):
            _load(split_over=bad)
    with pytest.raises(ConfigError, match="rpc_port"):
        _load(rpc_port=80)


def test_the_workers_key_line_allows_one_forward_and_nothing_else() -> None:
    line = link.authorized_line(link.forward_options(50052, "198.18.0.5"),
                                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI",
                                rpc_units.link_name("pi1"))
    assert line == ('restrict,port-forwarding,permitopen="127.0.0.1:50052",'
                    f'permitlisten="127.0.0.1:1",command="{link.HOLD_COMMAND}",from="198.18.0.5" '
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI llama-docker-link:pi1:rpc")


def test_worker_unit_binds_loopback_with_its_cache() -> None:
    text = rpc_units.worker_unit(runtime="docker", image="llama-docker/server:abc", head="pi1",
                                 port=50052, threads=4, cache="/var/lib/llama-docker/rpc-cache",
                                 rootless=False)
    assert "--network host" in text and "--publish" not in text
    assert "--host 127.0.0.1 --port 50052 --threads 4 --cache" in text
    assert "--volume /var/lib/llama-docker/rpc-cache:/cache" in text
    assert "Restart=always" in text and "WantedBy=multi-user.target" in text
    assert rpc_units.cache_dir("/var/lib/llama-docker/models") == "/var/lib/llama-docker/rpc-cache"


def test_link_unit_is_one_pinned_forward_with_bounded_back_off() -> None:
    text = rpc_units.link_unit(worker="pi2", local_port=50053, remote_port=50052,
                               key="/home/pi/k", known_hosts="/home/pi/h", login="pi",
                               address="198.18.0.5", ssh_port=22, user="pi")
    assert "User=pi" in text
    assert "-L 127.0.0.1:50053:127.0.0.1:50052" in text
    # a session, not -N: the worker's sshd sets TCP_NODELAY only for a session's command
    assert "/usr/bin/ssh -T -i" in text and " -N " not in text
    assert "  -p 22 -l pi 198.18.0.5 hold\n" in text
    assert "-o StrictHostKeyChecking=yes" in text and "UserKnownHostsFile=/home/pi/h" in text
    assert "ExitOnForwardFailure=yes" in text and "StartLimitIntervalSec=0" in text
    assert "RestartMaxDelaySec=30" in text
    assert "SuccessExitStatus=255" in text  # a stopped session is no failed unit left behind
    user = rpc_units.link_unit(worker="pi2", local_port=50053, remote_port=50052, key="/k",
                               known_hosts="/h", login="deck", address="deck.lan",
                               ssh_port=22, user=None)
    assert "User=" not in user and "WantedBy=default.target" in user


def test_removing_keys_keeps_the_users_own_and_the_relays() -> None:
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as home:
        ssh = Path(home, ".ssh")
        ssh.mkdir()
        keys = ["ssh-ed25519 AAAA me@laptop",
                'restrict,command="x" ssh-ed25519 BBBB llama-docker-link:pi3',
                'restrict,port-forwarding ssh-ed25519 CCCC llama-docker-link:pi1:rpc',
                'restrict,port-forwarding ssh-ed25519 DDDD llama-docker-link:pi9:rpc']
        (ssh / "authorized_keys").write_text("\n".join(keys) + "\n")
        (ssh / "authorized_keys").chmod(0o600)
        cmd = rpc_units.unauthorize_others_command("pi1")
        subprocess.run(["sh", "-c", f"umask 002; {cmd}"],
                       env={"HOME": home, "PATH": "/usr/bin:/bin"}, check=True)
        assert (ssh / "authorized_keys").read_text().splitlines() == keys[:3]
        assert (ssh / "authorized_keys").stat().st_mode & 0o777 == 0o600
        subprocess.run(["sh", "-c", rpc_units.unauthorize_others_command(None)],
                       env={"HOME": home, "PATH": "/usr/bin:/bin"}, check=True)
        assert (ssh / "authorized_keys").read_text().splitlines() == keys[:2]


def test_the_split_the_head_serves_with_is_kept_while_it_fits() -> None:
    """Free memory moves between runs: a deal that still fits is kept (no restart)."""
    members = [split.Member("head", 4 * GIB), split.Member("w1", 4 * GIB)]
    first = split.split_layers("m", 2 * GIB, 0, 10, 0, members)
    assert isinstance(first, split.Split) and first.layers == (5, 5)
    unit = ("ExecStart=/usr/bin/docker run ... \\\n  img \\\n  --ctx-size 256 "
            + " ".join(split.server_args(first, [50053])) + "\n")
    previous = split.previous_layers(unit, [50053], 10)
    assert previous == (5, 5)
    moved = [split.Member("head", 5 * GIB), split.Member("w1", 3 * GIB)]
    kept = split.split_layers("m", 2 * GIB, 0, 10, 0, moved, previous)
    assert isinstance(kept, split.Split) and kept.layers == (5, 5)
    small = [split.Member("head", 5 * GIB), split.Member("w1", 900 * MIB)]
    redone = split.split_layers("m", 2 * GIB, 0, 10, 0, small, previous)
    assert isinstance(redone, split.Split) and redone.layers[1] <= 4
    # Other links, another model, or no split at all: nothing to keep.
    assert split.previous_layers(unit, [50053, 50054], 10) is None
    assert split.previous_layers(unit, [50053], 4) is None
    assert split.previous_layers("ExecStart=... --ctx-size 256\n", [50053], 10) is None


def test_a_former_heads_own_server_on_the_host_network_is_no_busy_port(tmp_path: Path
                                                                        ) -> None:
    """split_over dropped: the head's llama-server still holds its port on the host's network
    (no publisher) until this run restarts it published; that is ours, not a refusal. A
    llama-server beside a container of ours that is not on the host's network is someone
    else's."""
    held = {"PortListeners(*)": [Listener("0.0.0.0", "llama-server", 2603)]}
    run = deploy_fixture(tmp_path, "debian", {**held, "HostNetwork(*)": True})
    assert "Preflight | Refuse this host" not in run.names()
    (op,) = deploy_fixture(tmp_path, "debian", {**held, "HostNetwork(*)": False}).ops
    assert op.name == "Preflight | Refuse this host"
    assert op.calls[0]["message"] == ("port 8080 is in use by llama-server (pid 2603): set "
                                      "the port knob to a free port")


def test_the_split_state_reads_the_deploy_users_keys_when_read_with_sudo(tmp_path: Path
                                                                         ) -> None:
    """Preflight reads SplitState with sudo, where `~` is root's: the deploy user's
    authorized_keys is read by its path, so a worker dropped from split_over sees its old
    head's key (and its run removes it)."""
    import subprocess

    from llama_docker.device import target
    from tasks import split as split_task
    from tasks.split_facts import SplitState

    home, root = tmp_path / "pi", tmp_path / "root"
    (home / ".ssh").mkdir(parents=True)
    root.mkdir()
    line = 'restrict,port-forwarding ssh-ed25519 CCCC llama-docker-link:pi1:rpc'
    (home / ".ssh" / "authorized_keys").write_text(f"ssh-ed25519 AAAA me@laptop\n{line}\n")
    tgt = target.choose("debian", "docker", "/var/lib/llama-docker/models", str(home),
                        "llama-docker")
    fact = SplitState()
    out = subprocess.run(["sh", "-c", fact.command(**split_task._state_args(tgt))],
                         env={"HOME": str(root), "PATH": "/usr/bin:/bin"}, check=True,
                         capture_output=True, text=True).stdout
    assert fact.process(out.splitlines()) == {"unit": [], "pub": [], "key": [line]}
