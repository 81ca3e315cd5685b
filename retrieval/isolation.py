"""Parsing files in a child process, one at a time, each under a deadline and a memory limit.

A parser can be made to run for minutes or eat gigabytes by a crafted file (100,000 nested ``<div>``s, a
DOCX of 190 MB of XML), and a thread cannot be stopped. So a sync hands each file's bytes to a child process
(``python -m retrieval.isolation``) and waits at most ``retrieval.load_timeout`` seconds for its documents;
past that the child is killed, the file is reported as failed and the next file gets a fresh child. The child
limits its own address space to ``retrieval.loader_memory_mb``, so a file that needs more fails there, alone.

Protocol (no pickle): the parent writes the settings as one JSON line, then per file a JSON header line
``{"source", "size"}`` and the raw bytes; the child answers each with one JSON line, the documents or the
error. The child's standard output is the protocol channel only: whatever a parser prints goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import retrieval
from retrieval.config import RetrievalSettings
from retrieval.errors import LoadError, ParserFailure
from retrieval.loaders import Document, Loaded, Section, load_bytes

STARTUP_TIMEOUT = 120.0  # seconds; a Python start-up, however loaded the machine


class ParserProcess:
    """``load(data, source)`` in a child process; start it lazily, close it with ``close()`` (or ``with``)."""

    def __init__(self, settings: RetrievalSettings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ParserProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[bytes]:
        # The child imports this very copy of the package, wherever it was imported from.
        root = str(Path(retrieval.__file__).resolve().parents[1])
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "retrieval.isolation"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self.settings.model_dump_json().encode() + b"\n")
        proc.stdin.flush()
        self._proc = proc
        try:  # its start-up (~0.1 s, far more on a busy machine) is not counted as any file's time
            ready = _read_line(proc.stdout.fileno(), time.monotonic() + STARTUP_TIMEOUT)
        except TimeoutError:
            ready = b""
        if ready != b"ready\n":
            self.close(kill=True)
            raise ParserFailure("the parser process did not start")
        return proc

    def load(self, data: bytes, source: str) -> Loaded:
        """The documents of ``data`` (the content of ``source``); LoadError for a file that cannot be indexed,
        takes longer than ``load_timeout`` or needs more than ``loader_memory_mb``."""
        proc = self._proc or self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"source": source, "size": len(data)}).encode() + b"\n")
            proc.stdin.write(data)
            proc.stdin.flush()
            line = _read_line(proc.stdout.fileno(), time.monotonic() + self.settings.load_timeout)
        except TimeoutError:
            self.close(kill=True)
            raise ParserFailure(
                f"took longer than {self.settings.load_timeout:g} s to parse (retrieval.load_timeout): stopped"
            ) from None
        except OSError:  # BrokenPipeError: the child died while taking the file
            line = b""
        if not line:
            code = self.close(kill=True)
            raise ParserFailure(f"the parser process died ({_describe_exit(code)}): the file needs more memory than "
                            f"retrieval.loader_memory_mb={self.settings.loader_memory_mb} or crashes the parser")  # fmt: skip
        reply = json.loads(line)
        if not reply["ok"]:
            raise LoadError(reply["error"])
        return _decode(reply)

    def close(self, kill: bool = False) -> int | None:
        """Stop the child (at once with ``kill``); returns its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if kill:
            proc.kill()
        else:
            assert proc.stdin is not None
            proc.stdin.close()  # end of input: the child exits
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):  # a dead child's pipe: the unflushed input is dropped
                    stream.close()
        return code


def _read_line(fd: int, deadline: float) -> bytes:
    """One line from ``fd``, or b'' at end of file; TimeoutError past ``deadline``."""
    chunks: list[bytes] = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TimeoutError
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b""
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                return b"".join(chunks)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def _encode(loaded: Loaded) -> dict[str, Any]:
    documents = [
        {"source": d.source, "text": d.text, "title": d.title,
         "sections": [[s.start, s.end, s.title, s.page] for s in d.sections]}
        for d in loaded.documents
    ]  # fmt: skip
    return {"ok": True, "documents": documents, "failures": loaded.failures}


def _decode(reply: dict[str, Any]) -> Loaded:
    documents = [
        Document(
            _valid(d["source"]),
            _valid(d["text"]),
            [Section(s[0], s[1], _valid(s[2]), *s[3:]) for s in d["sections"]],
            _valid(d["title"]),
        )
        for d in reply["documents"]
    ]
    return Loaded(documents, {_valid(k): _valid(v) for k, v in reply["failures"].items()})


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid(text: str | None) -> Any:
    """``text`` with any lone surrogate (half of a UTF-16 pair, as a JSON escape like "\\ud83d" can give) as
    U+FFFD, one for one so that offsets hold: no tokenizer, database or page can take one."""
    return _SURROGATE.sub("\ufffd", text) if text else text


def main() -> None:
    """The child: answer one request after another until its input ends."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a parser that prints must not corrupt the protocol
    sys.stdout = sys.stderr
    source = sys.stdin.buffer
    settings = RetrievalSettings.model_validate_json(source.readline())
    limit = settings.loader_memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    channel.write(b"ready\n")
    channel.flush()
    while header := source.readline():
        request = json.loads(header)
        data = source.read(request["size"])
        try:
            reply = _encode(load_bytes(data, request["source"], settings))
        except LoadError as exc:
            reply = {"ok": False, "error": str(exc)}
        except MemoryError:
            reply = {"ok": False, "error": f"needs more memory than retrieval.loader_memory_mb="
                                           f"{settings.loader_memory_mb} to parse"}  # fmt: skip
        del data
        channel.write(json.dumps(reply).encode() + b"\n")  # ASCII: lone surrogates travel escaped
        channel.flush()


if __name__ == "__main__":
    main()
