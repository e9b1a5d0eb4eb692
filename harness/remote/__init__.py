"""Remote policies: evaluate a policy served over openpi's or vla-eval's websocket protocol
(`--policy remote`), and serve any registered policy over either protocol (`lamp-bench serve`).

Modules: `codec` (msgpack encodings of both protocols), `mapping` (suite observations <-> protocol
requests, replies -> lamp-bench's 7-D actions), `openpi` / `vla_eval` (client and server side of each
protocol), `batching` (one forward pass for concurrent clients), `cameras` (camera geometry for servers),
`server` (`lamp-bench serve`), `client_policy` (the registered `remote` policy)."""
from lamp_bench.harness.remote.errors import (RemoteConnectionError, RemoteError, RemoteProtocolError,
                                              RemoteServerError, RemoteTimeoutError)

__all__ = ["RemoteError", "RemoteProtocolError", "RemoteServerError", "RemoteConnectionError", "RemoteTimeoutError"]
