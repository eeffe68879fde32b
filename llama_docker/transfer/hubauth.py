"""A Hugging Face token for gated models (Llama, Gemma...): sent to the hub and to nothing else.

Found where huggingface_hub looks: HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), else the
file `huggingface-cli login` writes ($HF_TOKEN_PATH, $HF_HOME/token, or
~/.cache/huggingface/token). The hub answers a download with a redirect to its CDN, which
gets no token: requests drops the header when the host changes, and the token is only ever
added for the hub's own host.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase


def token() -> str | None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name, "").strip():
            return os.environ[name].strip()
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    path = Path(os.environ.get("HF_TOKEN_PATH", home / "token")).expanduser()
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def hub_host() -> str:
    """host[:port] of the hub, or of the mirror HF_ENDPOINT names."""
    return urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).netloc


class HubToken(AuthBase):
    """`Authorization: Bearer` on requests to the hub's host only."""

    def __init__(self, secret: str, host: str) -> None:
        self.secret, self.host = secret, host

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        if urlsplit(r.url or "").netloc == self.host:
            r.headers["Authorization"] = f"Bearer {self.secret}"
        return r

    def __repr__(self) -> str:
        return f"HubToken(host={self.host!r})"  # never the token itself


def session() -> requests.Session:
    """A requests session that carries the token to the hub, when there is one."""
    s = requests.Session()
    secret = token()
    if secret:
        s.auth = HubToken(secret, hub_host())
    return s
