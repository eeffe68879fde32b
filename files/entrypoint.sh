#!/bin/sh
# Starts llama-server on 0.0.0.0:8080 inside the container; the unit decides what the host
# publishes. Host and port are always passed: llama-server's own defaults have moved.
# One model (LLAMA_MODEL), or several: LLAMA_PRESET names the preset of a router, which
# hands its own arguments (the GPU ones below too) and environment to each model's server.
set -eu
if [ -n "${LLAMA_PRESET:-}" ]; then
  if [ ! -r "$LLAMA_PRESET" ]; then
    echo "llama-docker: preset $LLAMA_PRESET is missing or unreadable" >&2
    exit 66
  fi
  set -- --host 0.0.0.0 --port 8080 --models-preset "$LLAMA_PRESET" \
    --models-max "${LLAMA_MODELS_MAX:-0}" "$@"
else
  model=${LLAMA_MODEL:-/models/current.gguf}
  if [ ! -r "$model" ]; then
    echo "llama-docker: model $model is missing or unreadable" >&2
    exit 66
  fi
  set -- --host 0.0.0.0 --port 8080 --model "$model" "$@"
fi
if [ -n "${LLAMA_MMPROJ:-}" ]; then
  set -- "$@" --mmproj "$LLAMA_MMPROJ"
fi
# The key stays in a file: never on a command line, where `ps` would show it.
if [ -r /run/secrets/llama-api-key ]; then
  set -- "$@" --api-key-file /run/secrets/llama-api-key
fi
if [ "${LLAMA_GPU:-}" != vulkan ]; then
  exec llama-server "$@"
fi
# GPU (the unit sets LLAMA_GPU only where the deploy chose one). -lv 4 is the lowest
# verbosity at which llama-server names the device it serves from: the deploy's check and
# status read that line. A GPU llama-server cannot see, or a server that dies on it, falls
# back to the CPU with one line saying so: a slower server, never a dead one.
if ! llama-server --list-devices 2>/dev/null | grep -q '^ *Vulkan[0-9]'; then
  echo "llama-docker: gpu vulkan: llama-server sees no Vulkan device; serving on the CPU" >&2
  exec llama-server "$@" --device none
fi
llama-server "$@" --n-gpu-layers "${LLAMA_GPU_LAYERS:-all}" --log-verbosity 4 &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
code=0
wait "$child" || code=$?
if [ "$code" = 0 ]; then
  exit 0
fi
echo "llama-docker: gpu vulkan: llama-server exited with status $code on the GPU; serving on the CPU" >&2
exec llama-server "$@" --device none
