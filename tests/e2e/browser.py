"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`):
open a page, run script in it, see every request it makes. Standard library only, so the lab
tests that type into a page need no npm or websocket package.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, ("chromium is not installed: apt-get install -y chromium "
                   "(tests/lab/setup-host.sh installs it)")
    return found


class Browser:
    """One Chromium with a fresh profile and one page; `requests` lists every URL it asked,
    `dialogs` the text of every alert it showed (each dismissed, or the page would hang)."""

    def __init__(self, timeout: float = 60) -> None:
        self.timeout = timeout
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-",
                                                    ignore_cleanup_errors=True)
        to_chrome, self._to = os.pipe()   # Chromium reads commands on its fd 3
        self._from, from_chrome = os.pipe()  # and writes answers on its fd 4
        high = [os.dup(fd) for fd in (to_chrome, from_chrome)]  # clear of 3 and 4

        def fds() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self._proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            pass_fds=(3, 4, *high), preexec_fn=fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)  # its helpers end with it
        for fd in (to_chrome, from_chrome, *high):
            os.close(fd)
        self._buf = b""
        self._id = 0
        self._events: list[dict] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self._session = self._call("Target.attachToTarget",
                                   {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable")

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(10)
        os.close(self._to)
        os.close(self._from)
        self._profile.cleanup()

    def _send(self, message: dict) -> None:
        os.write(self._to, json.dumps(message).encode() + b"\0")

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium exited")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        message = json.loads(raw)
        if message.get("method") == "Network.requestWillBeSent":
            self.requests.append(message["params"]["request"]["url"])
        elif message.get("method") == "Page.javascriptDialogOpening":
            self.dialogs.append(message["params"].get("message", ""))
            self._id += 1
            self._send({"id": self._id, "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": True}, "sessionId": message.get("sessionId")})
        return message

    def _call(self, method: str, params: dict | None = None, session: str | None = None
              ) -> dict:
        self._id += 1
        mine = self._id  # a dialog dismissed while waiting takes the next id
        message: dict[str, Any] = {"id": mine, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + self.timeout
        while True:
            got = self._read(deadline)
            if got.get("id") == mine:
                if "error" in got:
                    raise RuntimeError(f"{method}: {got['error']}")
                return got.get("result", {})
            self._events.append(got)

    def call(self, method: str, params: dict | None = None) -> dict:
        """A command to the page."""
        return self._call(method, params, self._session)

    def js(self, expression: str) -> Any:
        """The value of a script run in the page (awaited when it is a promise)."""
        got = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True})
        if "exceptionDetails" in got:
            raise RuntimeError(f"{expression}: {got['exceptionDetails']}")
        return got["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete'")

    def wait(self, expression: str, seconds: float = 30) -> Any:
        """Poll a script until it is truthy (bounded); its last value."""
        deadline = time.monotonic() + seconds
        while True:
            value = self.js(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.2)
