"""Who holds the server's port: ss/lsof/netstat output parsed, our own server told apart."""

from __future__ import annotations

from llama_docker.device import listeners
from llama_docker.device.listeners import Listener, foreign, parse, published_ports, refusal

SS_PERL = ["ss State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process",
           'ss LISTEN 0      5            0.0.0.0:8080      0.0.0.0:*    '
           'users:(("perl",pid=1234,fd=3))']
SS_DOCKER = ['ss LISTEN 0 4096 0.0.0.0:8080 0.0.0.0:* users:(("docker-proxy",pid=77,fd=4))',
             'ss LISTEN 0 4096    [::]:8080    [::]:* users:(("docker-proxy",pid=78,fd=4))']
PUBLISHED = published_ports(["8080/tcp -> 0.0.0.0:8080", "8080/tcp -> [::]:8080"])


def test_ss_names_the_process_and_skips_the_header() -> None:
    assert parse(SS_PERL) == [Listener("0.0.0.0", "perl", 1234)]


def test_ss_without_permission_to_see_the_process() -> None:
    assert parse(["ss LISTEN 0 5 *:8080 *:*"]) == [Listener("*", "", 0)]


def test_lsof_and_netstat_on_a_mac() -> None:
    lines = ["lsof p501", "lsof cllama-server", "lsof f5", "lsof n*:8080",
             "netstat tcp4       0      0  *.8080                 *.*                    LISTEN",
             "netstat tcp4       0      0  127.0.0.1.8080         *.*                    LISTEN"]
    assert parse(lines) == [Listener("*", "llama-server", 501), Listener("127.0.0.1", "", 0)]


def test_published_ports_of_our_container() -> None:
    assert PUBLISHED == {8080}
    assert published_ports([]) == set()


def test_free_port_passes() -> None:
    assert foreign([], 8080, "0.0.0.0", set()) is None


def test_someone_elses_process_is_refused_by_name_and_pid() -> None:
    other = foreign(parse(SS_PERL), 8080, "0.0.0.0", set())
    assert other == Listener("0.0.0.0", "perl", 1234)
    assert refusal(other, 8080, "pi") == ("port 8080 is in use by perl (pid 1234): "
                                          "set the port knob to a free port")


def test_our_own_publisher_passes_on_a_converged_device() -> None:
    assert foreign(parse(SS_DOCKER), 8080, "0.0.0.0", PUBLISHED) is None


def test_another_containers_publisher_is_not_ours() -> None:
    """docker-proxy for a container of the user's: our container publishes nothing."""
    other = foreign(parse(SS_DOCKER), 8080, "0.0.0.0", set())
    assert other is not None and other.name == "docker-proxy"


def test_a_non_publisher_is_refused_even_while_our_container_runs() -> None:
    assert foreign(parse(SS_PERL), 8080, "0.0.0.0", PUBLISHED) is not None


def test_every_runtime_publisher_is_known() -> None:
    for name in ("docker-proxy", "conmon", "rootlessport", "pasta", "slirp4netns"):
        assert name in listeners.PUBLISHERS


def test_native_mac_server_is_ours_only_by_its_agent_pid() -> None:
    mine = [Listener("*", "llama-server", 501)]
    assert foreign(mine, 8080, "0.0.0.0", set(), agent_pid=501) is None
    assert foreign(mine, 8080, "0.0.0.0", set(), agent_pid=None) == mine[0]  # user's own


def test_unseen_process_is_named_as_such() -> None:
    other = foreign([Listener("*", "", 0)], 8080, "0.0.0.0", set())
    assert other is not None
    assert refusal(other, 8080, "deck") == ("port 8080 is in use by a process deck cannot "
                                            "see: set the port knob to a free port")


def test_other_address_does_not_collide_with_a_specific_bind() -> None:
    lan_only = [Listener("192.168.1.5", "nginx", 9)]
    assert foreign(lan_only, 8080, "127.0.0.1", set()) is None
    assert foreign(lan_only, 8080, "0.0.0.0", set()) == lan_only[0]
    assert foreign([Listener("[::]", "nginx", 9)], 8080, "127.0.0.1", set()) is not None
