"""Bounded closed-loop gRPC load with per-request outcomes, shared by the reliability tests and benchmark.

Each of ``clients`` coroutines sends one request, waits for its answer, records an
:class:`Outcome` (start, duration, status code name) and goes on, until ``seconds`` have
passed, ``max_requests`` have been sent in all, or ``stop`` is set: every loop is bounded in
time and count. The requests mix both APIs (see :data:`KINDS`), and every answer is checked
for shape, so a wrong answer counts as a failure (code ``BAD_ANSWER``), not a success.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import sentiment_pb2 as spb
from protos.sentiment.v1 import sentiment_pb2_grpc as spb_grpc

# One kind per client, round robin: (name, texts per request).
KINDS: tuple[tuple[str, int], ...] = (("Predict", 1), ("PredictBatch", 8), ("ModelInfer", 4), ("PredictStream", 6))
LABELS = {"positive", "negative"}
RETRY_LATER = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (time.monotonic), how long it took, how it ended."""

    kind: str
    started: float
    seconds: float
    code: str  # "OK", a gRPC status name, or "BAD_ANSWER"
    details: str = ""  # the status message of a failed call


class _Clients:
    """The stubs of one channel and the call for each request kind."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self.sentiment = spb_grpc.SentimentServiceStub(channel)
        self.kserve = kpb_grpc.GRPCInferenceServiceStub(channel)
        self.timeout_s = timeout_s

    async def call(self, kind: str, texts: list[str]) -> bool:
        """Send one request of ``kind``; True if the answer has the right shape."""
        t = self.timeout_s
        if kind == "Predict":
            reply = await self.sentiment.Predict(spb.PredictRequest(text=texts[0]), timeout=t)
            return reply.prediction.label in LABELS
        if kind == "PredictBatch":
            reply = await self.sentiment.PredictBatch(spb.PredictBatchRequest(texts=texts), timeout=t)
            return len(reply.predictions) == len(texts) and {p.label for p in reply.predictions} <= LABELS
        if kind == "ModelInfer":
            request = kpb.ModelInferRequest(model_name="imdb-lstm")
            request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)]).contents.bytes_contents.extend(
                text.encode("utf-8") for text in texts)
            reply = await self.kserve.ModelInfer(request, timeout=t)
            return {o.name for o in reply.outputs} >= {"probability", "label"} and all(
                len(o.contents.fp32_contents or o.contents.bytes_contents) == len(texts) for o in reply.outputs)
        half = len(texts) // 2  # a short stream: two messages, answered by id
        messages = [spb.PredictStreamRequest(id="a", texts=texts[:half]),
                    spb.PredictStreamRequest(id="b", texts=texts[half:])]
        ids = sorted([reply.id async for reply in self.sentiment.PredictStream(iter(messages), timeout=t)])
        return ids == ["a", "b"]


async def closed_loop(target: str, texts: Sequence[str], clients: int, seconds: float, max_requests: int,
                      timeout_s: float = 30.0, stop: threading.Event | None = None,
                      kinds: Sequence[tuple[str, int]] = KINDS, pause_after_refusal_s: float = 0.0,
                      record: list[Outcome] | None = None) -> list[Outcome]:
    """Drive ``target`` with ``clients`` closed loops; returns every request's outcome.

    ``record``: the list outcomes are appended to as they happen (to watch a run from another thread).

    ``pause_after_refusal_s``: a client told to come back later (RESOURCE_EXHAUSTED, UNAVAILABLE)
    waits up to this long (jittered) before its next request, as real clients back off; 0: at once.
    """
    channel = grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", 1 << 26)])
    api = _Clients(channel, timeout_s)
    outcomes: list[Outcome] = [] if record is None else record
    until = time.monotonic() + seconds
    rng = np.random.default_rng(0)

    def more() -> bool:
        return time.monotonic() < until and len(outcomes) < max_requests and not (stop and stop.is_set())

    async def client(index: int) -> None:
        kind, count = kinds[index % len(kinds)]
        position = index * 97
        while more():
            batch = [texts[(position + k) % len(texts)] for k in range(count)]
            position += count * clients
            started = time.monotonic()
            details = ""
            try:
                code = "OK" if await api.call(kind, batch) else "BAD_ANSWER"
            except grpc.aio.AioRpcError as exc:
                code, details = exc.code().name, exc.details() or ""
            outcomes.append(Outcome(kind, started, time.monotonic() - started, code, details))
            if code in RETRY_LATER and pause_after_refusal_s > 0:
                await asyncio.sleep(float(rng.uniform(0, pause_after_refusal_s)))

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        await channel.close()
    return outcomes


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50, p99 and max of durations, in milliseconds (None when there are none)."""
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts by status code, and latency percentiles of the successful requests and of the refusals."""
    codes: dict[str, int] = {}
    for outcome in outcomes:
        codes[outcome.code] = codes.get(outcome.code, 0) + 1
    return {"requests": len(outcomes), "codes": codes,
            "failed": sum(n for code, n in codes.items() if code != "OK"),
            "ok_latency": percentiles_ms([o.seconds for o in outcomes if o.code == "OK"]),
            "refusal_latency": percentiles_ms([o.seconds for o in outcomes if o.code == "RESOURCE_EXHAUSTED"])}


def rss_growth(samples: Sequence[tuple[float, float]], started: float, warmup_s: float) -> dict[str, float]:
    """From ``(time.monotonic(), MB)`` RSS samples of a run that began at ``started``: RSS right after
    ``warmup_s``, at the end, the peak after warm-up, and the growth from warm-up to the end (a fraction)."""
    after = [mb for t, mb in samples if t >= started + warmup_s]
    if len(after) < 4:
        raise ValueError(f"too few RSS samples after {warmup_s} s of warm-up: {len(after)}")
    warm, end = after[0], after[-1]
    return {"after_warmup_mb": warm, "end_mb": end, "peak_mb": max(after), "growth": (end - warm) / warm}


def metric(url: str, name: str) -> float:
    """The sum of a metric's samples on a server's Prometheus page (0 when absent)."""
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE))
