"""PredictStream under a slow or vanishing client: flow control, and cancelled requests free the queue.

The model is held at a gate (``ModelRunner.run`` wrapped for the test) where the queue's
state must be observed while work is in progress; the server itself is real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from bench.load import metric
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from runtime.session import ModelRunner
from tests.fixtures.server_thread import ServerThread, make_settings
from tests.reliability.conftest import TIMEOUT, metrics_url, wait_until

WINDOW = 4
MESSAGES = 200
TEXTS_PER_MESSAGE = 256  # big answers (about 4 KB each), so gRPC's own buffers hold only a few


def scored_requests(server: ServerThread) -> float:
    return metric(metrics_url(server), "sentiment_texts_total") / TEXTS_PER_MESSAGE


def settled(read: Callable[[], float], quiet_polls: int = 25) -> float:
    """``read()`` once it has stopped changing for ``quiet_polls`` polls 20 ms apart (bounded).

    A broken window only makes the value climb further, so a slow machine cannot hide it.
    """
    last, same = read(), 0
    for _ in range(1000):
        time.sleep(0.02)
        value = read()
        same = same + 1 if value == last else 0
        last = value
        if same >= quiet_polls:
            return value
    raise AssertionError(f"still changing after 20 s: {last}")


def test_predict_stream_stops_reading_when_its_window_is_full(repository: Path) -> None:
    """A client that sends 200 requests but reads no answers gets only a window's worth scored."""
    server = ServerThread(make_settings(repository, stream_window=WINDOW))
    channel = grpc.insecure_channel(server.address, options=[("grpc.http2.bdp_probe", 0)])
    try:
        requests = (pb.PredictStreamRequest(id=str(i), texts=["a fine film"] * TEXTS_PER_MESSAGE)
                    for i in range(MESSAGES))
        answers = pb_grpc.SentimentServiceStub(channel).PredictStream(requests, timeout=TIMEOUT * 2)
        wait_until(lambda: scored_requests(server) >= WINDOW, "the first window to be scored")
        ahead = settled(lambda: scored_requests(server))
        # The window, the request read while waiting for a slot, and the few answers gRPC's
        # transport buffers (its 64 KiB flow-control window): far from all 200 requests.
        assert WINDOW <= ahead <= MESSAGES // 4, f"server scored {ahead} requests ahead of a client reading none"
        first = next(answers)  # reading answers lets the server go on, to the end
        ids = [first.id] + [reply.id for reply in answers]
        assert sorted(ids, key=int) == [str(i) for i in range(MESSAGES)]
    finally:
        channel.close()
        server.close()


class Gate:
    """Holds every model run until released; counts the rows that ran."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.rows = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = ModelRunner.run

        def run(runner: ModelRunner, input_ids, lengths):
            self.rows += len(lengths)
            self.entered.set()
            assert self.release.wait(TIMEOUT)
            return real(runner, input_ids, lengths)

        monkeypatch.setattr(ModelRunner, "run", run)


def test_cancelled_stream_frees_its_queue_slots_at_once(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = ServerThread(make_settings(repository, workers=1, max_queue_size=8, max_texts_per_request=8,
                                        stream_window=WINDOW))
    gate = Gate()
    gate.install(monkeypatch)  # after warm-up: only requests meet the gate
    api = pb_grpc.SentimentServiceStub(server.channel)
    url = metrics_url(server)
    try:
        blocker = api.Predict.future(pb.PredictRequest(text="holds the only worker"), timeout=TIMEOUT)
        assert gate.entered.wait(TIMEOUT)

        def requests() -> Iterator[pb.PredictStreamRequest]:
            for i in range(WINDOW):
                yield pb.PredictStreamRequest(id=str(i), texts=["queued", "behind"])
            assert not stop.wait(TIMEOUT)  # keep the stream open until the test cancels it

        stop = threading.Event()
        stream = api.PredictStream(requests(), timeout=TIMEOUT)
        wait_until(lambda: metric(url, "sentiment_queue_depth") == 8, "the stream to fill the queue")
        with pytest.raises(grpc.RpcError) as info:
            api.Predict(pb.PredictRequest(text="no room"), timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        stream.cancel()
        stop.set()
        # Freed while the worker is still busy: a dead client must not hold capacity.
        wait_until(lambda: metric(url, "sentiment_queue_depth") == 0, "the cancelled stream's slots to be freed")
        admitted = api.PredictBatch.future(pb.PredictBatchRequest(texts=["room again"] * 8), timeout=TIMEOUT)
        wait_until(lambda: metric(url, "sentiment_queue_depth") == 8 or admitted.done(), "the new batch to queue")
        gate.release.set()
        assert blocker.result().prediction.label
        assert len(admitted.result().predictions) == 8
        assert gate.rows == 1 + 8  # the blocker and the new batch; the stream's texts never ran
    finally:
        gate.release.set()
        server.close()
