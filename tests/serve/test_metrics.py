"""The Prometheus endpoint: request, latency, queue, compute, batch, padding, depth and model series."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from types import SimpleNamespace

import grpc
import pytest

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.ops.edge import EdgeInterceptor
from tests.serve.conftest import REVIEWS, ServerThread

TIMEOUT = 10.0


def scrape(server: ServerThread) -> str:
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()


def test_metrics_endpoint_reports_traffic_and_model(server: ServerThread) -> None:
    api = pb_grpc.SentimentServiceStub(server.channel)
    api.PredictBatch(pb.PredictBatchRequest(texts=REVIEWS), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        api.Predict(pb.PredictRequest(text=""), timeout=TIMEOUT)
    expected = [
        'sentiment_requests_total{code="OK",method="/sentiment.v1.SentimentService/PredictBatch"} 1.0',
        'sentiment_requests_total{code="INVALID_ARGUMENT",method="/sentiment.v1.SentimentService/Predict"} 1.0',
        'sentiment_request_seconds_count{method="/sentiment.v1.SentimentService/PredictBatch"} 1.0',
        "sentiment_queue_seconds_count 1.0",
        "sentiment_compute_seconds_count 1.0",
        f"sentiment_batch_texts_sum {float(len(REVIEWS))}",
        "sentiment_queue_depth 0.0",
        'sentiment_model_info{device="cpu",model="imdb-lstm",precision="fp32",version="1"} 1.0',
        "sentiment_model_ready 1.0",
        f"sentiment_texts_total {float(len(REVIEWS))}",
    ]
    # A refused call's status can reach the client a moment before the edge has counted it
    # (abort sends the status, then the handler's bookkeeping runs): scrape until it shows.
    deadline = time.monotonic() + TIMEOUT
    text = scrape(server)
    while not all(line in text for line in expected) and time.monotonic() < deadline:
        time.sleep(0.05)
        text = scrape(server)
    for line in expected:
        assert line in text, line
    assert "sentiment_padding_fraction_count" in text and 'sentiment_tokens_total{kind="padding"}' in text
    real = float(text.split('sentiment_tokens_total{kind="real"} ')[1].split()[0])
    assert real >= len(REVIEWS)
    # The batch really ran on a worker thread's CPU, and no longer than it took.
    cpu = float(re.search(r"^sentiment_compute_cpu_seconds_total (\S+)$", text, re.MULTILINE).group(1))
    wall = float(re.search(r"^sentiment_compute_seconds_sum (\S+)$", text, re.MULTILINE).group(1))
    assert 0 < cpu <= wall + 1e-3


def test_the_edge_wraps_each_handler_once_and_a_new_handler_again() -> None:
    async def behaviour(request: object, context: object) -> None:
        return None

    first, other = grpc.unary_unary_rpc_method_handler(behaviour), grpc.unary_unary_rpc_method_handler(behaviour)
    details = SimpleNamespace(method="/pkg.Service/Method", invocation_metadata=())
    edge = EdgeInterceptor()

    async def wrap(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        async def continuation(_: object) -> grpc.RpcMethodHandler:
            return handler
        return await edge.intercept_service(continuation, details)

    async def main() -> None:
        once = await wrap(first)
        assert once is not first and await wrap(first) is once
        assert await wrap(other) is not once  # e.g. a token refusal: its own wrapper
        assert await wrap(first) is not once and (await wrap(first)).request_streaming is False

    asyncio.run(main())
