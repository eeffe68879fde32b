"""launchd agents for macOS: argument lists, the plists that run them, and the commands that
load them and the colima VM one of them runs.

Pure text in, pure text out. The plist is written by plistlib from the agent's values (the
standard library's writer escapes every string, so an argument such as `a&b <c>` stays one
<string>) and checked for the keys launchd needs before it is uploaded: a broken plist would
otherwise surface only as launchctl's "Bootstrap failed: 5: Input/output error", long after
the file was written.
"""

from __future__ import annotations

import plistlib
import shlex
from dataclasses import dataclass
from typing import Any
from xml.parsers.expat import ExpatError

from llama_docker.device.units import CONTAINER
from llama_docker.knobs.errors import LlamaDockerError

NOTE = ("<!-- Written by llama-docker; a re-run overwrites local edits "
        "(change the knobs instead). -->")
PREFIX = "com.llama-docker"
COLIMA_PROFILE = "llama-docker"
# Homebrew's own choice for its agents: loadable in the gui/ domain of a login session and in
# the user/ domain an SSH session gets when nobody is logged in at the screen.
SESSION_TYPES = ("Aqua", "Background", "LoginWindow", "StandardIO", "System")
LOG_DIR = "Library/Logs/llama-docker"  # under the user's home
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"

class PlistError(LlamaDockerError):
    """A plist that launchd would refuse, or one that does not say what was meant."""


@dataclass(frozen=True)
class Agent:
    """One LaunchAgent: what it runs and how launchd keeps it running."""

    label: str
    program: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    log: str
    workdir: str
    keep_alive: bool  # True: restart whenever it exits; False: only after a failure
    exit_timeout: int = 30  # seconds between SIGTERM and SIGKILL on bootout


def label(service: str) -> str:
    return f"{PREFIX}.{service}"


def log_path(home: str, name: str) -> str:
    return f"{home}/{LOG_DIR}/{name}.log"


def brew_path(prefix: str) -> str:
    """PATH with Homebrew first: SSH sessions and launchd agents start without it."""
    return f"{prefix}/bin:{prefix}/sbin:{SYSTEM_PATH}"


def colima_context() -> str:
    """The docker context colima creates for llama-docker's own VM profile."""
    return f"colima-{COLIMA_PROFILE}"


def colima_agent(*, brew: str, home: str, cpus: int, memory_gib: int) -> Agent:
    """colima in the foreground, in its own profile (the user's default VM is left alone).

    `colima start --foreground` stops the VM on SIGTERM, so a bootout stops it cleanly; it
    exits 0 when the VM already runs, hence restarts only after a failure.
    """
    program = (f"{brew}/bin/colima", "start", COLIMA_PROFILE, "--foreground",
               "--cpu", str(cpus), "--memory", str(memory_gib), "--activate=false")
    return Agent(label=label("colima"), program=program,
                 env=(("PATH", brew_path(brew)),), log=log_path(home, "colima"),
                 workdir=home, keep_alive=False, exit_timeout=120)


def colima_stop_command(brew: str) -> str:
    """Stop llama-docker's VM (none running is no error): a VM still up from an earlier
    plist keeps its old size."""
    return (f"PATH={shlex.quote(brew_path(brew))} {brew}/bin/colima stop "
            f"{COLIMA_PROFILE} >/dev/null 2>&1 || true")


def colima_wait(seconds: int, log: str) -> str:
    """A bounded wait for the VM and its docker (colima status, then docker info)."""
    profile = shlex.quote(COLIMA_PROFILE)
    return (f"i=0; until colima status {profile} >/dev/null 2>&1 && docker info >/dev/null 2>&1;"
            f" do i=$((i+1)); if [ $i -ge {seconds // 2} ]; then echo \"colima's VM did not "
            f"start within {seconds}s; see {log}\"; exit 1; fi; sleep 2; done")


def colima_delete_command() -> str:
    """Delete llama-docker's VM with its disk (newer colima keeps the containers' data disk
    unless told `--data`)."""
    profile = shlex.quote(COLIMA_PROFILE)
    return (f"if colima delete --help 2>&1 | grep -q -- --data; then "
            f"colima delete --force --data {profile}; else colima delete --force {profile}; fi")


def native_args(*, brew: str, models_dir: str, port: int, bind: str, ctx_size: int,
                threads: int, metal: bool, mmproj: bool, api_key_file: str | None,
                args: tuple[str, ...]) -> tuple[str, ...]:
    """Homebrew's llama-server on the Mac itself: Metal, no VM (containers get no GPU)."""
    argv = [f"{brew}/bin/llama-server", "--host", bind, "--port", str(port),
            "--model", f"{models_dir}/current.gguf", "--ctx-size", str(ctx_size),
            "--threads", str(threads)]
    if metal:  # every layer on the Apple GPU, whatever llama-server's default of the day
        argv += ["--n-gpu-layers", "999"]
    if mmproj:
        argv += ["--mmproj", f"{models_dir}/current-mmproj.gguf"]
    if api_key_file:
        argv += ["--api-key-file", api_key_file]
    return (*argv, *args)


def docker_args(*, brew: str, image: str, models_dir: str, port: int, bind: str,
                ctx_size: int, threads: int, uid: int, mmproj: bool,
                api_key_file: str | None, args: tuple[str, ...]) -> tuple[str, ...]:
    """`docker run` in the foreground with the systemd unit's flags.

    A shell removes a container left by a killed run first (the unit's ExecStartPre), then
    execs docker so launchd's SIGTERM reaches it (docker passes it on to llama-server). The
    container runs as the Mac user's uid: colima's mounts show the user's files with that
    owner, so the 0400 key file and a 0700 folder stay readable inside.
    """
    docker = f"{brew}/bin/docker"
    run = [docker, "run", "--rm", "--name", CONTAINER,
           "--publish", f"{bind}:{port}:8080", "--volume", f"{models_dir}:/models:ro",
           "--user", str(uid)]
    if mmproj:
        run += ["--env", "LLAMA_MMPROJ=/models/current-mmproj.gguf"]
    if api_key_file:
        run += ["--volume", f"{api_key_file}:/run/secrets/llama-api-key:ro"]
    run += ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--pids-limit", "256", image,
            "--ctx-size", str(ctx_size), "--threads", str(threads), *args]
    script = f'"$0" rm -f {CONTAINER} >/dev/null 2>&1; exec "$0" "$@"'
    return ("/bin/sh", "-c", script, *run)


def server_agent(*, service: str, home: str, program: tuple[str, ...],
                 env: dict[str, str]) -> Agent:
    """The server: started at login, restarted whenever it exits (systemd's Restart=always)."""
    return Agent(label=label(service), program=program, env=tuple(sorted(env.items())),
                 log=log_path(home, service), workdir=home, keep_alive=True)


def render(agent: Agent) -> str:
    """The agent's plist, checked for what launchd needs; the note after the header tells a
    reader that edits there are overwritten."""
    keep_alive: bool | dict[str, bool] = True if agent.keep_alive else {"SuccessfulExit": False}
    try:
        text = plistlib.dumps({
            "Label": agent.label,
            "ProgramArguments": list(agent.program),
            "EnvironmentVariables": dict(agent.env),
            "WorkingDirectory": agent.workdir,
            "RunAtLoad": True,
            "KeepAlive": keep_alive,
            "ThrottleInterval": 10,
            "ExitTimeOut": agent.exit_timeout,
            "LimitLoadToSessionType": list(SESSION_TYPES),
            "StandardOutPath": agent.log,
            "StandardErrorPath": agent.log,
        }, sort_keys=False).decode()
    except ValueError as exc:  # a control character: XML 1.0 cannot hold it
        raise PlistError(f"not a valid plist for {agent.label}: {exc}") from None
    head, _, body = text.partition("<plist ")
    validate(text)
    return f"{head}{NOTE}\n<plist {body}"


def validate(text: str) -> dict[str, Any]:
    """Parse a plist and check the keys launchd needs; PlistError names what is wrong."""
    try:
        plist = plistlib.loads(text.encode())
    except (plistlib.InvalidFileException, ExpatError, ValueError) as exc:
        raise PlistError(f"not a valid plist: {exc}") from None
    if not isinstance(plist, dict):
        raise PlistError("not a valid plist: the top level is not a <dict>")
    name = plist.get("Label")
    if not isinstance(name, str) or not name:
        raise PlistError("the plist has no Label")
    argv = plist.get("ProgramArguments")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise PlistError(f"{name}: ProgramArguments must be a non-empty list of strings")
    if not argv[0].startswith("/"):
        raise PlistError(f"{name}: ProgramArguments must start with an absolute path "
                         "(launchd does not search PATH)")
    if not isinstance(plist.get("RunAtLoad"), bool):
        raise PlistError(f"{name}: RunAtLoad must be <true/> or <false/>")
    keep = plist.get("KeepAlive")
    if not isinstance(keep, bool) and not (
            isinstance(keep, dict) and isinstance(keep.get("SuccessfulExit"), bool)):
        raise PlistError(f"{name}: KeepAlive must be a boolean or a SuccessfulExit dict")
    env = plist.get("EnvironmentVariables", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise PlistError(f"{name}: EnvironmentVariables must map names to strings")
    for key in ("StandardOutPath", "StandardErrorPath"):
        if key in plist and not str(plist[key]).startswith("/"):
            raise PlistError(f"{name}: {key} must be an absolute path")
    return plist


def reload_commands(domain: str, name: str, plist: str) -> list[str]:
    """Replace a loaded agent with the plist on disk (launchd keeps its own copy).

    bootout stops the old job (an error when none is loaded); bootstrap can fail for a moment
    while the old job winds down, so it is retried, bounded.
    """
    target = shlex.quote(f"{domain}/{name}")
    return [
        bootout_command(domain, name),
        f"launchctl enable {target}",
        f"i=0; until launchctl bootstrap {shlex.quote(domain)} {shlex.quote(plist)}; do "
        "i=$((i+1)); [ $i -lt 5 ] || exit 1; sleep 2; done",
    ]


def bootout_command(domain: str, name: str) -> str:
    """Stop an agent and unload it; none loaded is no error."""
    return f"launchctl bootout {shlex.quote(f'{domain}/{name}')} 2>/dev/null || true"


def kickstart_command(domain: str, name: str) -> str:
    """Restart a loaded agent in place (a new model or key, the same plist)."""
    return f"launchctl kickstart -k {shlex.quote(f'{domain}/{name}')}"
