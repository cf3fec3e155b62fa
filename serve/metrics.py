"""Prometheus metrics: one registry per server, served on ``--metrics-port``.

:class:`Metrics` is the batcher's, the core's and the reloader's observer, and the edge
interceptor records every RPC through :meth:`Metrics.request_done`; nothing else touches
the collectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from serve.repository import ModelVersion
from serve.scheduler import StepRecord

PREFIX = "sentiment"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FRACTION_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
COUNT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The server's collectors, in their own registry (several servers may share a process in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "RPCs answered, by method and gRPC status code",
                                ["method", "code"], registry=r)
        self.latency = Histogram(f"{PREFIX}_request_seconds", "RPC latency as seen by the server, by method",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram(f"{PREFIX}_queue_seconds", "time a request waited for a model run",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.compute_time = Histogram(f"{PREFIX}_compute_seconds", "time of one batch: tokenize, run, label",
                                      buckets=LATENCY_BUCKETS, registry=r)
        # Against compute_seconds it shows time a busy worker lost waiting for a CPU; ONNX
        # Runtime's own intra-op threads (--intra-op-threads > 1) are not counted.
        self.compute_cpu = Counter(f"{PREFIX}_compute_cpu_seconds", "CPU time of the worker threads on batches",
                                   registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_texts", "texts per coalesced batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.padding_fraction = Histogram(f"{PREFIX}_padding_fraction", "share of padding tokens per model run",
                                          buckets=FRACTION_BUCKETS, registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "tokens fed to the model, by kind (real or padding)", ["kind"],
                              registry=r)
        self.in_flight = Gauge(f"{PREFIX}_requests_in_flight", "RPCs being handled now, by method", ["method"],
                               registry=r)
        self.texts = Counter(f"{PREFIX}_texts", "texts scored", registry=r)
        self.queue_depth_gauge = Gauge(f"{PREFIX}_queue_depth", "texts waiting for the model", registry=r)
        self.model_info = Gauge(f"{PREFIX}_model_info", "the served model (value 1)",
                                ["model", "version", "precision", "device"], registry=r)
        self.model_load_seconds = Gauge(f"{PREFIX}_model_load_seconds", "time to load, verify and warm the model",
                                        registry=r)
        self.model_ready = Gauge(f"{PREFIX}_model_ready", "1 once the model is loaded and warm", registry=r)
        self.model_version = Gauge(f"{PREFIX}_model_version", "the version number serving now", registry=r)
        self.reloads = Counter(f"{PREFIX}_model_reloads", "hot reload attempts, by trigger (watch, admin) and outcome "
                               "(switched, unchanged, rejected, not_found)", ["trigger", "outcome"], registry=r)
        self._add_step_collectors()
        self._http: tuple[WSGIServer, Thread] | None = None

    def _add_step_collectors(self) -> None:
        """--batching steps (serve/scheduler.py); steps/s is rate(sentiment_steps_total)."""
        r = self.registry
        self.steps = Counter(f"{PREFIX}_steps", "model steps run (--batching steps)", registry=r)
        self.active_rows = Gauge(f"{PREFIX}_step_active_rows", "texts in the active set at the last step", registry=r)
        self.step_rows = Histogram(f"{PREFIX}_step_rows", "texts read per step", buckets=COUNT_BUCKETS, registry=r)
        self.step_tokens = Histogram(f"{PREFIX}_step_tokens", "step size: tokens each text reads in a step (K)",
                                     buckets=COUNT_BUCKETS[1:], registry=r)
        self.step_joins = Histogram(f"{PREFIX}_step_joins", "texts that joined the active set per step",
                                    buckets=COUNT_BUCKETS, registry=r)

    # -- observer of the batcher and the core
    def queue_depth(self, units: int) -> None:
        self.queue_depth_gauge.set(units)

    def batch_done(self, units: int, queue_seconds: Sequence[float], compute_seconds: float,
                   cpu_seconds: float) -> None:
        self.batch_size.observe(units)
        self.texts.inc(units)
        self.compute_time.observe(compute_seconds)
        self.compute_cpu.inc(cpu_seconds)
        for seconds in queue_seconds:
            self.queue_time.observe(seconds)

    def step_done(self, record: StepRecord) -> None:
        """A step of --batching steps; its padding counts with the whole path's (tokens, padding_fraction)."""
        self.steps.inc()
        self.active_rows.set(record.rows - record.finished)
        self.step_rows.observe(record.rows)
        self.step_tokens.observe(record.step_tokens)
        self.step_joins.observe(record.joins)
        self.texts.inc(record.finished)
        self.compute_time.observe(record.seconds)
        self.padding(record.real_tokens, record.padded_tokens)
        for seconds in record.queue_seconds:
            self.queue_time.observe(seconds)

    def padding(self, real_tokens: int, padded_tokens: int) -> None:
        self.tokens.labels("real").inc(real_tokens)
        self.tokens.labels("padding").inc(padded_tokens - real_tokens)
        self.padding_fraction.observe((padded_tokens - real_tokens) / padded_tokens if padded_tokens else 0.0)

    def model_loaded(self, model: ModelVersion, precision: str, device: str, seconds: float) -> None:
        self.model_info.clear()  # after a reload only the version serving now is reported
        self.model_info.labels(model.name, str(model.version), precision, device).set(1)
        self.model_version.set(model.version)
        self.model_load_seconds.set(seconds)
        self.model_ready.set(1)

    # -- the reloader
    def reload_done(self, trigger: str, outcome: str) -> None:
        self.reloads.labels(trigger, outcome).inc()

    # -- the edge interceptor
    def request_started(self, method: str) -> None:
        self.in_flight.labels(method).inc()

    def request_done(self, method: str, code: str, seconds: float) -> None:
        self.in_flight.labels(method).dec()
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    # -- the HTTP endpoint
    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics endpoint in a daemon thread; returns the bound port."""
        self._http = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http[0].server_port)

    def stop_http(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
