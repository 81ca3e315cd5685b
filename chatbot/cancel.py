"""Stopping an answer whose reader went away (a closed browser tab, a dropped HTTP client, a timeout).

Closing a LangChain stream does not stop the model: LangChain drains the rest of a closed stream for its
tracing, so the model would generate to the end while holding its lock. So the caller of a chain sets a
``threading.Event`` in :data:`STOP` before the chain starts, and sets the event to stop: the chat backends
check it at every token. A context variable reaches the model through any chain, because LangChain runs every
step (in its thread pools too) in a copy of the caller's context.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

STOP: ContextVar[threading.Event | None] = ContextVar("chat_stop", default=None)
