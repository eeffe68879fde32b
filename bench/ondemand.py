"""Loading on demand: time to the first token for a model that is not loaded, against one that is.

One device serves two generated models of different sizes with the `models` knob (llama-server's
router mode) and `models_max = 1`, so asking for the model that is not loaded makes the router
stop the other one's child process and start one for it before the first token. Each round asks
each model twice in a row: the first request finds it unloaded (the other model was the last one
used), the second finds it loaded; /models is checked before every request so that the state
measured is the state named. Every round goes small then big, so each model's first request
follows the other model's. The clock is the
controller's: from sending the streamed chat completion to the first chunk that carries text,
through the device's published port, as a client sees it.
"""

from __future__ import annotations

import http.client
import json
import time

from .common import (
    WORK,
    Lab,
    Result,
    Row,
    deploy,
    inventory,
    lab,
    log,
    med,
    model,
    ratio_rounds,
    rounds,
)
from .common import write_knobs as knobs

SMALL = {"seed": 410}  # the generated model's default shape
BIG = {"seed": 411, "n_embd": 1024, "n_ff": 4096, "n_layer": 2, "n_head": 16}  # 128 MiB of F32
MAX_TOKENS = 8
TIMEOUT = 120.0  # seconds for one request, loading included


def _state(dev: lab.Device, name: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", dev.http_port, timeout=30)
    try:
        conn.request("GET", "/models")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {m["id"]: m["status"]["value"] for m in body["data"]}[name]


def _first_token(dev: lab.Device, name: str) -> float:
    """Seconds from sending a streamed chat completion for `name` to its first text chunk;
    the rest of the stream is read to its end so that the next request starts from idle."""
    # cache_prompt off: a loaded model processes the whole prompt too, not just the tokens
    # after the prefix the request before it left in its cache.
    body = json.dumps({"model": name, "stream": True, "max_tokens": MAX_TOKENS,
                       "temperature": 0, "cache_prompt": False,
                       "messages": [{"role": "user", "content": "Hello"}]})
    conn = http.client.HTTPConnection("127.0.0.1", dev.http_port, timeout=TIMEOUT)
    first = None
    try:
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body,
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{name}: HTTP {resp.status}: {resp.read()[:500]!r}")
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
            if first is None and delta.get("content"):
                first = time.perf_counter() - t0
    finally:
        conn.close()
    if first is None:
        raise RuntimeError(f"{name}: the stream carried no text")
    return first


def _asked(dev: lab.Device, name: str, expect: str) -> float:
    state = _state(dev, name)
    if state != expect:
        raise RuntimeError(f"{name} is {state!r} before a request meant to find it {expect!r}")
    return _first_token(dev, name)


def bench(L: Lab) -> Result:
    (dev,) = L.devices(1)
    folder = WORK / "ondemand"
    inv = inventory(folder, [dev])
    files = {"small": model("ondemand-small", **SMALL), "big": model("ondemand-big", **BIG)}
    sizes = {n: p.stat().st_size for n, (p, _) in files.items()}
    knobs(folder, models=[{"name": n, "path": str(p), "sha256": sha}
                          for n, (p, sha) in files.items()], models_max=1)
    log("deploying the two models (router mode, models_max = 1)")
    deploy(inv).ok()
    L.converged.discard(dev.name)  # it serves this set now, not the base model
    for name in ("small", "big", "small", "big"):  # warm: page cache, first-request setup
        _first_token(dev, name)
    got: dict[str, dict[str, list[float]]] = {n: {"cold": [], "warm": []} for n in files}
    for r in range(rounds(15)):
        for name in ("small", "big"):  # big was the last one asked: small starts unloaded
            got[name]["cold"].append(_asked(dev, name, "unloaded"))
            got[name]["warm"].append(_asked(dev, name, "loaded"))
        log(f"round {r + 1}: " + ", ".join(
            f"{n} {got[n]['cold'][-1] * 1000:.0f}/{got[n]['warm'][-1] * 1000:.0f} ms"
            for n in files))
    rows = []
    for name in ("big", "small"):
        cold, warm = got[name]["cold"], got[name]["warm"]
        added = med([c - w for c, w in zip(cold, warm, strict=True)])
        rows.append(Row(f"first token, {name} model ({sizes[name] / 2**20:.1f} MiB) not loaded",
                        f"{med(cold) * 1000:.0f} ms (loading adds {added * 1000:.0f} ms)",
                        f"the same model loaded {med(warm) * 1000:.0f} ms",
                        ratio_rounds(cold, warm), "report (the cost of loading on demand)",
                        None))
    ms = lambda xs: ", ".join(f"{x * 1000:.0f}" for x in xs)  # noqa: E731
    details = (
        f"Two generated F32 models on one device with the `models` knob and `models_max = 1`: "
        f"small ({sizes['small']:,} bytes) and big ({sizes['big']:,} bytes). Time to the first "
        f"streamed token of a chat completion (max_tokens {MAX_TOKENS}, temperature 0, "
        "cache_prompt off so that both process the whole prompt), from "
        "the controller through the device's published port. Not loaded: the other model was "
        "the last one used, so the router stops its child process and starts one for this "
        "model (the file is in the page cache after the warm-up); loaded: the same model "
        "asked again right after. /models is checked before every request. "
        f"{len(got['big']['cold'])} rounds, each small then big; ms per round: "
        f"big not loaded {ms(got['big']['cold'])}; big loaded {ms(got['big']['warm'])}; small "
        f"not loaded {ms(got['small']['cold'])}; small loaded {ms(got['small']['warm'])}. "
        "Ratio = median over rounds of not loaded / loaded (each round's two requests for a "
        "model ran back to back, so they see the same load on these shared cores); loading "
        "adds = median over rounds of their difference.")
    return Result("ondemand", rows, details,
                  extra={n: med(got[n]["cold"]) for n in files})
