"""Errors a user can cause: each prints as one line naming the host and the thing."""

from __future__ import annotations


class LlamaDockerError(Exception):
    """An expected failure: shown as one line, never as a traceback."""


class ConfigError(LlamaDockerError):
    """A knob holds a value that cannot work."""

    def __init__(self, knob: str, value: object, accepted: str, host: str = "") -> None:
        where = f"{host}: " if host else ""
        super().__init__(f"{where}knob {knob}={value!r} is invalid: expected {accepted}")
        self.knob, self.value, self.accepted = knob, value, accepted

    def on(self, host: str) -> ConfigError:
        """The same error, naming the host it was found on."""
        return ConfigError(self.knob, self.value, self.accepted, host) if host else self


class RefusedError(LlamaDockerError):
    """Preflight refused a host before any byte moved."""


class VerifyError(LlamaDockerError):
    """A file's sha256 is not the one it must have."""


class FetchError(LlamaDockerError):
    """A download failed in a way retrying will not fix (or retries ran out)."""
