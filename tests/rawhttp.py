"""Raw-socket HTTP for the tests: send exactly the bytes a test wants (a body shorter than its
Content-Length, broken framing, a slow client) and see what the server does, within a timeout.

    with RawConnection("127.0.0.1", port) as conn:
        conn.send(request_bytes("POST", "/api/tasks", body=b"{}", content_length=100))
        reply = conn.receive(timeout=5)
    assert reply.closed and not reply.timed_out  # the server gave up on the missing bytes
"""

from __future__ import annotations

import socket
import time

import attrs

__all__ = ["RawConnection", "RawReply", "exchange", "request_bytes"]


def request_bytes(
    method: str,
    target: str,
    *,
    host: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_length: int | None = None,
    version: str = "HTTP/1.1",
) -> bytes:
    """The bytes of one request. ``Content-Length`` is *content_length* when given (so it may
    lie about the body), else the body's length when there is one; *headers* go last and may
    replace any of these."""
    fields = {"Host": host}
    if content_length is not None:
        fields["Content-Length"] = str(content_length)
    elif body:
        fields["Content-Length"] = str(len(body))
    fields.update(headers or {})
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (head + "\r\n").encode("latin-1") + body


@attrs.frozen
class RawReply:
    """What came back: every byte, whether the server closed the connection, whether the
    timeout ended the wait first, and how long the wait took (seconds)."""

    data: bytes
    closed: bool
    timed_out: bool
    elapsed: float

    @property
    def status(self) -> int | None:
        """The status code of the first response, or None when no status line came."""
        line = self.data.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
            return int(line[1])
        return None

    @property
    def headers(self) -> dict[str, str]:
        """The first response's header fields (names in lower case)."""
        head = self.data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        pairs = (line.decode("latin-1").split(":", 1) for line in head if b":" in line)
        return {name.strip().lower(): value.strip() for name, value in pairs}

    @property
    def body(self) -> bytes:
        """The first response's body: Content-Length bytes when it says, else the rest."""
        if b"\r\n\r\n" not in self.data:
            return b""
        rest = self.data.split(b"\r\n\r\n", 1)[1]
        length = self.headers.get("content-length")
        return rest[: int(length)] if length is not None and length.isdigit() else rest


class RawConnection:
    """A TCP connection to *host*:*port* that sends bytes as given and reads with timeouts."""

    def __init__(self, host: str, port: int, *, connect_timeout: float = 5.0) -> None:
        self.socket = socket.create_connection((host, port), timeout=connect_timeout)

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()

    def send(self, data: bytes) -> None:
        """Send *data* whole."""
        self.socket.sendall(data)

    def shutdown_write(self) -> None:
        """Say that nothing more will be sent (a half close), keeping the read side open."""
        self.socket.shutdown(socket.SHUT_WR)

    def receive(self, timeout: float = 5.0, *, until: bytes | None = None) -> RawReply:
        """Read until the server closes, *until* appears in what came, or *timeout* seconds
        pass, whichever is first. A reset connection counts as closed."""
        started = time.monotonic()
        deadline = started + timeout
        chunks: list[bytes] = []
        closed = timed_out = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            self.socket.settimeout(left)
            try:
                chunk = self.socket.recv(65536)
            except TimeoutError:
                timed_out = True
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
            if until is not None and until in b"".join(chunks):
                break
        return RawReply(b"".join(chunks), closed, timed_out, time.monotonic() - started)


def exchange(host: str, port: int, data: bytes, *, timeout: float = 5.0) -> RawReply:
    """Connect, send *data*, and read the reply until the server closes or *timeout* passes."""
    with RawConnection(host, port, connect_timeout=timeout) as connection:
        connection.send(data)
        return connection.receive(timeout)
