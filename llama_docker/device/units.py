"""Service definitions rendered from files/ templates: pure text in, pure text out."""

from __future__ import annotations

import shlex

import jinja2

from llama_docker.knobs.resources import folder

FILES = folder("files")
CONTAINER = "llama"

TEMPLATES = jinja2.Environment(  # every systemd text rendered from files/
    loader=jinja2.FileSystemLoader(str(FILES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # systemd units, not HTML
)


def systemd_unit(*, runtime: str, image: str, model_name: str, models_dir: str, port: int,
                 bind: str, ctx_size: int, threads: int, args: tuple[str, ...],
                 mmproj: bool, api_key_file: str | None = None, rootless: bool = False,
                 memory_mib: int = 0, preset: str | None = None, models_max: int = 0,
                 gpu_flags: tuple[str, ...] = (), host_network: bool = False) -> str:
    """The unit that runs llama-server in a container, restarted by systemd.

    `rootless`: a user unit (SteamOS) whose podman maps the user to the image's uid 10001,
    so the user's own files (models, key) are readable inside and nothing runs as root.
    `preset`: several models (router mode): llama-server itself is the entrypoint, started
    without a model, reading the preset (context size and threads are in it, so that a
    model's own can win: the command line would beat them).
    `gpu_flags`: the render node, its groups and the entrypoint's GPU settings (gpu.py).
    `host_network`: the head of a split model, which reaches its RPC links on the device's
    own loopback; its args then carry `--host` and `--port` (they win over the entrypoint's).
    """
    return TEMPLATES.get_template("llama-docker.service.j2").render(
        runtime=runtime, image=image, model_name=model_name, models_dir=models_dir,
        port=port, bind=bind, ctx_size=ctx_size, threads=threads, container=CONTAINER,
        args=[_unit_quote(a) for a in args], mmproj=mmproj, api_key_file=api_key_file,
        rootless=rootless, memory_mib=memory_mib, preset=preset, models_max=models_max,
        gpu_flags=[f"{flag} {_unit_quote(value)}"  # pairs: --env X, --device X, --group-add X
                   for flag, value in zip(gpu_flags[::2], gpu_flags[1::2], strict=True)],
        host_network=host_network,
    )


def server_args(cors_origins: tuple[str, ...], model_args: tuple[str, ...],
                extra: tuple[str, ...], alias: str | None = None) -> tuple[str, ...]:
    """llama-server's arguments beyond model, host and port, for every service manager.

    CORS is always passed: llama-server's own default (`*`, credentials echoed) lets any web
    page a browser on the LAN opens read the answers. An empty value allows no other origin;
    the web UI is same-origin and needs none. `alias`: one model's configured name, which
    llama-server then answers as `"model"` and lists in /v1/models (without it, the file's
    path, `/models/current.gguf`: what a client asked the gateway for is not what it gets
    back). A router names each model from its preset and gets none. The knobs' own arguments
    come after these, so a `--cors-origins` or `--alias` in them still wins.
    """
    named = ("--alias", alias) if alias else ()
    return ("--cors-origins", ",".join(cors_origins), *named, *model_args, *extra)


def _unit_quote(arg: str) -> str:
    # systemd splits ExecStart like a shell for quotes; % starts a specifier.
    return shlex.quote(arg).replace("%", "%%")
