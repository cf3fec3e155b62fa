"""sentiment.v1 Explain over a real server: the answer, its agreement with Predict, and its errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.fixtures.tiny_repository import build_tiny_repository
from tests.serve.test_explain import ODD_TEXTS, TURNING

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def explaining(trained_repository: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(trained_repository, max_explain_sentences=20, max_chars_per_text=2000))
    yield running
    running.close()


def stub(server: ServerThread) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(server.channel)


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_explain_agrees_with_predict_and_its_offsets_point_at_its_sentences(explaining, text: str) -> None:
    reply = stub(explaining).Explain(pb.ExplainRequest(text=text), timeout=TIMEOUT)
    predicted = stub(explaining).Predict(pb.PredictRequest(text=text), timeout=TIMEOUT).prediction
    assert reply.prediction.probability == pytest.approx(predicted.probability, abs=1e-5)
    assert reply.prediction.label == predicted.label
    assert (reply.model.name, reply.model.version) == ("imdb-lstm", 1)
    read = [s for s in reply.sentences if s.tokens_read]
    assert read[-1].running_probability == reply.prediction.probability
    for s in reply.sentences:
        assert s.text == text[s.start:s.end] and s.text.strip()
        assert s.HasField("running_probability") == s.HasField("effect") == (s.tokens_read > 0)
    assert sum(s.tokens for s in reply.sentences) == reply.tokens
    assert not reply.token_steps


def test_explain_shows_where_a_review_turns(explaining) -> None:
    reply = stub(explaining).Explain(pb.ExplainRequest(text=TURNING, per_token=True), timeout=TIMEOUT)
    assert reply.prediction.label == "negative"
    assert reply.turning_point == 3 and reply.most_decisive == 3
    assert reply.sentences[3].swing < -0.5 and not reply.sentences[0].HasField("swing")
    assert len(reply.token_steps) == reply.tokens_read
    assert reply.token_steps[-1].running_probability == reply.prediction.probability
    assert all(reply.sentences[t.sentence].start <= t.start < reply.sentences[t.sentence].end
               for t in reply.token_steps)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("   \n\t", "empty"),
    ("x" * 2001, "2001 characters"),
    (" ".join(["It."] * 21), "the model reads 21 sentences of this text; Explain takes at most 20"),
])
def test_bad_input_gets_invalid_argument_as_predict_does(explaining, text: str, message: str) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub(explaining).Explain(pb.ExplainRequest(text=text), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details()
    if "sentences" not in message:  # the same refusal as Predict's
        with pytest.raises(grpc.RpcError) as predicted:
            stub(explaining).Predict(pb.PredictRequest(text=text), timeout=TIMEOUT)
        assert predicted.value.details() == raised.value.details()


def test_a_version_without_a_step_graph_answers_failed_precondition(server: ServerThread) -> None:
    """The shared tiny repository's version has no step graph; Predict still works there."""
    with pytest.raises(grpc.RpcError) as raised:
        stub(server).Explain(pb.ExplainRequest(text="a wonderful film"), timeout=TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "without a step graph" in raised.value.details()
    assert stub(server).Predict(pb.PredictRequest(text="a wonderful film"), timeout=TIMEOUT).prediction.label


def test_explain_before_the_model_is_ready_gets_unavailable(trained_repository: Path) -> None:
    waiting = ServerThread(make_settings(trained_repository), load=False)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            stub(waiting).Explain(pb.ExplainRequest(text="a wonderful film"), timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        waiting.close()


def test_explain_with_step_batching_uses_the_served_step_graph_and_agrees_with_predict(trained_repository) -> None:
    running = ServerThread(make_settings(trained_repository, batching="steps"))
    try:
        for text in ODD_TEXTS:
            reply = stub(running).Explain(pb.ExplainRequest(text=text), timeout=TIMEOUT)
            predicted = stub(running).Predict(pb.PredictRequest(text=text), timeout=TIMEOUT).prediction
            assert reply.prediction.probability == pytest.approx(predicted.probability, abs=1e-5)
    finally:
        running.close()


def test_a_busy_explainer_never_blocks_predict_and_its_full_queue_answers_resource_exhausted(
        trained_repository) -> None:
    running = ServerThread(make_settings(trained_repository, explain_workers=1, max_explain_queue=1))
    explainer = running.server.explainer
    entered, release = threading.Event(), threading.Event()
    explain_one = explainer._explain_one  # noqa: SLF001 - holding the worker, not steering it

    def gated(request):
        entered.set()
        assert release.wait(TIMEOUT)
        return explain_one(request)

    explainer._explain_one = gated  # noqa: SLF001
    api = stub(running)
    try:
        first = api.Explain.future(pb.ExplainRequest(text=TURNING), timeout=TIMEOUT)
        assert entered.wait(TIMEOUT)
        queued = api.Explain.future(pb.ExplainRequest(text=TURNING), timeout=TIMEOUT)
        until = time.monotonic() + TIMEOUT
        while explainer._batcher.queued_units < 1:  # noqa: SLF001 - observing
            assert time.monotonic() < until
            time.sleep(0.001)
        with pytest.raises(grpc.RpcError) as raised:
            api.Explain(pb.ExplainRequest(text="one too many"), timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The explain worker is held and its queue full: predictions are answered all the same.
        assert api.Predict(pb.PredictRequest(text=TURNING), timeout=TIMEOUT).prediction.label == "negative"
        assert not first.done()
        release.set()
        assert first.result().turning_point == queued.result().turning_point == 3
    finally:
        release.set()
        running.close()


def test_unread_sentences_do_not_count_against_the_sentence_limit(explaining) -> None:
    """40 two-token sentences: the model (64 tokens, 16 head) reads 32 of them, over the limit of 20;
    a long review whose read part has few sentences is explained."""
    with pytest.raises(grpc.RpcError) as raised:
        stub(explaining).Explain(pb.ExplainRequest(text=" ".join(["It."] * 40)), timeout=TIMEOUT)
    assert "reads 32 sentences" in raised.value.details()
    # 8 sentences in the 16 head tokens, 30 in the unread middle, 1 in the 48 tail tokens.
    long_middle = "It. " * 38 + "And " + "and " * 42 + "the plot is terrible."
    reply = stub(explaining).Explain(pb.ExplainRequest(text=long_middle), timeout=TIMEOUT)
    assert len(reply.sentences) == 39 and reply.tokens_read == 64
    assert sum(s.tokens_read > 0 for s in reply.sentences) == 9


def test_with_step_batching_explanations_share_the_prediction_scheduler_and_its_limits(trained_repository) -> None:
    """Under --batching steps an explanation's rows run on the predictions' step scheduler: same numbers as
    the explain workers give, predictions answered while explanations are in progress, and at most
    --explain-workers + --max-explain-queue explanations at once (then RESOURCE_EXHAUSTED)."""
    whole = ServerThread(make_settings(trained_repository, batching="whole"))
    try:
        expected = stub(whole).Explain(pb.ExplainRequest(text=TURNING), timeout=TIMEOUT)
    finally:
        whole.close()
    running = ServerThread(make_settings(trained_repository, batching="steps", explain_workers=1, max_explain_queue=1))
    explainer = running.server.explainer
    scheduler = running.server.core.step_batching
    entered, release = threading.Semaphore(0), threading.Event()
    prepare = explainer._prepare  # noqa: SLF001 - holding explanations in progress, not steering them

    def gated(*args):
        entered.release()
        assert release.wait(TIMEOUT)
        return prepare(*args)

    explainer._prepare = gated  # noqa: SLF001
    api = stub(running)
    try:
        held = [api.Explain.future(pb.ExplainRequest(text=TURNING), timeout=TIMEOUT) for _ in range(2)]
        assert entered.acquire(timeout=TIMEOUT) and entered.acquire(timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as raised:
            api.Explain(pb.ExplainRequest(text="one too many"), timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 2" in raised.value.details()
        assert api.Predict(pb.PredictRequest(text=TURNING), timeout=TIMEOUT).prediction.label == "negative"
        release.set()
        for future in held:
            reply = future.result()
            assert reply.turning_point == expected.turning_point == 3
            for got, want in zip(reply.sentences, expected.sentences, strict=True):
                assert (got.start, got.end) == (want.start, want.end)
                assert got.running_probability == pytest.approx(want.running_probability, abs=1e-5)
                assert got.effect == pytest.approx(want.effect, abs=1e-5)
        assert scheduler is not None and scheduler.serves_steps(running.server.core.loaded)
    finally:
        release.set()
        running.close()


def test_an_int8_server_refuses_explain_rather_than_answer_fp32_numbers(tmp_path: Path) -> None:
    """The step graph is fp32: on an int8 server an explanation's probability would differ from Predict's."""
    repository = build_tiny_repository(tmp_path, int8=True, steps=True)
    running = ServerThread(make_settings(repository, precision="int8"))
    try:
        with pytest.raises(grpc.RpcError) as raised:
            stub(running).Explain(pb.ExplainRequest(text="a wonderful film. a dull ending."), timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--precision int8" in raised.value.details() and "--precision fp32" in raised.value.details()
        assert stub(running).Predict(pb.PredictRequest(text="a wonderful film"), timeout=TIMEOUT).prediction.label
    finally:
        running.close()
