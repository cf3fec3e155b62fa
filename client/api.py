"""The Python client of the sentiment server: gRPC only (no ONNX Runtime, no model files).

    with SentimentClient("127.0.0.1:8001") as client:
        client.predict("A wonderful film")            # Prediction(label='positive', ...)
        client.predict_batch(["great", "awful"])      # in order
        for request_id, predictions in client.stream([("a", ["great"]), ("b", ["awful"])]): ...
        client.health()                               # "SERVING"

Unary calls are retried with exponential backoff on UNAVAILABLE (server starting or gone)
and RESOURCE_EXHAUSTED (server queue full); every call carries a deadline. Pass
``credentials=grpc.ssl_channel_credentials(...)`` for TLS.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.sentiment.v1 import sentiment_pb2, sentiment_pb2_grpc

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
# Reviews are small, but a batch of long ones can pass gRPC's 4 MiB default.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Prediction:
    """One review's score, as the server returned it."""

    label: str
    probability: float
    model: str = ""
    version: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed with a retryable status."""

    attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff, so many clients do not retry in lockstep."""
        return random.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * 2**attempt))


def with_retries(call: Callable[[], T], policy: RetryPolicy, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, again after a backoff while it fails with UNAVAILABLE or RESOURCE_EXHAUSTED."""
    for attempt in range(policy.attempts):
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE or attempt == policy.attempts - 1:
                raise
            sleep(policy.delay(attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _prediction(message: Any, model: Any) -> Prediction:
    return Prediction(message.label, message.probability, model.name, int(model.version))


class SentimentClient:
    """A connection to one server (``host:port``); thread-safe, reuse it for many calls."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None,
                 timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes)]
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.channel = (grpc.secure_channel(target, credentials, options) if credentials
                        else grpc.insecure_channel(target, options))
        self._stub = sentiment_pb2_grpc.SentimentServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> SentimentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def predict(self, text: str) -> Prediction:
        """Score one review."""
        request = sentiment_pb2.PredictRequest(text=text)
        response = with_retries(lambda: self._stub.Predict(request, timeout=self.timeout_s), self.retry)
        return _prediction(response.prediction, response.model)

    def predict_batch(self, texts: list[str]) -> list[Prediction]:
        """Score several reviews in one request; results in the order of ``texts``."""
        request = sentiment_pb2.PredictBatchRequest(texts=texts)
        response = with_retries(lambda: self._stub.PredictBatch(request, timeout=self.timeout_s), self.retry)
        return [_prediction(p, response.model) for p in response.predictions]

    def stream(self, batches: Iterable[tuple[str, list[str]]], window: int = 8,
               timeout_s: float | None = None) -> Iterator[tuple[str, list[Prediction]]]:
        """Score ``(id, texts)`` batches over one PredictStream; yields ``(id, predictions)``.

        At most ``window`` requests are in flight: the next one is sent only when a response
        has come back, so neither side buffers without bound. Responses may come back in any
        order (match them by id). No retries here: a failed stream raises ``grpc.RpcError``;
        :meth:`score_stream` retries what was left unanswered.
        """
        slots = threading.Semaphore(window)
        done = threading.Event()

        def requests() -> Iterator[Any]:
            for request_id, texts in batches:
                # Waits for a free slot; gives up once the call is over (error or cancel).
                while not slots.acquire(timeout=0.1):
                    if done.is_set():
                        return
                yield sentiment_pb2.PredictStreamRequest(id=request_id, texts=texts)

        call = self._stub.PredictStream(requests(), timeout=timeout_s or self.timeout_s)
        try:
            for response in call:
                slots.release()
                yield response.id, [_prediction(p, response.model) for p in response.predictions]
        finally:
            done.set()
            call.cancel()

    def score_stream(self, batches: dict[str, list[str]], window: int = 8,
                     timeout_s: float | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> dict[str, list[Prediction]]:
        """All of ``batches`` over PredictStream, re-sending what a retryable failure left unanswered."""
        results: dict[str, list[Prediction]] = {}
        for attempt in range(self.retry.attempts):
            pending = [(key, texts) for key, texts in batches.items() if key not in results]
            try:
                for key, predictions in self.stream(pending, window, timeout_s):
                    results[key] = predictions
                missing = [key for key, _ in pending if key not in results]
                if missing:
                    raise RuntimeError(f"server closed the stream without answering request(s) {missing[:5]}")
                return results
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or attempt == self.retry.attempts - 1:
                    raise
                sleep(self.retry.delay(attempt))
        return results

    def health(self, service: str = "") -> str:
        """The server's health status name: SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN."""
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
