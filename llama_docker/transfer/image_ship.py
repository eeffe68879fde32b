"""Device commands that make, save and load the server image, and the stream that brings a
saved image to the controller's cache: through the OpenSSH client where the push uses it
(about four times paramiko's rate here), else through pyinfra's paramiko connection."""

from __future__ import annotations

import hashlib
import os
import select
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import paramiko

from llama_docker.device.image import VERSION_LABEL
from llama_docker.knobs.errors import LlamaDockerError
from llama_docker.transfer.interrupt import die_with_parent, interrupted, stoppable

CHUNK = 1 << 20
STALL_SECONDS = 300


def _q(text: str) -> str:
    return shlex.quote(text)


def stage_tag(tag: str) -> str:
    """The build's first stage, before the llama.cpp version is put on it as a label."""
    return f"{tag}-stage"


def build_script(runtime: str, stage_build: str, tag: str, context: str) -> str:
    """`stage_build` (the build of stage_tag(tag)), then the llama.cpp version dpkg
    installed, read from that stage and put on the image as a label.

    A LABEL's value is fixed before the build runs, so the version (known only once apt has
    chosen it) goes on in a second, one-line build from the first stage.
    """
    stage = stage_tag(tag)
    env = "DOCKER_BUILDKIT=0 " if runtime == "docker" else ""
    labelfile = f"{context}/Labelfile"
    return (
        "set -e; "
        f"{stage_build}; "
        f"v=$({runtime} run --rm --network none --entrypoint dpkg-query {_q(stage)} "
        "-W -f '${Version}' llama.cpp-tools | tr -cd 'A-Za-z0-9.:+~-'); "
        f'printf \'FROM %s\\nLABEL {VERSION_LABEL}="%s"\\n\' {_q(stage)} "$v" > {_q(labelfile)}; '
        f"{env}{runtime} build -t {_q(tag)} -f {_q(labelfile)} {_q(context)}; "
        f"{runtime} rmi {_q(stage)} >/dev/null"
    )


def inspect_command(runtime: str, tag: str) -> str:
    """`<image id>|<layer>,<layer>,...|<llama.cpp version>` of a local image (read with
    image_archive.DeviceImage.parse), or nothing when it is absent."""
    # `with`: an image without labels (the gateway's) has none to index, an error otherwise.
    fmt = ('{{.Id}}|{{range .RootFS.Layers}}{{.}},{{end}}|'
           f'{{{{with .Config.Labels}}}}{{{{index . "{VERSION_LABEL}"}}}}{{{{end}}}}')
    return f"{runtime} image inspect --format {_q(fmt)} {_q(tag)} 2>/dev/null || true"


def load_command(runtime: str, archive: str, image_id: str, tag: str) -> str:
    """Load the archive, then put `tag` on the image it loaded. The name an archive carries is
    the saving runtime's (podman saves `localhost/llama-docker/server:...`, which docker
    loads under that name), so the tag is put on as this runtime names it: by the name the
    load reports, else by the config's ID (docker's containerd image store knows an image
    by its manifest's digest only, so there the name is the one way)."""
    return (f"out=$({runtime} load -i {_q(archive)}) && "
            "name=$(echo \"$out\" | sed -n -e 's/^Loaded image: //p' "
            "-e 's/^Loaded image(s): //p' | tail -n 1 | cut -d, -f1) && "
            f'{runtime} tag "${{name:-{image_id}}}" {_q(tag)}')


def save_to(client: paramiko.SSHClient, command: str, stdin: str | None, part: Path,
            progress: Callable[[int], None] | None = None) -> str:
    """Run `command` (an image save to stdout) and write its bytes to `part`, hashing them
    as they come (`progress` is told each chunk's length); return the sha256. A failed save
    or a dropped link raises and leaves no file that could be taken for a whole archive."""
    transport = client.get_transport()
    assert transport is not None
    h = hashlib.sha256()
    part.parent.mkdir(parents=True, exist_ok=True)
    try:
        with transport.open_session() as chan, open(part, "wb") as out:
            chan.settimeout(STALL_SECONDS)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall((stdin + "\n").encode())
            chan.shutdown_write()
            while (chunk := chan.recv(CHUNK)) and not interrupted():
                out.write(chunk)
                h.update(chunk)
                if progress is not None:
                    progress(len(chunk))
            if interrupted():
                code, err = -1, ""
            else:
                code = chan.recv_exit_status()
                err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
    except (OSError, paramiko.SSHException) as exc:
        code, err = -1, str(exc)
    return _ended(part, code, err, h.hexdigest())


def _ended(part: Path, code: int, err: str, sha: str) -> str:
    """A save's end, either way it streamed: `sha` when it ended whole; else the .part is
    deleted (nothing that could pass for a whole archive stays) and the error says why."""
    if interrupted() or code != 0:
        part.unlink(missing_ok=True)
    if interrupted():
        raise LlamaDockerError("interrupted: the image save stopped; re-run")
    if code != 0:
        last = err.splitlines()[-1] if err else f"exit {code}"
        raise LlamaDockerError(f"saving the image from the device failed: {last}")
    return sha


def save_via_ssh(ssh_argv: list[str], command: str, stdin: str | None, part: Path,
                 progress: Callable[[int], None] | None = None) -> str:
    """save_to through the OpenSSH client (`ssh_argv`: SshTarget.argv, the options the push
    uses; its keepalives end a dead link within a minute, and a save that sends no byte for
    STALL_SECONDS on a live link, a runtime stuck on its disk, is ended too). Ctrl-C or
    SIGTERM end the ssh child; a failed save leaves no file that could be taken for a whole
    archive."""
    h = hashlib.sha256()
    part.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as err_file, open(part, "wb") as out:
        proc = subprocess.Popen([*ssh_argv, command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err_file,
                                preexec_fn=die_with_parent())
        assert proc.stdin is not None and proc.stdout is not None
        try:
            with stoppable(proc.terminate):
                if stdin is not None:
                    proc.stdin.write((stdin + "\n").encode())
                proc.stdin.close()
                fd = proc.stdout.fileno()
                while select.select([fd], [], [], STALL_SECONDS)[0]:
                    if not (chunk := os.read(fd, CHUNK)):
                        break
                    out.write(chunk)
                    h.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
                else:
                    proc.kill()
                    raise OSError(f"no byte came for {STALL_SECONDS} s")
                code = proc.wait()
        except OSError as exc:
            code, err = -1, str(exc)
        else:
            err_file.seek(0)
            err = err_file.read().decode(errors="replace").strip()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return _ended(part, code, err, h.hexdigest())
