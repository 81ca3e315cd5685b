"""The HTTP API: FastAPI's TestClient for the contract, and one real HTTP round trip through uvicorn."""

import json
from pathlib import Path

import httpx
import pytest
from api_helpers import ask, serving
from fastapi.testclient import TestClient
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

from chatbot.api import create_app
from chatbot.api_keys import ApiKeys
from chatbot.service import ChatService
from retrieval.collection import Collection

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


@pytest.fixture
def service(settings):
    Collection.open(settings, "sample").sync(SAMPLE)
    answers = iter(["Run `chatbot collections delete NAME` [1] [8]."] * 10)
    return ChatService(settings, llm=GenericFakeChatModel(messages=answers))


@pytest.fixture
def client(service):
    _, token = ApiKeys.of(service.settings.data_dir).create("tester")
    return TestClient(create_app(service), headers={"Authorization": f"Bearer {token}"})


def test_completion_has_openai_shape_and_sources(client):
    r = client.post("/v1/chat/completions", json=ask("How do I delete a collection?"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Run `chatbot collections delete NAME` [1].",
    }
    assert body["sources"] and body["sources"][0]["cited"] is True
    assert {"source", "text", "score", "number", "quote"} <= set(body["sources"][0])
    first = body["sources"][0]
    start, end = first["quote"]  # where source 1 holds the quoted words
    assert first["text"][start:end] == "Run `chatbot collections delete NAME"  # the FAQ's words
    assert body["conversation_id"] is None  # stateless unless a conversation is named


def test_streaming_is_server_sent_events(client):
    with client.stream(
        "POST", "/v1/chat/completions", json=ask("How do I delete a collection?", stream=True)
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() == "Run `chatbot collections delete NAME` [1]."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["sources"]
    assert len(chunks) > 4  # streamed in pieces, not one block


def test_responses_validate_as_openai_types(client):
    """What the API sends parses as the openai package's own types, our extra keys riding along."""
    from openai.types import Model
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    body = client.post("/v1/chat/completions", json=ask("How do I delete a collection?")).json()
    completion = ChatCompletion.model_validate(body)
    assert completion.choices[0].message.content == body["choices"][0]["message"]["content"]
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion.model_extra["sources"] == body["sources"]
    with client.stream(
        "POST", "/v1/chat/completions", json=ask("How do I delete a collection?", stream=True)
    ) as r:
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")][:-1]
    chunks = [ChatCompletionChunk.model_validate_json(line) for line in lines]
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[-1].model_extra["abstained"] is False
    # this endpoint's model reports no logits: an answer it writes is never marked unsure
    assert chunks[-1].model_extra["unsure"] is False and completion.model_extra["unsure"] is False
    assert chunks[-1].model_extra["hesitation"] is None and completion.model_extra["hesitation"] is None
    models = client.get("/v1/models").json()
    assert [Model.model_validate(m).id for m in models["data"]] == ["assistant"]


def test_a_local_model_s_hesitation_goes_on_the_wire(service):
    """With a local model (the tiny one) the API sends the number ``unsure`` is judged on, the same as the
    service's own answer, streamed or not; a client can draw its own line with it."""
    local = ChatService(service.settings)
    _, token = ApiKeys.of(local.settings.data_dir).create("local")
    client = TestClient(create_app(local), headers={"Authorization": f"Bearer {token}"})
    question = "How do I delete a collection?"
    expected = local.answer(question)
    assert not expected.abstained and isinstance(expected.hesitation, float)
    body = client.post("/v1/chat/completions", json=ask(question)).json()
    assert body["hesitation"] == pytest.approx(expected.hesitation, abs=1e-4)
    assert body["unsure"] is (expected.hesitation > local.settings.chat.unsure_hesitation)
    with client.stream("POST", "/v1/chat/completions", json=ask(question, stream=True)) as r:
        last = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")][-1]
    assert last["hesitation"] == pytest.approx(expected.hesitation, abs=1e-4)


def test_conversations_are_stored_when_asked_and_manageable(client, service):
    r = client.post("/v1/chat/completions", json=ask("How do I delete a collection?", store=True))
    conv = r.json()["conversation_id"]
    assert r.status_code == 200 and conv
    r = client.post("/v1/chat/completions", json=ask("And the folder?", conversation_id=conv))
    assert r.status_code == 200 and r.json()["conversation_id"] == conv
    listed = client.get("/v1/conversations").json()["conversations"]
    assert [c["id"] for c in listed] == [conv] and listed[0]["messages"] == 4
    assert listed[0]["owner"] == "api:tester"
    assert client.patch(f"/v1/conversations/{conv}", json={"title": "renamed"}).json()["title"] == "renamed"
    stored = client.get(f"/v1/conversations/{conv}").json()["messages"]
    assert len(stored) == 4 and [m["unsure"] for m in stored] == [False] * 4
    assert client.delete(f"/v1/conversations/{conv}").status_code == 200
    assert client.get(f"/v1/conversations/{conv}").status_code == 404
    assert client.get("/v1/collections").json() == {"collections": ["sample"]}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"messages": []}, 422, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "role"),
        ({"messages": "hello"}, 422, "messages"),
        (ask("hi", temperature=9), 400, "temperature"),
        (ask("hi", max_tokens=0), 400, "max_new_tokens"),
        (ask("hi", collection="nope"), 404, "nope"),
        (ask("hi", conversation_id="nope"), 404, "nope"),
        (
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            400,
            "last",
        ),
    ],
)
def test_malformed_requests_get_clear_4xx(client, body, status, fragment):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


def test_malformed_json_body(client):
    r = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "malformed request" in r.json()["error"]["message"]


def test_real_http_round_trip(service):  # no API key exists: served to this machine's own clients
    with serving(service) as port:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=ask("How do I delete a collection?"),
            timeout=60,
        )
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].startswith("Run `chatbot collections delete")


def test_openai_compatible_backend_streams_from_a_server(service, settings):
    """models.backend=openai: the chain streams from an OpenAI-compatible server over real HTTP (here our
    own API, serving a scripted model; vLLM, TGI, llama.cpp and Ollama speak the same protocol)."""
    from chatbot.backends import RemoteChatModel, build_llm

    with serving(service) as port:
        models = settings.models.model_copy(
            update={"backend": "openai", "endpoint_url": f"http://127.0.0.1:{port}/v1"}
        )
        remote = settings.model_copy(update={"models": models})
        llm = build_llm(remote)
        assert isinstance(llm, RemoteChatModel)
        pieces = [c.content for c in llm.stream("How do I delete a collection?")]
        assert len([p for p in pieces if p]) > 2  # streamed, not one block
        assert "".join(pieces).startswith("Run `chatbot collections delete NAME`")
        answer = ChatService(remote, llm=llm).answer("How do I delete a collection?")
        assert answer.sources and answer.text.startswith("Run `chatbot collections delete NAME`")


def test_openai_backend_needs_an_endpoint(settings):
    from chatbot.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="endpoint_url"):
        load_settings(models={"backend": "openai"})
