"""Every knob of llama-docker, with its default. Override per group or host in inventory.py.

Each knob is checked when a run starts: a bad value stops that host with one line naming the
knob, the value and what is accepted.
"""

# --- Model --------------------------------------------------------------------------------
# A preset name (see README: qwen2.5-0.5b-instruct, smolvlm-256m, llava-v1.5-7b-q4) or a dict:
#   {"name": "mine", "url": "https://...gguf" or "path": "/on/this/laptop.gguf",
#    "sha256": "<64 hex>", "mmproj": {"url": ..., "sha256": ...}, "args": ["--temp", "0.7"]}
model = "qwen2.5-0.5b-instruct"
# Where models live on the device: <models_dir>/<sha256>.gguf, `current.gguf` links to one.
# "auto": /var/lib/llama-docker/models (Debian, Arch), ~/.local/share/llama-docker/models
# (SteamOS: the root filesystem is read-only), ~/.llama-docker/models (macOS).
models_dir = "auto"
# How many models to keep on a device (the serving one and the previous, for rollback).
models_keep = 2
# Where the controller (this laptop) keeps downloaded models and hash markers.
cache_dir = "~/.cache/llama-docker"
# "controller": download once here, push to every device over SSH (the internet sees one
# download). "direct": each device downloads the URL itself (devices far from this laptop).
model_source = "controller"
# Several models picked per request by "name" (router mode): presets or dicts as for `model`.
models = []
# How many of `models` are loaded at once (LRU unloaded); 0 = as many as fit the device's RAM.
models_max = 0

# --- Container runtime ----------------------------------------------------------------------
# "auto" picks what fits the device: docker on Debian and Arch, rootless podman on SteamOS,
# docker in colima on macOS. Or "docker", "podman", or "native" (macOS: Homebrew's
# llama-server with Metal, no container).
runtime = "auto"
# A LAN registry mirror (host:port, plain HTTP) for the base image; "" for Docker Hub.
# With docker it is merged into the device's own /etc/docker/daemon.json (README: Knobs).
registry_mirror = ""
# Base image of the server image (Debian forky ships llama.cpp-tools).
image_base = "docker.io/library/debian:forky-slim"
# False only for a package mirror that serves an expired snapshot.
apt_check_valid_until = True
# Pin the llama.cpp-tools package the image installs, e.g. "1:0.7.0+dfsg-2"; "" = unpinned.
llama_cpp_version = ""
# Pin apt to one Debian snapshot: a date ("20250601T000000Z", snapshot.debian.org) or a URL.
debian_snapshot = ""
# Any new value (a date, "2") builds the server image anew once and ships it to every device.
image_rebuild = ""
# "controller": the server image is built once per CPU and shipped from this controller's cache.
# "device": every device builds its own from Debian's mirror (a slow link from this laptop).
image_source = "controller"

# --- Lock file (README: Lock file) ----------------------------------------------------------
# Resolve llama-docker.lock's entries anew: True (all), a model's name, "webui", or a list.
lock_upgrade = False

# --- Server -----------------------------------------------------------------------------------
# Port of the web UI and API on the device.
port = 8080
# Address the port is published on: "0.0.0.0" for the whole LAN, "127.0.0.1" for the device only.
bind = "0.0.0.0"
# Context window in tokens (costs RAM: checked before deploying).
ctx_size = 2048
# CPU threads for llama-server; 0 = one per physical core of the device.
threads = 0
# Extra llama-server arguments for every model, e.g. ["--temp", "0.7"].
server_args = []
# Web pages of other origins allowed to call the API from a browser: [] = none (the web UI is
# same-origin and always works), or one origin, e.g. ["http://laptop.lan:3000"], "localhost", "*".
cors_origins = []
# Name of the systemd unit (<name>.service).
service_name = "llama-docker"
# Seconds to wait for /health 200 after a (re)start.
health_timeout = 300
# The web UI on the port: "upstream" (llama.cpp's own UI of the image's llama.cpp build,
# downloaded once here, verified, pushed; SimpleChat until it can be had), "simplechat"
# (Debian's), "none", or the path of a built UI folder or .tar.gz on this controller.
webui = "upstream"
# sha256 of the UI tarball; "" = the one the release publishes (printed, so it can be pinned).
webui_sha256 = ""
# Base URL standing in for https://github.com/ggml-org/llama.cpp/releases/download; "" = GitHub.
webui_mirror = ""
# Linux GPU through Vulkan: "auto" uses an AMD (amdgpu) or Intel (i915/xe) GPU, the CPU
# otherwise (a Pi's v3d is slower than its CPU); "vulkan" forces it, "off" never. Macs: Metal
# comes with runtime "native".
gpu = "auto"
# Layers offloaded to the GPU: "all", "auto" (llama-server fits them to free GPU memory), or N.
n_gpu_layers = "all"

# --- Preflight margins ----------------------------------------------------------------------
# RAM kept free beyond model + context, in MiB.
ram_margin_mib = 512
# Disk kept free beyond the model files, in MiB.
disk_margin_mib = 1024

# --- SSH trust --------------------------------------------------------------------------------
# Host keys are checked against known_hosts and never accepted silently.
ssh_strict_host_key_checking = "yes"

# --- Access -----------------------------------------------------------------------------------
# API key for llama-server: "" for none, "generate" for a random key kept (0600) in
# ~/.config/llama-docker/api-key ($XDG_CONFIG_HOME) on this controller, or the key itself.
# Clients send "Authorization: Bearer <key>"; /health stays open.
api_key = ""

# --- Fleet gateway (README: One address for the fleet) ---------------------------------------
# True on the one host that runs the gateway: an HAProxy that routes each request by its
# "model" to every device serving that model, balanced, with failover. "only" on a box that
# runs the gateway and serves no model (a NAS, a small server): no model is fetched, fitted
# or pushed there, no server image or unit; its model knobs are not used.
gateway = False
# Port of the gateway's OpenAI-compatible API on that host.
gateway_port = 4000
# Address the gateway reaches this device's server at: "" = its inventory name.
lan_address = ""

# --- Relay (README: Past one uplink) ----------------------------------------------------------
# True: a device that holds the verified model (or server image archive) passes it on to the
# others over a restricted device-to-device SSH link, so this controller sends each once per
# run; False (per host or group): this host gets its pushes from the controller, sends nothing on.
relay = True
# Port other devices reach this device's sshd at: 0 = the port this controller connects to.
lan_ssh_port = 0

# --- A model over several devices (README: A model bigger than any one device) --------------
# On the head: inventory names of the devices its model is split over, e.g. ["pi2.local"].
split_over = []
# Port of a worker's RPC server on its own loopback; a head's links use the ports after it.
rpc_port = 50052
