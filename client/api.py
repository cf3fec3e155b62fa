"""The Python client of the sentiment server: gRPC only (no ONNX Runtime, no model files).

    with SentimentClient("127.0.0.1:8001") as client:
        client.predict("A wonderful film")            # Prediction(label='positive', ...)
        client.predict_batch(["great", "awful"])      # in order
        for request_id, predictions in client.stream([("a", ["great"]), ("b", ["awful"])]): ...
        client.health()                               # "SERVING"

Unary calls are retried with exponential backoff on UNAVAILABLE (server starting or gone)
and RESOURCE_EXHAUSTED (server queue full); every call carries a deadline.

A server with TLS and/or token auth (docs/security.md) takes a :class:`Security`::

    SentimentClient("edge.example:8001", security=Security(ca_file="ca.pem"))      # TLS
    Security(ca_file="ca.pem", cert_file="client.pem", key_file="client.key")      # mutual TLS
    Security(ca_file="ca.pem", token=read_token("token.txt"))                      # TLS + bearer token

(``credentials=grpc.ssl_channel_credentials(...)`` still works for hand-built credentials.)
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.encoding import EncodingError, unicode_problem
from protos.sentiment.v1 import admin_pb2, admin_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc

# Every scoring and status RPC is idempotent (no side effects), so such a call may be
# repeated whenever the server could not have answered it: not up (UNAVAILABLE), queue full
# (RESOURCE_EXHAUSTED), or cancelled by a server shutting down at the instant it arrived
# (CANCELLED; a cancel by this client never reaches the retry loop).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED)
# Reviews are small, but a batch of long ones can pass gRPC's 4 MiB default.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
T = TypeVar("T")
log = logging.getLogger("client")


@dataclass(frozen=True)
class Prediction:
    """One review's score, as the server returned it."""

    label: str
    probability: float
    model: str = ""
    version: int = 0
    known_word_fraction: float | None = None  # share of its words the vocabulary knew whole (None: older server)


@dataclass(frozen=True)
class ServerLimits:
    """What a server accepts (sentiment.v1 ``GetLimits``): message bytes, texts per request, characters per text."""

    max_message_bytes: int
    max_texts_per_request: int
    max_chars_per_text: int


# Assumed of a server that does not advertise its limits (one older than GetLimits): gRPC's
# own default receive limit (4 MiB, what a server gets unless it raises it) and this
# project's documented defaults for the rest.
DEFAULT_SERVER_LIMITS = ServerLimits(max_message_bytes=4 * 1024 * 1024, max_texts_per_request=1024,
                                     max_chars_per_text=100_000)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed with a retryable status.

    The defaults wait out a server restart (about 1 to 2 s from kill to SERVING for the
    shipped model): up to 10 attempts, backoff doubling from 0.2 s to at most 2 s, about 7 s
    of waiting on average and 15 s at most.
    """

    attempts: int = 10
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0

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


def read_token(path: str | Path) -> str:
    """The first token in a token file (one per line; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read token file {path}: {exc}") from exc
    for line in lines:
        if line.strip() and not line.strip().startswith("#"):
            return line.strip()
    raise ValueError(f"token file {path} holds no token (one per line; '#' starts a comment)")


def _read_pem(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Security:
    """How to reach a server with TLS, mutual TLS and/or token auth; the default is plaintext.

    TLS is on when ``tls`` is set or any file is given; without ``ca_file`` the server is
    verified against the system's trusted roots. ``server_name`` overrides the name checked
    in the server's certificate (an address that is not in it, such as an IP behind a
    tunnel). The token goes with every call as ``authorization: Bearer <token>`` metadata.
    """

    tls: bool = False
    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None
    token: str | None = field(default=None, repr=False)  # never in reprs or logs

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate and its key go together: give both --tls-cert and --tls-key")
        if self.server_name and not self.uses_tls:
            raise ValueError("a TLS server name needs TLS: give --tls or --tls-ca")

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(path is not None for path in (self.ca_file, self.cert_file, self.key_file))

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """grpc channel credentials from the PEM files, or None for plaintext."""
        if not self.uses_tls:
            return None
        ca = _read_pem(Path(self.ca_file), "CA certificate") if self.ca_file is not None else None
        cert = _read_pem(Path(self.cert_file), "client certificate") if self.cert_file is not None else None
        key = _read_pem(Path(self.key_file), "client key") if self.key_file is not None else None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        # Plain call metadata, not call credentials: grpc refuses those on plaintext channels,
        # and a server behind a TLS-terminating proxy is reached in plaintext.
        return (("authorization", f"Bearer {self.token}"),) if self.token else None


def require_encodable(texts: Iterable[str], where: str = "") -> None:
    """Raise EncodingError (a ValueError) naming the first text that cannot be sent as UTF-8.

    protobuf would refuse it while serializing, and inside a request stream grpc reports
    that as UNKNOWN; the error here says which text and why (a lone surrogate, bad bytes).
    """
    for index, text in enumerate(texts):
        problem = unicode_problem(text)
        if problem is not None:
            raise EncodingError(f"{where}text {index} is {problem}; it was not sent")


def _prediction(message: Any, model: Any) -> Prediction:
    known = message.known_word_fraction if message.HasField("known_word_fraction") else None
    return Prediction(message.label, message.probability, model.name, int(model.version), known)


class SentimentClient:
    """A connection to one server (``host:port``); thread-safe, reuse it for many calls.

    ``security`` configures TLS and the bearer token (see :class:`Security`); ``credentials``
    takes hand-built channel credentials instead of Security's TLS files.
    """

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None,
                 security: Security | None = None, timeout_s: float = 30.0, retry: RetryPolicy | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        security = security or Security()
        if credentials is not None and security.uses_tls:
            raise ValueError("pass TLS either as credentials= or through security=, not both")
        credentials = credentials or security.channel_credentials()
        if security.token and credentials is None:
            log.warning("sending a bearer token over a plaintext channel to %s: use TLS unless a trusted "
                        "proxy terminates it (docs/security.md)", target)
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes), *security.channel_options()]
        self.target = target
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._metadata = security.metadata()
        self.channel = (grpc.secure_channel(target, credentials, options) if credentials
                        else grpc.insecure_channel(target, options))
        self._stub = sentiment_pb2_grpc.SentimentServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._admin = admin_pb2_grpc.ModelAdminStub(self.channel)

    def __enter__(self) -> SentimentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def predict(self, text: str) -> Prediction:
        """Score one review; raises EncodingError (a ValueError) for text that is not valid Unicode."""
        require_encodable([text])
        request = sentiment_pb2.PredictRequest(text=text)
        response = with_retries(lambda: self._stub.Predict(request, timeout=self.timeout_s, metadata=self._metadata),
                                self.retry)
        return _prediction(response.prediction, response.model)

    def explain(self, text: str, per_token: bool = False) -> dict[str, Any]:
        """Explain one review: :func:`client.explain.explanation_dict` of the server's ExplainResponse."""
        from client.explain import explanation_dict

        request = sentiment_pb2.ExplainRequest(text=text, per_token=per_token)
        response = with_retries(lambda: self._stub.Explain(request, timeout=self.timeout_s, metadata=self._metadata),
                                self.retry)
        return explanation_dict(response)

    def reload_model(self, version: int = 0) -> dict[str, Any]:
        """Ask the server to load, verify, warm and switch to ``version`` (0: the highest present).

        Needs a server started with ``--auth-token-file`` and this client's token. Not retried:
        a reload that timed out may still complete, ask :meth:`model_status` instead.
        """
        r = self._admin.ReloadModel(admin_pb2.ReloadModelRequest(version=version), timeout=self.timeout_s,
                                    metadata=self._metadata)
        return {"model": r.model, "previous_version": r.previous_version, "version": r.version,
                "outcome": r.outcome, "message": r.message}

    def model_status(self) -> dict[str, Any]:
        """The version serving now, precision, device, watcher interval and the last reload attempt."""
        r = with_retries(lambda: self._admin.GetModelStatus(admin_pb2.GetModelStatusRequest(),
                                                            timeout=self.timeout_s, metadata=self._metadata),
                         self.retry)
        last = r.last_reload if r.HasField("last_reload") else None
        return {"model": r.model, "version": r.version, "precision": r.precision, "device": r.device,
                "repository_poll_s": r.repository_poll_s,
                "last_reload": None if last is None else {
                    "trigger": last.trigger, "version": last.version, "outcome": last.outcome,
                    "message": last.message, "finished_unix_s": last.finished_unix_s}}

    def limits(self) -> ServerLimits:
        """The server's advertised limits, capped by this client's own message size; the
        defaults (:data:`DEFAULT_SERVER_LIMITS`) from a server that predates ``GetLimits``."""
        try:
            r = with_retries(lambda: self._stub.GetLimits(sentiment_pb2.GetLimitsRequest(), timeout=self.timeout_s,
                                                          metadata=self._metadata), self.retry)
            limits = ServerLimits(r.max_message_bytes, r.max_texts_per_request, r.max_chars_per_text)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            limits = DEFAULT_SERVER_LIMITS
        return dataclasses.replace(limits, max_message_bytes=min(limits.max_message_bytes, self.max_message_bytes))

    def predict_batch(self, texts: list[str]) -> list[Prediction]:
        """Score several reviews in one request; results in the order of ``texts``.

        Raises EncodingError (a ValueError) for a text that is not valid Unicode (not sent).
        """
        require_encodable(texts)
        request = sentiment_pb2.PredictBatchRequest(texts=texts)
        response = with_retries(lambda: self._stub.PredictBatch(request, timeout=self.timeout_s,
                                                                metadata=self._metadata), self.retry)
        return [_prediction(p, response.model) for p in response.predictions]

    def stream(self, batches: Iterable[tuple[str, list[str]]], window: int = 8,
               timeout_s: float | None = None) -> Iterator[tuple[str, list[Prediction]]]:
        """Score ``(id, texts)`` batches over one PredictStream; yields ``(id, predictions)``.

        At most ``window`` requests are in flight: the next one is sent only when a response
        has come back, so neither side buffers without bound. Responses may come back in any
        order (match them by id). No retries here: a failed stream raises ``grpc.RpcError``;
        :meth:`score_stream` retries what was left unanswered. A batch holding text that is
        not valid Unicode is not sent: the requests before it are answered, then
        EncodingError (a ValueError) is raised.
        """
        slots = threading.Semaphore(window)
        done = threading.Event()
        refused: list[ValueError] = []

        def requests() -> Iterator[Any]:
            for request_id, texts in batches:
                try:
                    require_encodable(texts, f"request {request_id!r}: ")
                except ValueError as exc:  # raised here, grpc would end the call as UNKNOWN
                    refused.append(exc)
                    return
                # Waits for a free slot; gives up once the call is over (error or cancel).
                while not slots.acquire(timeout=0.1):
                    if done.is_set():
                        return
                yield sentiment_pb2.PredictStreamRequest(id=request_id, texts=texts)

        call = self._stub.PredictStream(requests(), timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        try:
            for response in call:
                slots.release()
                yield response.id, [_prediction(p, response.model) for p in response.predictions]
            if refused:
                raise refused[0]
        finally:
            done.set()
            call.cancel()

    def score_stream(self, batches: dict[str, list[str]], window: int = 8,
                     timeout_s: float | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> dict[str, list[Prediction]]:
        """All of ``batches`` over PredictStream, re-sending what a retryable failure left unanswered.

        RESOURCE_EXHAUSTED (the server's queue is full) also halves the window for the next
        attempts, down to one request in flight: re-sending as many requests as the queue just
        refused would be refused again whenever the window holds more texts than the queue
        (multiplicative decrease, as TCP's congestion control; the window is not raised again
        within the call).
        """
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
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    window = max(1, window // 2)
                sleep(self.retry.delay(attempt))
        return results

    def health(self, service: str = "") -> str:
        """The server's health status name: SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN."""
        response = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout_s,
                                      metadata=self._metadata)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
