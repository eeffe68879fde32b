"""An HTTP/1.1 file server that misbehaves on demand, to test downloads against real sockets.

In tests::

    with FaultServer({"/m.gguf": data}) as srv:
        srv.set(drop_after=1 << 20)          # the next response is cut after 1 MiB
        fetch(srv.url("/m.gguf"), ...)
        assert srv.bytes_sent <= ...

From a shell (stdlib only, so a bare python3 in a lab container runs it)::

    python3 -m tests.lab.fault_server --port 8000 --root DIR [--bind ADDR] [--drop-after N ...]

and over HTTP while it runs:
    GET  /_fault                      state and counters as JSON
    GET  /_fault?drop_after=1000&...  change faults (same names as Faults), then state
    POST /_fault  {"rate": 1e6}       change faults from a JSON object
    POST /_fault/reset                faults back to defaults, counters to zero
    POST /_fault/hub  {"path": ..., "sha256": ..., "size": ..., "location": ...}
    PUT  /_fault/files/<path>         serve the request body at /<path> (new content, new ETag)

Hugging Face style: a path registered with hub() answers HEAD with 302, `X-Linked-Etag` and
`X-Linked-Size`, and GET with 302 to its Location (default /_cdn/<path>, which serves <path>).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

CHUNK = 1 << 20
CONTROL = "/_fault"
CDN = "/_cdn"
MAX_UPLOAD = 8 << 30  # PUT bodies are held in memory: refuse absurd ones


@dataclass
class Faults:
    """What the server does wrong. Counts (`*_times`) go down as faults fire; -1 means always."""

    ranges: bool = True             # honour Range with 206 (False: always 200 and the whole body)
    if_range: bool = True           # honour If-Range (False: resume even when the file changed)
    etag: bool = True               # send ETag
    last_modified: bool = True      # send Last-Modified
    drop_after: int | None = None   # close the connection after this many body bytes ...
    drop_times: int = 1             # ... on this many responses
    status: int | None = None       # answer this status instead of the file ...
    status_times: int = 1           # ... for this many requests
    rate: float | None = None       # body bytes per second, per response
    stall_after: int | None = None  # stop sending after this many body bytes ...
    stall_seconds: float = 0.0      # ... for this long ...
    stall_times: int = 1            # ... on this many responses


@dataclass
class Hub:
    """The answer a Hugging Face resolve URL gives to HEAD."""

    sha256: str | None = None       # X-Linked-Etag: "<sha256>" (None: header absent)
    size: int | None = None         # X-Linked-Size
    location: str | None = None     # default: /_cdn<path>
    linked_etag: str | None = None  # the raw header value, to test odd spellings (W/"...")


@dataclass
class PathStats:
    requests: int = 0
    get: int = 0
    head: int = 0
    bytes: int = 0
    statuses: list[int] = field(default_factory=list)


class _Blob:
    """One servable file: in memory, or on disk and read per response."""

    def __init__(self, data: bytes | None = None, path: Path | None = None,
                 etag: str = "", mtime: float = 0.0) -> None:
        self.data = memoryview(data) if data is not None else None
        self.path = path
        self.size = len(data) if data is not None else Path(path or "").stat().st_size
        self.etag = etag
        self.last_modified = formatdate(mtime, usegmt=True)

    def read(self, offset: int, n: int, fh: object) -> bytes | memoryview:
        if self.data is not None:
            return self.data[offset:offset + n]
        fh.seek(offset)  # type: ignore[attr-defined]
        return fh.read(n)  # type: ignore[attr-defined]

    def opener(self) -> contextlib.AbstractContextManager:
        return open(self.path, "rb") if self.path is not None else contextlib.nullcontext()

    def matches(self, validator: str) -> bool:
        """If-Range: a strong ETag compared exactly, or a date equal to Last-Modified."""
        v = validator.strip()
        if v.startswith(("W/", '"')):
            return not v.startswith("W/") and v == self.etag
        try:
            return parsedate_to_datetime(v) == parsedate_to_datetime(self.last_modified)
        except (TypeError, ValueError):
            return False


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, end inclusive), "unsatisfiable", or None for a header to ignore (multi-range...)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size else "unsatisfiable"
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    return (start, min(end, size - 1)) if end >= start else None


class FaultServer:
    """A threaded HTTP/1.1 server of files from a dict {path: bytes} and/or a directory."""

    def __init__(self, files: dict[str, bytes] | None = None, *, root: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None,
                 auto_hub: bool = False, verbose: bool = False) -> None:
        self.root = root.resolve() if root is not None else None
        self.host, self._port = host, port
        self.faults = faults or Faults()
        self.auto_hub = auto_hub  # every file of root answers HEAD the Hugging Face way
        self.verbose = verbose
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self._mem: dict[str, _Blob] = {}
        self._hubs: dict[str, Hub] = {}
        self._sha_cache: dict[tuple[str, int, str], str] = {}
        self._generation = 0
        self._epoch = int(time.time()) - 86400
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        self.reset_counters()
        for path, data in (files or {}).items():
            self.put(path, data)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> FaultServer:
        self.stop_event.clear()
        self._httpd = _Server((self.host, self._port), self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, cut open connections (stalled ones too) and wait, at most `timeout`."""
        if self._httpd is None:
            return
        self.stop_event.set()
        self._httpd.shutdown()
        with self.lock:
            conns, workers = list(self._conns), list(self._workers)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for t in [*workers, self._thread]:
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        self._httpd.server_close()
        self._httpd = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on; once stopped, the port it was given (a test that stops
        the server to play "no internet" still names the address a client would try)."""
        if self._httpd is None:
            assert self._port, "not started"
            return self._port
        return self._httpd.server_address[1]

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    # -- content and faults ----------------------------------------------------------------

    def put(self, path: str, data: bytes) -> None:
        """Serve `data` at `path`; replacing content gives a new ETag and a later Last-Modified."""
        with self.lock:
            self._generation += 1
            etag = f'"{hashlib.sha256(data).hexdigest()[:24]}"'
            self._mem[path] = _Blob(data=data, etag=etag, mtime=self._epoch + self._generation)

    def hub(self, path: str, *, sha256: str | None = None, size: int | None = None,
            location: str | None = None, linked_etag: str | None = None) -> None:
        with self.lock:
            self._hubs[path] = Hub(sha256, size, location, linked_etag)

    def set(self, **changes: object) -> None:
        """Change faults between requests; setting a fault re-arms its count to 1 unless given."""
        names = {f.name for f in fields(Faults)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {sorted(names)}")
        with self.lock:
            for key, times in (("drop_after", "drop_times"), ("status", "status_times"),
                               ("stall_after", "stall_times")):
                if key in changes and times not in changes:
                    changes[times] = 1
            for key, value in changes.items():
                setattr(self.faults, key, value)

    def reset(self) -> None:
        with self.lock:
            self.faults = Faults()
        self.reset_counters()

    def reset_counters(self) -> None:
        with self.lock:
            self.requests = 0
            self.bytes_sent = 0
            self.paths: dict[str, PathStats] = {}
            self.log: deque[dict] = deque(maxlen=1000)

    def stats(self, path: str) -> PathStats:
        with self.lock:
            s = self.paths.get(path, PathStats())
            return PathStats(s.requests, s.get, s.head, s.bytes, list(s.statuses))

    def state(self) -> dict:
        with self.lock:
            return {"faults": asdict(self.faults), "requests": self.requests,
                    "bytes_sent": self.bytes_sent,
                    "paths": {p: asdict(s) for p, s in self.paths.items()},
                    "hubs": {p: asdict(h) for p, h in self._hubs.items()}}

    # -- used by the handler ---------------------------------------------------------------

    def _take(self, name: str) -> bool:
        """Consume one firing of a counted fault (caller holds the lock)."""
        left = getattr(self.faults, name)
        if left == 0:
            return False
        if left > 0:
            setattr(self.faults, name, left - 1)
        return True

    def _lookup(self, path: str) -> _Blob | None:
        with self.lock:
            blob = self._mem.get(path)
        if blob is not None or self.root is None:
            return blob
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        st = target.stat()
        return _Blob(path=target, etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"', mtime=st.st_mtime)

    def _hub_for(self, path: str) -> Hub | None:
        with self.lock:
            hub = self._hubs.get(path)
        if hub is not None or not self.auto_hub:
            return hub
        blob = self._lookup(path)
        if blob is None:
            return None
        return Hub(sha256=self._sha(path, blob), size=blob.size)

    def _sha(self, path: str, blob: _Blob) -> str:
        key = (path, blob.size, blob.etag)
        with self.lock:
            if key in self._sha_cache:
                return self._sha_cache[key]
        h = hashlib.sha256()
        with blob.opener() as fh:
            for offset in range(0, blob.size, CHUNK):
                h.update(blob.read(offset, CHUNK, fh))
        with self.lock:
            self._sha_cache[key] = h.hexdigest()
        return h.hexdigest()

    def _count(self, path: str, method: str) -> None:
        with self.lock:
            self.requests += 1
            s = self.paths.setdefault(path, PathStats())
            s.requests += 1
            if method == "GET":
                s.get += 1
            elif method == "HEAD":
                s.head += 1

    def _sent(self, path: str, n: int) -> None:
        with self.lock:
            self.bytes_sent += n
            self.paths.setdefault(path, PathStats()).bytes += n


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FaultServer.stop joins its workers itself, with a deadline
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: FaultServer) -> None:
        self.state = state
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60  # a client that neither reads nor closes cannot hold a thread forever

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state._conns.add(self.connection)
            self.server.state._workers.add(threading.current_thread())

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.state.lock:
            self.server.state._conns.discard(self.connection)
            self.server.state._workers.discard(threading.current_thread())

    def log_message(self, format: str, *args: object) -> None:
        if self.server.state.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_POST(self) -> None:
        self._control()

    def do_PUT(self) -> None:
        self._control()

    # -- responses -------------------------------------------------------------------------

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _record(self, path: str, status: int, sent: int = 0) -> None:
        st = self.server.state
        with st.lock:
            st.paths.setdefault(path, PathStats()).statuses.append(status)
            st.log.append({"method": self.command, "path": path, "status": status, "sent": sent,
                           "range": self.headers.get("Range"),
                           "if_range": self.headers.get("If-Range"),
                           "authorization": self.headers.get("Authorization")})

    def _serve(self, head: bool) -> None:
        st = self.server.state
        path = unquote(urlsplit(self.path).path)
        if path == CONTROL or path.startswith(CONTROL + "/"):
            self._control()
            return
        st._count(path, self.command)
        with st.lock:
            forced = st.faults.status if st.faults.status and st._take("status_times") else None
        if forced:
            self._record(path, forced)
            body = f"{forced} {HTTPStatus(forced).phrase} (fault)\n".encode()
            self._reply(forced, {"Content-Type": "text/plain"}, body)
            return
        hub = None if path.startswith(CDN + "/") else st._hub_for(path)
        if hub is not None:
            self._hub_reply(path, hub, head)
            return
        blob = st._lookup(path[len(CDN):] if path.startswith(CDN + "/") else path)
        if blob is None:
            self._record(path, 404)
            self._reply(404, {"Content-Type": "text/plain"}, b"404 Not Found\n")
            return
        self._file_reply(path, blob, head)

    def _hub_reply(self, path: str, hub: Hub, head: bool) -> None:
        headers = {"Location": hub.location or CDN + path}
        if head:
            if hub.linked_etag is not None:
                headers["X-Linked-Etag"] = hub.linked_etag
            elif hub.sha256 is not None:
                headers["X-Linked-Etag"] = f'"{hub.sha256}"'
            if hub.size is not None:
                headers["X-Linked-Size"] = str(hub.size)
        self._record(path, 302)
        self._reply(302, headers)

    def _file_reply(self, path: str, blob: _Blob, head: bool) -> None:
        st = self.server.state
        with st.lock:
            f = Faults(**asdict(st.faults))
        status, start, end = 200, 0, blob.size - 1
        headers = {"Content-Type": "application/octet-stream"}
        if f.etag:
            headers["ETag"] = blob.etag
        if f.last_modified:
            headers["Last-Modified"] = blob.last_modified
        if f.ranges:
            headers["Accept-Ranges"] = "bytes"
        rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        if rng and f.ranges and (if_range is None or not f.if_range or blob.matches(if_range)):
            parsed = _parse_range(rng, blob.size)
            if parsed == "unsatisfiable":
                self._record(path, 416)
                self._reply(416, {**headers, "Content-Range": f"bytes */{blob.size}"})
                return
            if isinstance(parsed, tuple):
                status, (start, end) = 206, parsed
                headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
        length = end - start + 1
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            self._record(path, status)
            return
        sent = self._body(path, blob, start, length, f)
        self._record(path, status, sent)

    def _body(self, path: str, blob: _Blob, start: int, length: int, f: Faults) -> int:
        """Send the body, applying drop, stall and rate; returns body bytes sent."""
        st = self.server.state
        step = CHUNK if not f.rate else max(1024, min(CHUNK, int(f.rate / 20)))
        began, sent = time.monotonic(), 0
        stall_at = f.stall_after if f.stall_after is not None and f.stall_times else None
        drop_at = f.drop_after if f.drop_after is not None and f.drop_times else None
        with blob.opener() as fh:
            while sent < length and not st.stop_event.is_set():
                if stall_at is not None and sent >= stall_at:
                    with st.lock:
                        fire = st._take("stall_times")
                    stall_at = None
                    if fire:
                        st.stop_event.wait(f.stall_seconds)
                        began = time.monotonic() - (sent / f.rate if f.rate else 0)
                        continue
                if drop_at is not None and sent >= drop_at:
                    with st.lock:
                        fire = st._take("drop_times")
                    drop_at = None
                    if fire:
                        break
                n = min(step, length - sent)
                for limit in (stall_at, drop_at):
                    if limit is not None and limit > sent:
                        n = min(n, limit - sent)
                try:
                    self.wfile.write(blob.read(start + sent, n, fh))
                except OSError:  # the client went away: that is its business
                    break
                sent += n
                st._sent(path, n)
                if f.rate:
                    ahead = began + sent / f.rate - time.monotonic()
                    if ahead > 0:
                        st.stop_event.wait(ahead)
        if sent < length:
            self.close_connection = True  # the client sees EOF before Content-Length
        return sent

    # -- control ---------------------------------------------------------------------------

    def _control(self) -> None:
        st = self.server.state
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        try:
            if self.command == "PUT" and path.startswith(CONTROL + "/files/"):
                st.put("/" + path[len(CONTROL + "/files/"):].lstrip("/"), self._read_body())
            elif self.command == "POST" and path == CONTROL + "/reset":
                self._read_body()
                st.reset()
            elif self.command == "POST" and path == CONTROL + "/hub":
                spec = json.loads(self._read_body() or b"{}")
                st.hub(spec.pop("path"), **spec)
            elif self.command == "POST" and path == CONTROL:
                st.set(**json.loads(self._read_body() or b"{}"))
            elif self.command in ("GET", "HEAD") and path == CONTROL:
                if parts.query:
                    st.set(**{k: _scalar(v) for k, v in parse_qsl(parts.query)})
            else:
                self._reply(404, {"Content-Type": "text/plain"}, b"unknown control request\n")
                return
        except (ValueError, TypeError, KeyError) as exc:
            self._reply(400, {"Content-Type": "text/plain"}, f"{exc}\n".encode())
            return
        body = json.dumps(st.state(), indent=1).encode() + b"\n"
        self._reply(200, {"Content-Type": "application/json"}, body)

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        if not 0 <= n <= MAX_UPLOAD:
            raise ValueError(f"Content-Length {n} is out of range")
        return self.rfile.read(n)


def _scalar(text: str) -> object:
    """A query-string value as JSON would have it: none/true/false, a number, else the text."""
    low = text.strip().lower()
    if low in ("none", "null", ""):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tests.lab.fault_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, required=True, help="directory of files to serve")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--hub", action="store_true",
                   help="HEAD on any file answers 302 with X-Linked-Etag/-Size (Hugging Face)")
    p.add_argument("--no-ranges", action="store_true", help="ignore Range: always 200")
    p.add_argument("--no-if-range", action="store_true", help="ignore If-Range")
    p.add_argument("--no-etag", action="store_true")
    p.add_argument("--no-last-modified", action="store_true")
    p.add_argument("--drop-after", type=int, metavar="BYTES")
    p.add_argument("--drop-times", type=int, default=1, metavar="N", help="-1: every response")
    p.add_argument("--status", type=int)
    p.add_argument("--status-times", type=int, default=1, metavar="K", help="-1: always")
    p.add_argument("--rate", type=float, metavar="BYTES_PER_S")
    p.add_argument("--stall-after", type=int, metavar="BYTES")
    p.add_argument("--stall-seconds", type=float, default=0.0)
    p.add_argument("--stall-times", type=int, default=1, metavar="N", help="-1: every response")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    a = p.parse_args(argv)
    if not a.root.is_dir():
        p.error(f"--root {a.root} is not a directory")
    faults = Faults(
        ranges=not a.no_ranges, if_range=not a.no_if_range, etag=not a.no_etag,
        last_modified=not a.no_last_modified, drop_after=a.drop_after, drop_times=a.drop_times,
        status=a.status, status_times=a.status_times, rate=a.rate, stall_after=a.stall_after,
        stall_seconds=a.stall_seconds, stall_times=a.stall_times)
    srv = FaultServer(root=a.root, host=a.bind, port=a.port, faults=faults, auto_hub=a.hub,
                      verbose=a.verbose).start()
    # As PID 1 in a container SIGTERM would be ignored: make it stop the server cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving {a.root} on {srv.url('/')} (control: {srv.url(CONTROL)})", file=sys.stderr,
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
