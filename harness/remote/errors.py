"""Typed failures of a remote policy; the runner records them per episode with their message."""
from __future__ import annotations


class RemoteError(RuntimeError):
    """Any failure talking to a policy server."""


class RemoteProtocolError(RemoteError):
    """A frame that breaks the protocol: not msgpack, wrong envelope, wrong seq, wrong action shape, ..."""


class RemoteServerError(RemoteError):
    """The server answered with an error (openpi: a text frame + close 1011; vla-eval: an `error` message)."""


class RemoteConnectionError(RemoteError):
    """The connection was lost and could not be re-established within the configured retries."""


class RemoteTimeoutError(RemoteConnectionError):
    """No reply within the configured timeout (after the configured retries)."""
