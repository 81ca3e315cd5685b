"""The HTTP API under attack, against the real server (uvicorn on a loopback port, httpx as the client): keys,
conversations scoped to their owner, limits on what a request may send and how many may run, and a client that
disconnects mid-stream, which must free the model at once."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
from api_helpers import ask, serving
from typer.testing import CliRunner

from chatbot.api_guard import ExposureRefused, check_exposure
from chatbot.api_keys import ApiKeys
from chatbot.cli import app as cli
from chatbot.service import ChatService
from retrieval.collection import Collection

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
QUESTION = "How do I delete a collection?"


@pytest.fixture
def service(settings, long_llm_dir):
    """The real local backend on the tiny model that can generate for a long time (~8 s for 3,000 tokens)."""
    settings = settings.model_copy(
        update={
            "models": settings.models.model_copy(update={"generator": str(long_llm_dir)}),
            # always ask the model
            "chat": settings.chat.model_copy(update={"min_relevance": -1.0, "min_word_coverage": 0.0}),
        }
    )
    Collection.open(settings, "sample").sync(SAMPLE)
    svc = ChatService(settings)
    assert svc.llm is not None  # loaded once, before any timing
    return svc


def _cli(settings, *args: str):
    result = CliRunner().invoke(cli, list(args), env={"APP_DATA_DIR": str(settings.data_dir)})
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_network_address_needs_a_key_first(settings):
    keys = ApiKeys.of(settings.data_dir)
    result = _cli(settings, "serve-api", "--host", "0.0.0.0", "--port", "1")
    assert result.exit_code == 2 and "without authentication" in result.stderr
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "example.org"):
        with pytest.raises(ExposureRefused):
            check_exposure(host, keys)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_exposure(host, keys)  # this machine only: allowed
    keys.create("ops")
    check_exposure("0.0.0.0", keys)


def test_keys_are_created_stored_hashed_and_revoked(service):
    settings = service.settings
    created = _cli(settings, "api-keys", "create", "alice")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("da-") and len(token) > 40
    store = settings.data_dir / "api_keys.sqlite"
    assert token.encode() not in store.read_bytes()  # only its hash is kept
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    for bad in ("bob smith", "bob\n", ""):  # a newline would break the owner out of its log line and listing
        with pytest.raises(ValueError, match="invalid owner"):
            ApiKeys.of(settings.data_dir).create(bad)
    listed = _cli(settings, "api-keys", "list").stdout
    assert "alice" in listed and token not in listed
    key_id = listed.split()[0]

    with serving(service) as port:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health").status_code == 200  # no key needed, no data in it
        for headers in ({}, bearer("da-wrong"), {"Authorization": f"Basic {token}"}):
            r = httpx.get(f"{url}/v1/conversations", headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        r = httpx.post(f"{url}/v1/chat/completions", json=ask(QUESTION, max_tokens=4), timeout=60)
        assert r.status_code == 401
        assert httpx.get(f"{url}/v1/conversations", headers=bearer(token)).status_code == 200
        assert _cli(settings, "api-keys", "revoke", key_id).exit_code == 0
        assert httpx.get(f"{url}/v1/conversations", headers=bearer(token)).status_code == 401


def test_without_keys_only_this_machine_is_served(service):
    with serving(service) as port:
        url = f"http://127.0.0.1:{port}/v1/conversations"
        assert httpx.get(url).status_code == 200
        # A request relayed by a reverse proxy comes from elsewhere, whatever its socket says.
        relayed = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.9"})
        assert relayed.status_code == 401 and "api-keys create" in relayed.json()["error"]["message"]
        # A web page that pointed its own domain at 127.0.0.1 (DNS rebinding) still names that domain.
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example"):
            assert httpx.get(url, headers={"Host": host}).status_code == 401, host
        for host in (f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
            assert httpx.get(url, headers={"Host": host}).status_code == 200, host
        # no interactive docs or schema: they would answer without a key
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(f"http://127.0.0.1:{port}{path}").status_code == 404, path


def test_conversations_belong_to_the_keys_owner(service):
    keys = ApiKeys.of(service.settings.data_dir)
    alice, bob = bearer(keys.create("alice")[1]), bearer(keys.create("bob")[1])
    browser = service.answer(QUESTION, owner="browser:0123456789abcdef")  # someone using the app
    with serving(service) as port:
        url = f"http://127.0.0.1:{port}/v1"
        r = httpx.post(f"{url}/chat/completions", json=ask(QUESTION, store=True, max_tokens=4), headers=alice)
        conv = r.json()["conversation_id"]
        assert r.status_code == 200 and conv
        assert [
            c["id"] for c in httpx.get(f"{url}/conversations", headers=alice).json()["conversations"]
        ] == [conv]
        assert httpx.get(f"{url}/conversations", headers=bob).json()["conversations"] == []
        for other in (conv, browser.conversation_id):
            assert httpx.get(f"{url}/conversations/{other}", headers=bob).status_code == 404
            r = httpx.patch(f"{url}/conversations/{other}", json={"title": "mine"}, headers=bob)
            assert r.status_code == 404
            assert httpx.delete(f"{url}/conversations/{other}", headers=bob).status_code == 404
            r = httpx.post(f"{url}/chat/completions", json=ask("and?", conversation_id=other), headers=bob)
            assert r.status_code == 404
        assert httpx.get(f"{url}/conversations/{conv}", headers=alice).json()["title"] == QUESTION
    assert service.conversations.get(browser.conversation_id).title == QUESTION


def test_oversized_requests_are_refused_before_any_work(service):
    with serving(service) as port:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        started = time.perf_counter()
        r = httpx.post(url, json=ask("why " * 1_300_000), timeout=60)  # a 5 MB question
        assert r.status_code == 413 and "api.max_request_bytes" in r.json()["error"]["message"]

        def chunks():  # no Content-Length: refused once the bytes received pass the limit
            yield b'{"messages": [{"role": "user", "content": "'
            for _ in range(600):
                yield b"x" * 10_000
            yield b'"}]}'

        r = httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 413
        r = httpx.post(
            url, json=ask("why " * 2000), timeout=60
        )  # 8 kB: under the body cap, over the question cap
        assert r.status_code == 400 and "chat.max_question_chars" in r.json()["error"]["message"]
        elapsed = time.perf_counter() - started
    print(f"\n[limits] three oversized requests refused in {elapsed:.2f} s")
    assert elapsed < 10


def test_a_client_that_disconnects_mid_stream_frees_the_model_at_once(service):
    llm = service.llm
    with serving(service) as port:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with httpx.Client(timeout=60) as client:
            long = ask(QUESTION, max_tokens=6000, stream=True)  # ~20 s of generation if nobody stops it
            with client.stream("POST", url, json=long) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                seen = [next(lines) for _ in range(6)]  # the model is generating now
                assert llm.busy() and any('"content"' in line for line in seen)
            disconnected = time.perf_counter()  # leaving the block closed the connection
        started = time.perf_counter()
        second = httpx.post(url, json=ask(QUESTION, max_tokens=4), timeout=60)
        answered = time.perf_counter() - started
        assert second.status_code == 200, second.text
    freed = _wait_idle(llm, disconnected)
    print(f"\n[disconnect] second request answered {answered:.2f} s after the first client left")
    # the old behaviour: ~20 s on idle cores, the rest of the abandoned generation, and more when other work
    # shares the 2 cores (where a stopped one has taken over 3 s): the bound tells the two apart under load
    assert answered < 10.0, answered
    assert freed < 10.0


def _wait_idle(llm, since: float) -> float:
    while llm.busy() and time.perf_counter() - since < 30:
        time.sleep(0.01)
    return time.perf_counter() - since


def test_a_flood_gets_429_while_health_stays_fast(service):
    limit = service.settings.api.max_concurrent
    with serving(service) as port:
        url = f"http://127.0.0.1:{port}"
        results: list[httpx.Response] = []
        long = threading.Thread(
            target=lambda: results.append(
                httpx.post(f"{url}/v1/chat/completions", json=ask(QUESTION, max_tokens=3000), timeout=120)
            )
        )
        long.start()
        _wait_busy(service.llm)  # one answer is generating: the others must wait or be refused

        def one() -> None:
            r = httpx.post(f"{url}/v1/chat/completions", json=ask(QUESTION, max_tokens=4), timeout=120)
            results.append(r)

        flood = [threading.Thread(target=one) for _ in range(30)]
        for t in flood:
            t.start()
        health = []
        for _ in range(5):
            started = time.perf_counter()
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            health.append(time.perf_counter() - started)
            time.sleep(0.1)
        for t in [*flood, long]:
            t.join(timeout=120)
    refused = [r for r in results if r.status_code == 429]
    served = [r for r in results if r.status_code == 200]
    print(
        f"\n[flood] 31 requests, {limit} slots: {len(served)} answered, {len(refused)} refused with 429; "
        f"/health took {', '.join(f'{h * 1000:.0f}' for h in health)} ms"
    )
    assert len(results) == 31 and len(served) + len(refused) == 31
    assert len(refused) >= 31 - limit and len(served) >= 1
    assert all(r.headers["retry-after"] == str(service.settings.api.retry_after) for r in refused)
    # 46 s before the limit; here client, server and model share 2 cores, and other work may share them too
    assert max(health) < 10.0


def test_one_key_cannot_hold_every_slot(service):
    """With one request per key allowed, a key whose answer is generating is turned away (429, saying why),
    while another key is still served."""
    service.settings.api.max_concurrent_per_key = 1
    keys = ApiKeys.of(service.settings.data_dir)
    _, greedy = keys.create("greedy")
    _, other = keys.create("other")
    with serving(service) as port:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        results: list[httpx.Response] = []
        long = threading.Thread(
            target=lambda: results.append(
                httpx.post(url, json=ask(QUESTION, max_tokens=3000), headers=bearer(greedy), timeout=120)
            )
        )
        long.start()
        _wait_busy(service.llm)
        again = httpx.post(url, json=ask(QUESTION, max_tokens=4), headers=bearer(greedy), timeout=120)
        served = httpx.post(url, json=ask(QUESTION, max_tokens=4), headers=bearer(other), timeout=120)
        long.join(timeout=120)
    assert again.status_code == 429 and "api.max_concurrent_per_key = 1" in again.json()["error"]["message"]
    assert again.headers["retry-after"] == str(service.settings.api.retry_after)
    assert served.status_code == 200 and results[0].status_code == 200


def _wait_busy(llm) -> None:
    deadline = time.perf_counter() + 30
    while not llm.busy() and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert llm.busy()
