"""``POST /v1/explain`` and the inspector page's files on the HTTP port (no browser).

Real servers on loopback with the tiny trained model (it has a step graph); the answer is
compared with sentiment.v1 Explain over gRPC through the client's ``--json`` dict, the contract
both share (docs/explain.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.explain import explanation_dict
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.rest import inspector
from tests.fixtures.http_client import Reply, request
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.reliability.test_hostile_http import encoded, has_surrogate, json_values, surrogate_text
from tests.reliability.test_hostile_input import bounded, texts
from tests.serve.test_explain import ODD_TEXTS, TURNING

TIMEOUT = 30.0
PAGE_LIMIT = 100 * 1024
TOKEN = "inspector-test-token-0123456789"


@pytest.fixture(scope="module")
def explaining(trained_repository: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(trained_repository, max_explain_sentences=20, max_chars_per_text=2000))
    yield running
    running.close()


def post(server: ServerThread, body, headers: dict[str, str] | None = None) -> Reply:
    return request(server.server.http_port, "POST", "/v1/explain", body, headers)


def grpc_explain(server: ServerThread, text: str, per_token: bool = False):
    stub = pb_grpc.SentimentServiceStub(server.channel)
    return stub.Explain(pb.ExplainRequest(text=text, per_token=per_token), timeout=TIMEOUT)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_explain_answers_what_grpc_explain_answers_as_the_cli_json_contract(explaining, text: str) -> None:
    reply = post(explaining, {"text": text})
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == explanation_dict(grpc_explain(explaining, text))


def test_explain_marks_the_turning_point_and_gives_token_steps_on_request(explaining) -> None:
    body = post(explaining, {"text": TURNING, "per_token": True}).json()
    assert body["label"] == "negative" and body["turning_point"] == 3 and body["most_decisive"] == 3
    assert [s["text"] for s in body["sentences"]] == [TURNING[s["start"]:s["end"]] for s in body["sentences"]]
    assert body["sentences"][3]["swing"] < -0.5 and body["sentences"][0]["swing"] is None
    assert len(body["token_steps"]) == body["tokens_read"]
    assert body == explanation_dict(grpc_explain(explaining, TURNING, per_token=True))
    assert "token_steps" not in post(explaining, {"text": TURNING, "per_token": False}).json()


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"", 400, "not valid JSON"),
    (b"{\"text\": ", 400, "not valid JSON"),
    (b"\xff\xfe{}", 400, "not valid UTF-8"),
    ([], 400, "must be"),
    ({"texts": ["a review"]}, 400, "unknown field(s) ['texts']"),
    ({}, 400, "'text' is required"),
    ({"text": 3}, 400, "'text'"),
    ({"text": None}, 400, "'text'"),
    ({"text": "a film", "per_token": "yes"}, 400, "per_token"),
    ({"text": "a film", "per_token": 1}, 400, "per_token"),
    (b"{\"text\": \"\\ud800 lone\"}", 400, "lone surrogate"),
])
def test_malformed_bodies_get_400_with_the_reason(explaining, body, status: int, message: str) -> None:
    reply = post(explaining, body)
    assert reply.status == status
    assert message in reply.error


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("   \n\t", "empty"),
    ("x" * 2001, "2001 characters"),
    (" ".join(["It."] * 21), "the model reads 21 sentences of this text; Explain takes at most 20"),
])
def test_bad_texts_get_400_with_grpc_explains_message(explaining, text: str, message: str) -> None:
    reply = post(explaining, {"text": text})
    assert reply.status == 400
    with pytest.raises(grpc.RpcError) as raised:
        grpc_explain(explaining, text)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reply.error == raised.value.details() and message in reply.error


@bounded(60)
@given(text=st.one_of(texts, surrogate_text, st.lists(st.sampled_from(["It was great.", "Awful!", " ", "\n\n"]),
                                                      max_size=30).map("".join)))
def test_any_text_gets_grpc_explains_answer_or_its_refusal(explaining, text: str) -> None:
    """The oracle is the gRPC port: the same object, or a 400 with the same message; never a 5xx."""
    reply = post(explaining, {"text": text})
    if has_surrogate(text):  # JSON can carry it, gRPC (UTF-8 protobuf strings) cannot
        assert reply.status == 400 and "lone surrogate" in reply.error
        return
    try:
        expected = explanation_dict(grpc_explain(explaining, text))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
        assert reply.status == 400 and reply.error == exc.details()
        return
    assert reply.status == 200, reply.body[:300]
    assert reply.json() == expected


@bounded(60)
@given(body=st.one_of(st.binary(max_size=200), json_values.map(encoded),
                      st.fixed_dictionaries({"text": json_values}, optional={"per_token": json_values})))
def test_any_body_is_answered_or_refused_with_400(explaining, body) -> None:
    reply = post(explaining, body)
    assert reply.status in (200, 400), (reply.status, reply.body[:300])
    if reply.status == 400:
        assert reply.error
    else:
        assert set(reply.json()) >= {"probability", "label", "sentences", "turning_point"}


def test_wrong_method_and_too_large_bodies(explaining) -> None:
    reply = request(explaining.server.http_port, "GET", "/v1/explain")
    assert reply.status == 405 and "allowed: POST" in reply.error
    limit = explaining.server.settings.max_message_bytes
    reply = post(explaining, b"{\"text\": \"" + b"a" * limit + b"\"}")
    assert reply.status == 413 and "--max-message-bytes" in reply.error


def test_a_version_without_a_step_graph_answers_400_failed_precondition(server: ServerThread) -> None:
    reply = post(server, {"text": "a wonderful film"})
    assert reply.status == 400 and "without a step graph" in reply.error
    assert request(server.server.http_port, "POST", "/v1/predict", {"text": "a wonderful film"}).status == 200


def test_explain_before_the_model_is_ready_gets_503(trained_repository: Path) -> None:
    waiting = ServerThread(make_settings(trained_repository), load=False)
    try:
        reply = post(waiting, {"text": "a wonderful film"})
        assert reply.status == 503 and "not loaded" in reply.error
        page = request(waiting.server.http_port, "GET", "/")  # the page itself is there before the model
        assert page.status == 200
    finally:
        waiting.close()


def _external_references(text: str) -> list[str]:
    return re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.IGNORECASE)


def test_the_page_is_small_self_contained_and_locked_to_its_origin(explaining) -> None:
    port = explaining.server.http_port
    total = 0
    for path, (name, content_type) in inspector.FILES.items():
        reply = request(port, "GET", path)
        assert reply.status == 200, path
        assert reply.body == inspector.read_file(name)
        if content_type.startswith("text/"):
            assert reply.headers["content-type"] == f"{content_type}; charset=utf-8"
            text = reply.body.decode("utf-8")
            assert _external_references(text) == [], path
            assert "http://" not in text and "https://" not in text, path
        else:
            assert reply.headers["content-type"] == content_type
        policy = reply.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
        assert reply.headers["x-content-type-options"] == "nosniff"
        total += len(reply.body)
    assert total < PAGE_LIMIT, total
    page = request(port, "GET", "/").body.decode()
    # every file the page loads is one the server serves, from its own origin
    loaded = re.findall(r"(?:src|href)=\"([^\"]+)\"", page)
    assert sorted(loaded) == sorted(p for p in inspector.FILES if p != "/")
    assert '<label for="review">' in page and 'aria-live="polite"' in page and 'name="viewport"' in page
    assert request(port, "HEAD", "/").status == 200
    assert request(port, "POST", "/").status == 405
    assert request(port, "GET", "/inspector/missing.js").status == 404


def test_with_a_token_the_page_is_open_and_explain_needs_the_bearer_token(trained_repository, tmp_path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# inspector\n{TOKEN}\n")
    guarded = ServerThread(make_settings(trained_repository, auth_token_file=token_file))
    try:
        port = guarded.server.http_port
        for path in inspector.FILES:
            assert request(port, "GET", path).status == 200, path
        refused = post(guarded, {"text": TURNING})
        assert refused.status == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert post(guarded, {"text": TURNING}, {"Authorization": "Bearer wrong"}).status == 401
        answered = post(guarded, {"text": TURNING}, {"Authorization": f"Bearer {TOKEN}"})
        assert answered.status == 200 and answered.json()["turning_point"] == 3
    finally:
        guarded.close()
