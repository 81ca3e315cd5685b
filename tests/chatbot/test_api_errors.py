"""Every API error is ``{"error": {"message", "type"}}`` naming the culprit as the client sent it."""

from pathlib import Path

import pytest
from api_helpers import ask
from fastapi.testclient import TestClient
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from chatbot.api import create_app
from chatbot.api_keys import ApiKeys
from chatbot.service import ChatService
from retrieval.collection import Collection

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _client(settings) -> TestClient:
    service = ChatService(settings, llm=GenericFakeChatModel(messages=iter(["An answer [1]."] * 10)))
    _, token = ApiKeys.of(settings.data_dir).create("tester")
    return TestClient(create_app(service), headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def client(settings):
    Collection.open(settings, "sample").sync(SAMPLE)
    return _client(settings)


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type"}
    return error


def test_a_body_that_is_not_utf8_gets_the_api_error_format(client):
    r = client.post(
        "/v1/chat/completions",
        content='{"messages": [{"role": "user", "content": "caf\xe9"}]}'.encode("latin-1"),
        headers={"content-type": "application/json"},
    )
    error = _error(r, 400)
    assert "UTF-8" in error["message"] and "0xe9" in error["message"]


def test_an_unknown_path_and_method_get_the_api_error_format(client):
    assert _error(client.get("/v1/nothing"), 404)["type"] == "not_found"
    _error(client.get("/v1/chat/completions"), 405)


@pytest.mark.parametrize("name", ["../etc", "a/b", "has space", "x" * 65, ""])
def test_an_invalid_collection_name_is_refused_with_the_naming_rule(client, name):
    error = _error(client.post("/v1/chat/completions", json=ask("hi", collection=name)), 400)
    assert "invalid collection name" in error["message"] and "letters, digits" in error["message"]
    assert "chatbot index" not in error["message"]  # nothing to create: the name itself is wrong


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_bad_token_limit_is_reported_under_the_name_the_client_sent(client, field):
    error = _error(client.post("/v1/chat/completions", json=ask("hi", **{field: -1})), 400)
    assert error["message"].startswith(f"invalid generation parameters: {field} ")
    assert "-1" in error["message"]


def test_max_completion_tokens_zero_is_refused_not_ignored(client):
    error = _error(client.post("/v1/chat/completions", json=ask("hi", max_completion_tokens=0)), 400)
    assert "max_completion_tokens" in error["message"]


def test_a_collection_indexed_with_another_embedding_model_names_the_fix(settings, other_embedder_dir):
    Collection.open(settings, "sample").sync(SAMPLE)
    other = other_embedder_dir
    changed = settings.model_copy(
        update={"models": settings.models.model_copy(update={"embedding": str(other)})}
    )
    for stream in (False, True):
        r = _client(changed).post("/v1/chat/completions", json=ask("When does it open?", stream=stream))
        error = _error(r, 500)
        assert "AssertionError" not in error["message"]
        assert "collection 'sample' was indexed with" in error["message"]
        assert f"chatbot index sample {SAMPLE}" in error["message"]


def test_an_answer_budget_too_large_for_the_window_names_max_tokens(settings):
    """The question fits; the room asked for the answer leaves it none: the error says which field to lower."""
    small = settings.model_copy(
        update={"models": settings.models.model_copy(update={"max_context_tokens": 512})}
    )
    Collection.open(small, "sample").sync(SAMPLE)
    client = _client(small)
    error = _error(
        client.post("/v1/chat/completions", json=ask("How do I delete a collection?", max_tokens=500)), 400
    )
    assert "max_new_tokens=500 (a request's max_tokens)" in error["message"], error
    assert "512-token context window" in error["message"]
    assert (
        client.post(
            "/v1/chat/completions", json=ask("How do I delete a collection?", max_tokens=20)
        ).status_code
        == 200
    )


def test_a_stream_that_fails_after_its_status_names_the_failure_as_the_status_would(settings):
    """The sources go out before the model runs, so a streamed answer's status is sent by then: a busy engine
    is then an in-stream error of type "overloaded" (as its 503 would say), not a generic server error."""
    import json

    from finetune.llamacpp import EngineBusy

    class Busy(GenericFakeChatModel):
        def _stream(self, *args, **kwargs):
            raise EngineBusy("2 answers are being written and 8 wait; try again shortly")

    Collection.open(settings, "sample").sync(SAMPLE)
    service = ChatService(settings, llm=Busy(messages=iter([])))
    _, token = ApiKeys.of(settings.data_dir).create("tester")
    client = TestClient(create_app(service), headers={"Authorization": f"Bearer {token}"})
    r = client.post("/v1/chat/completions", json=ask("How do I delete a collection?", stream=True))
    assert r.status_code == 200
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    error = events[-1]["error"]
    assert error["type"] == "overloaded" and error["message"].startswith("the model is busy: 2 answers")
    assert r.text.rstrip().endswith("data: [DONE]")
