"""The OpenSSH push's command line (llama_docker/transfer/push.py) and the device lock's
answers (llama_docker/device/store.py)."""

from __future__ import annotations

import shutil

import pytest

from llama_docker.device.store import lock_failure
from llama_docker.transfer.push import SshTarget

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs an ssh client")


def test_alias_uses_the_ssh_config_file_and_no_default_port_or_user() -> None:
    t = SshTarget.from_data("myraspi", {"ssh_config_file": "/home/me/.ssh/config",
                                        "ssh_strict_host_key_checking": "yes"})
    assert t is not None
    argv = t.argv(aes=True)
    assert argv[:3] == ["ssh", "-F", "/home/me/.ssh/config"]
    assert argv[-1] == "myraspi"
    for flag in ("-p", "-l", "-i"):
        assert flag not in argv  # the config's Port, User and IdentityFile stand


def test_host_data_still_wins_where_it_is_set() -> None:
    t = SshTarget.from_data("raspi", {"ssh_hostname": "10.0.0.5", "ssh_port": 2222,
                                      "ssh_user": "pi", "ssh_key": "/k"})
    assert t is not None
    argv = t.argv(aes=False)
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-l") + 1] == "pi"
    assert argv[argv.index("-i") + 1] == "/k"
    assert "-F" not in argv and argv[-1] == "10.0.0.5"


def test_a_lock_that_cannot_be_made_is_not_another_deploy() -> None:
    lock = "/var/lib/llama-docker/models/.ab.lock"
    assert lock_failure(lock, "nolock Permission denied\n") == \
        f"cannot create the lock {lock} on the device: Permission denied"
    assert lock_failure(lock, "busy laptop 1234") is None
    assert lock_failure(lock, "") is None
