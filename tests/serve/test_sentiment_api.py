"""sentiment.v1 over a real server: results, order, streaming ids, and every error code."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.serve.conftest import REVIEWS, ServerThread, make_settings

TIMEOUT = 10.0


def stub(server: ServerThread) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(server.channel)


def test_predict_matches_in_process_scoring(server: ServerThread, reference) -> None:
    expected = reference(REVIEWS[:1])[0]
    reply = stub(server).Predict(pb.PredictRequest(text=REVIEWS[0]), timeout=TIMEOUT)
    assert reply.prediction.probability == pytest.approx(expected, abs=1e-6)
    assert reply.prediction.label == ("positive" if expected >= 0.5 else "negative")
    assert (reply.model.name, reply.model.version) == ("imdb-lstm", 1)


def test_predict_batch_keeps_order_and_matches_each_text_scored_alone(server: ServerThread, reference) -> None:
    texts = REVIEWS * 5
    reply = stub(server).PredictBatch(pb.PredictBatchRequest(texts=texts), timeout=TIMEOUT)
    got = np.array([p.probability for p in reply.predictions])
    np.testing.assert_allclose(got, reference(texts), atol=1e-6, rtol=0)
    assert [p.label for p in reply.predictions] == ["positive" if p >= 0.5 else "negative" for p in got]
    assert {p.label for p in reply.predictions} == {"positive", "negative"}


def test_long_review_is_truncated_not_refused(server: ServerThread, reference) -> None:
    text = "brilliant " * 3000 + "awful boring mess " * 300  # far beyond max_tokens
    reply = stub(server).Predict(pb.PredictRequest(text=text), timeout=TIMEOUT)
    assert reply.prediction.probability == pytest.approx(reference([text])[0], abs=1e-6)


def test_stream_answers_every_request_with_its_id(server: ServerThread, reference) -> None:
    requests = [pb.PredictStreamRequest(id=f"r{i}", texts=REVIEWS[i % len(REVIEWS):][:3]) for i in range(40)]
    replies = list(stub(server).PredictStream(iter(requests), timeout=TIMEOUT))
    by_id = {r.id: r for r in replies}
    assert sorted(by_id) == sorted(r.id for r in requests) and len(replies) == len(requests)
    for request in requests:
        got = [p.probability for p in by_id[request.id].predictions]
        np.testing.assert_allclose(got, reference(list(request.texts)), atol=1e-6, rtol=0)


def test_stream_with_an_invalid_request_ends_with_invalid_argument_naming_its_id(server: ServerThread) -> None:
    requests = [pb.PredictStreamRequest(id="good", texts=["fine film"]), pb.PredictStreamRequest(id="bad-7", texts=[])]
    with pytest.raises(grpc.RpcError) as info:
        list(stub(server).PredictStream(iter(requests), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bad-7" in info.value.details() and "empty" in info.value.details()


@pytest.mark.parametrize(("call", "message", "needle"), [
    ("Predict", pb.PredictRequest(), "text is empty"),
    ("Predict", pb.PredictRequest(text="  \n\t "), "text is empty"),
    ("PredictBatch", pb.PredictBatchRequest(), "texts is empty"),
    ("PredictBatch", pb.PredictBatchRequest(texts=["good", ""]), "texts[1] is empty"),
    ("PredictBatch", pb.PredictBatchRequest(texts=["x"] * 1025), "at most 1024 per request"),
    ("Predict", pb.PredictRequest(text="a" * 100_001), "at most 100000 accepted"),
])
def test_invalid_requests_get_invalid_argument_with_a_clear_message(server: ServerThread, call: str, message,
                                                                   needle: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub(server), call)(message, timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


class GatedRunner:
    """Wraps the real runner; holds every model run until released, and counts rows run."""

    def __init__(self, real) -> None:
        self.real, self.model, self.device = real, real.model, real.device
        self.entered, self.release = threading.Event(), threading.Event()
        self.rows: list[int] = []

    def run(self, input_ids, lengths):
        self.rows.append(len(lengths))
        self.entered.set()
        assert self.release.wait(TIMEOUT)
        return self.real.run(input_ids, lengths)


@pytest.fixture
def gated(repository) -> Iterator[tuple[ServerThread, GatedRunner]]:
    """A server with a small queue whose model runs wait for the test (fake timing, real model)."""
    running = ServerThread(make_settings(repository, workers=1, max_queue_size=8, max_texts_per_request=8,
                                         max_message_bytes=4096))
    core = running.server.core
    runner = GatedRunner(core.loaded.runner)
    core.switch(dataclasses.replace(core.loaded, runner=runner))
    yield running, runner
    runner.release.set()
    running.close()


def wait_for_queue(server: ServerThread, units: int) -> None:
    until = time.monotonic() + TIMEOUT
    while server.server.core._batcher.queued_units < units:  # noqa: SLF001 - observing, not steering
        assert time.monotonic() < until
        time.sleep(0.001)


def test_full_queue_answers_resource_exhausted_at_once(gated) -> None:
    server, runner = gated
    api = stub(server)
    first = api.Predict.future(pb.PredictRequest(text="good"), timeout=TIMEOUT)
    assert runner.entered.wait(TIMEOUT)
    queued = api.PredictBatch.future(pb.PredictBatchRequest(texts=["fine"] * 8), timeout=TIMEOUT)
    wait_for_queue(server, 8)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        api.Predict(pb.PredictRequest(text="one too many"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in info.value.details()
    assert time.monotonic() - started < TIMEOUT / 2  # refused, not parked
    runner.release.set()
    assert first.result().prediction.label and len(queued.result().predictions) == 8


def test_expired_request_is_dropped_before_inference(gated) -> None:
    server, runner = gated
    api = stub(server)
    first = api.Predict.future(pb.PredictRequest(text="good"), timeout=TIMEOUT)
    assert runner.entered.wait(TIMEOUT)
    late = api.PredictBatch.future(pb.PredictBatchRequest(texts=["x"] * 5), timeout=0.2)
    with pytest.raises(grpc.RpcError) as info:
        late.result()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    runner.release.set()
    first.result()
    after = api.Predict(pb.PredictRequest(text="still serving"), timeout=TIMEOUT)
    assert after.prediction.label
    assert 5 not in runner.rows and runner.rows == [1, 1]  # the 5 expired texts never ran


def test_oversized_message_is_refused_by_size(gated) -> None:
    server, _ = gated
    server.server.core.loaded.runner.release.set()
    with pytest.raises(grpc.RpcError) as info:
        stub(server).Predict(pb.PredictRequest(text="x" * 5000), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_requests_before_the_model_is_ready_get_unavailable(repository) -> None:
    running = ServerThread(make_settings(repository), load=False)
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub(running).Predict(pb.PredictRequest(text="good"), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "not loaded" in info.value.details()
    finally:
        running.close()
