"""Overload: offered load far above capacity on a server with a small queue.

Excess requests are refused with RESOURCE_EXHAUSTED at once (no queueing behind the model),
admitted ones complete OK, nothing else happens, and the server answers normally right after.
"""

from __future__ import annotations

import asyncio

import grpc

from bench.load import closed_loop, metric, summarize
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.conftest import REPO_ROOT
from tests.reliability.conftest import TIMEOUT, health_status, start_process
from tests.reliability.test_soak import soak_texts

QUEUE = 16  # texts: two requests of 8 may wait while one runs
CLIENTS = 48  # each sends 8 texts: 384 texts offered at once against a queue of 16
SECONDS = 4.0
# Generous: a refusal takes about a millisecond; only a refusal parked behind the model
# (hundreds of milliseconds at this load) or a stalled event loop would come near it.
REFUSAL_P99_LIMIT_S = 1.0


def test_overload_refuses_fast_completes_admitted_and_recovers_at_once() -> None:
    process, port, metrics = start_process(REPO_ROOT / "models", "--max-queue-size", str(QUEUE),
                                           "--max-texts-per-request", str(QUEUE), "--max-batch-size", str(QUEUE))
    try:
        long_reviews = [text for text in soak_texts() if len(text.split()) > 100]  # near 400 tokens each
        outcomes = asyncio.run(closed_loop(f"127.0.0.1:{port}", long_reviews, CLIENTS, SECONDS, max_requests=20_000,
                                           kinds=[("PredictBatch", 8)], pause_after_refusal_s=0.02))
        summary = summarize(outcomes)
        print(f"overload: {summary}")
        codes = summary["codes"]
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes  # both happen, and nothing else
        assert codes["RESOURCE_EXHAUSTED"] > codes["OK"], codes  # the offered load really was far above capacity
        assert summary["refusal_latency"]["p99_ms"] < REFUSAL_P99_LIMIT_S * 1000, summary

        # Right after: no backlog left, and a plain call (no retry) is answered.
        assert metric(metrics, "sentiment_queue_depth") == 0
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(text=long_reviews[0]),
                                                                  timeout=TIMEOUT)
            assert reply.prediction.label in ("positive", "negative")
            assert health_status(channel) == "SERVING"
    finally:
        process.kill()
