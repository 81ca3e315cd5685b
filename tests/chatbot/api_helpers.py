"""The API on a real uvicorn server on a loopback port, for tests that need real HTTP (disconnects, floods)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from chatbot.api import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(service) -> Iterator[int]:
    """Our API on a free loopback port, in a thread, for as long as the block runs; yields the port."""
    port = free_port()
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def ask(text: str, **extra) -> dict:
    return {"model": "assistant", "messages": [{"role": "user", "content": text}], **extra}
