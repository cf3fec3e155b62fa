"""Batching never changes a result, and concurrent requests really are coalesced."""

from __future__ import annotations

import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.serve.conftest import REVIEWS, ServerThread

TIMEOUT = 20.0
CLIENTS = 16
ROUNDS = 12  # bounded: CLIENTS * ROUNDS requests in all


def metric_sum(server: ServerThread, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=TIMEOUT).read()
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text.decode(), re.MULTILINE))


def test_same_review_alone_and_under_concurrent_load_gives_the_same_probability(server: ServerThread) -> None:
    api = pb_grpc.SentimentServiceStub(server.channel)
    alone = {text: api.Predict(pb.PredictRequest(text=text), timeout=TIMEOUT).prediction.probability
             for text in REVIEWS}
    batches_before = metric_sum(server, "sentiment_batch_texts_count")
    texts_before = metric_sum(server, "sentiment_batch_texts_sum")

    def client(seed: int) -> list[tuple[str, float]]:
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(ROUNDS):
            if rng.random() < 0.5:
                text = REVIEWS[rng.integers(len(REVIEWS))]
                out.append((text, api.Predict(pb.PredictRequest(text=text), timeout=TIMEOUT).prediction.probability))
            else:
                texts = [REVIEWS[i] for i in rng.integers(len(REVIEWS), size=int(rng.integers(2, 9)))]
                reply = api.PredictBatch(pb.PredictBatchRequest(texts=texts), timeout=TIMEOUT)
                out.extend(zip(texts, (p.probability for p in reply.predictions), strict=True))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [pair for chunk in pool.map(client, range(CLIENTS)) for pair in chunk]
    worst = max(abs(probability - alone[text]) for text, probability in results)
    assert worst <= 1e-6, worst
    batches = metric_sum(server, "sentiment_batch_texts_count") - batches_before
    texts = metric_sum(server, "sentiment_batch_texts_sum") - texts_before
    assert texts == len(results)
    assert batches < CLIENTS * ROUNDS, "no two requests were ever coalesced"


def test_a_request_larger_than_a_batch_is_shared_out_and_answered_in_order(server: ServerThread, reference) -> None:
    size = server.settings.max_batch_size
    # Lengths all over the place, so the length-sorted chunks reorder the texts thoroughly.
    texts = [REVIEWS[i % len(REVIEWS)] + " fine" * (i * 7 % 23) for i in range(3 * size + 5)]
    batches_before = metric_sum(server, "sentiment_batch_texts_count")
    reply = pb_grpc.SentimentServiceStub(server.channel).PredictBatch(pb.PredictBatchRequest(texts=texts),
                                                                      timeout=TIMEOUT)
    got = np.array([p.probability for p in reply.predictions], dtype=np.float32)
    np.testing.assert_allclose(got, reference(texts), atol=1e-6)
    assert metric_sum(server, "sentiment_batch_texts_count") - batches_before >= 4  # ceil((3 * size + 5) / size)
