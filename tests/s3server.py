"""A moto S3 server on a free port of 127.0.0.1 for the tests: real HTTP, no patched clients.

`S3Server.start()` runs it in a thread; `stop()` shuts it down and drops cached s3fs clients.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any

KEY = "testing-key"
SECRET = "testing-secret"
REGION = "us-east-1"

_buckets = itertools.count()


class S3Server:
    """A running moto S3 server and how to reach it."""

    def __init__(self, server: Any, endpoint: str) -> None:
        self._server = server
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<S3Server {self.endpoint}>"

    @classmethod
    def start(cls) -> S3Server:
        """Start a server on a free port and wait until it listens."""
        from moto.server import ThreadedMotoServer

        # The server logs every request; the tests need none of that on stderr.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        return cls(server, f"http://{host}:{port}")

    def stop(self) -> None:
        """Shut the server down, join its thread, and forget s3fs clients bound to it."""
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        self._server.stop()

    @property
    def thread(self) -> threading.Thread | None:
        """The thread serving requests (None once stopped)."""
        thread: threading.Thread | None = self._server._thread
        return thread

    @property
    def options(self) -> dict[str, Any]:
        """s3fs options reaching this server, as `Engine(storage_options={"s3": ...})` takes."""
        return {
            "endpoint_url": self.endpoint,
            "key": KEY,
            "secret": SECRET,
        }

    @property
    def env(self) -> dict[str, str]:
        """The environment variables that reach this server without any options."""
        return {
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": REGION,
        }

    def filesystem(self, **extra: Any) -> Any:
        """An s3fs filesystem on this server (a fresh instance, not a cached one)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.options, **extra)

    def new_bucket(self, prefix: str = "test") -> str:
        """Create an empty bucket with a name no other test uses; return the name."""
        name = f"{prefix}-{next(_buckets)}"
        self.filesystem().mkdir(name)
        return name
