"""An HTTP fault proxy on 127.0.0.1 in front of moto's S3 server, for the tests: it forwards
every request, except those a `ProxyFault` picks, which get a 500/503 or a dropped connection.

Faults are switched while the proxy runs (`add`, `clear`); `requests` and `faults` count what
it saw and what it did, per method::

    proxy.add(ProxyFault(status=503, method="PUT"))  # an S3 PUT outage
    engine = Engine(repo, storage_options={"s3": proxy.options})
"""

from __future__ import annotations

import fnmatch
import http.client
import http.server
import random
import socket
import struct
import threading
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import attrs

from s3server import KEY, SECRET

__all__ = ["FaultProxy", "ProxyFault"]

# Headers that belong to one hop; the proxy speaks its own to each side.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "expect", "te", "trailer", "upgrade"}
    | {"proxy-connection", "proxy-authenticate", "proxy-authorization", "content-length"}
)

_CODES = {500: "InternalError", 503: "SlowDown"}


@attrs.define
class ProxyFault:
    """Which requests fail and how.

    A request matches when its method is ``method`` (any if None) and its path (with the
    query) matches the ``path`` glob; a matching request fails at ``rate`` (1.0: every one),
    at most ``limit`` times. It fails with the HTTP ``status`` (an S3 XML error body), or,
    with ``drop``, by closing the connection without a reply once the request has been read
    (``reset`` makes that close a TCP reset).
    """

    status: int = 503
    rate: float = 1.0
    method: str | None = None
    path: str | None = None
    limit: int | None = None
    drop: bool = False
    reset: bool = False
    fired: int = attrs.field(default=0, init=False)

    def _matches(self, method: str, path: str) -> bool:
        return (self.method is None or method == self.method.upper()) and (
            self.path is None or fnmatch.fnmatchcase(path, self.path)
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _relay(self) -> None:
        body = self._body()
        proxy = self.server.proxy
        fault = proxy._decide(self.command, self.path)
        if fault is not None and fault.drop:
            self.close_connection = True
            if fault.reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self.connection.close()
            return
        if fault is not None:
            self._reply(fault.status, _error_body(fault.status, self.path), "application/xml")
            return
        status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP:
                self.send_header(name, value)
        if self.command == "HEAD":  # the size of what a GET would give, as upstream said
            self.send_header("Content-Length", _header(headers, "Content-Length") or "0")
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _relay


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name.lower()), None)


def _error_body(status: int, path: str) -> bytes:
    code = _CODES.get(status, "InternalError")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>injected by the fault proxy</Message><Resource>{path}</Resource></Error>"
    ).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy


class FaultProxy:
    """A running proxy: ``endpoint`` is its URL; it forwards to *upstream* (moto's URL)."""

    def __init__(self, upstream: str, *, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = upstream
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[ProxyFault] = []
        self.requests: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.endpoint} -> {self.upstream}, {len(self.faults)} faults>"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and join the serving thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def add(self, *faults: ProxyFault) -> FaultProxy:
        """Start injecting *faults* (from the next request on); return the proxy."""
        with self._lock:
            self.faults.extend(faults)
        return self

    def clear(self) -> None:
        """Stop injecting faults (the counters stay)."""
        with self._lock:
            self.faults.clear()

    def reset(self, seed: int = 0) -> None:
        """No faults, zeroed counters, the RNG reseeded."""
        with self._lock:
            self.faults.clear()
            self.requests.clear()
            self.injected.clear()
            self._rng.seed(seed)

    @property
    def options(self) -> dict[str, Any]:
        """s3fs options that reach moto through the proxy."""
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET}

    def filesystem(self, **extra: Any) -> Any:
        """A fresh s3fs filesystem (no instance cache) that goes through the proxy."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options, **extra)

    def _decide(self, method: str, path: str) -> ProxyFault | None:
        with self._lock:
            self.requests[method] += 1
            for fault in self.faults:
                if not fault._matches(method, path):
                    continue
                if fault.limit is not None and fault.fired >= fault.limit:
                    continue
                if fault.rate >= 1.0 or self._rng.random() < fault.rate:
                    fault.fired += 1
                    self.injected[method] += 1
                    return fault
        return None

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP}
        for attempt in (1, 2):
            connection = getattr(self._local, "connection", None)
            if connection is None:
                connection = http.client.HTTPConnection(*self._upstream, timeout=60)
                self._local.connection = connection
            try:
                connection.request(method, path, body=body, headers=forwarded)
                response = connection.getresponse()
                return response.status, response.getheaders(), response.read()
            except (http.client.HTTPException, OSError):
                # A kept-alive upstream connection that the server closed: open a new one.
                connection.close()
                self._local.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
