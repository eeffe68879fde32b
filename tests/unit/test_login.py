"""Who the deploy logs in as, and how a sudo password reaches sudo
(llama_docker/device/login.py)."""

from __future__ import annotations

from types import SimpleNamespace

from llama_docker.device.login import login_user, root_command, sudo_password


def _client(username: str | None) -> SimpleNamespace:
    transport = SimpleNamespace(get_username=lambda: username)
    return SimpleNamespace(get_transport=lambda: transport)


def test_user_comes_from_the_connection_for_an_ssh_config_alias() -> None:
    # `User pi` in the ssh config: no ssh_user in host data, the connection knows.
    assert login_user({"ssh_config_file": "/x/config"}, _client("pi")) == "pi"


def test_user_falls_back_to_host_data_then_root() -> None:
    assert login_user({"ssh_user": "me"}, None) == "me"
    assert login_user({}, SimpleNamespace(get_transport=lambda: None)) == "root"


def test_sudo_password_in_pyinfra_order() -> None:
    cfg = SimpleNamespace(SUDO_PASSWORD="same")
    assert sudo_password({"_sudo_password": "host"}, cfg, {}) == "host"
    assert sudo_password({}, cfg, {"prompted_sudo_password": "asked"}) == "same"
    assert sudo_password({}, SimpleNamespace(SUDO_PASSWORD=None),
                         {"prompted_sudo_password": "asked"}) == "asked"
    assert sudo_password({}, None, None) is None


def test_password_goes_to_stdin_never_the_command_line() -> None:
    cmd, stdin = root_command("test -f '/etc/x'", "s3cr3t pass")
    assert stdin == "s3cr3t pass"
    assert "s3cr3t" not in cmd
    assert cmd.startswith("sudo -S ")
    assert root_command("true", None) == ("sudo -n sh -c true", None)
