"""Prometheus metrics: one registry per server, served on ``--metrics-port``.

:class:`Metrics` is the batcher's, the core's and the reloader's observer, and the edge
interceptor records every RPC through :meth:`Metrics.request_done`; nothing else touches
the collectors.

The page is served by prometheus_client's own request handler (:class:`MetricsHandler`)
under :class:`BoundedHTTPServer`: a fixed number of worker threads
(``--metrics-max-connections``; connections beyond them are closed at once), a socket
timeout (``--metrics-timeout-s``) and no ``Server:`` header. The library's
``start_http_server`` starts a thread per connection and keeps idle ones forever.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, MetricsHandler

from runtime.repository import ModelVersion
from serve.ops.logs import RateLimitedWarning

if TYPE_CHECKING:  # the engine reports to metrics; metrics only names the record's type
    from serve.engine.scheduler import StepRecord

log = logging.getLogger("serve.metrics")

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
        self.auth_failures = Counter(f"{PREFIX}_auth_failures", "calls refused for a missing, malformed or invalid "
                                     "bearer token, by kind", ["kind"], registry=r)
        self.limit_refusals = Counter(f"{PREFIX}_limit_refusals", "calls or connections refused by a limit, by "
                                      "limit (calls, open_calls, metrics_connections)", ["limit"], registry=r)
        self._http: BoundedHTTPServer | None = None

    def _add_step_collectors(self) -> None:
        """--batching steps (serve/engine/scheduler.py); steps/s is rate(sentiment_steps_total)."""
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

    # -- the admission interceptors and the metrics endpoint (serve.security.RefusalObserver)
    def auth_failed(self, kind: str) -> None:
        self.auth_failures.labels(kind).inc()

    def limit_hit(self, limit: str) -> None:
        self.limit_refusals.labels(limit).inc()

    # -- the HTTP endpoint
    def serve_http(self, host: str, port: int, max_connections: int = 8, timeout_s: float = 5.0) -> int:
        """Start the /metrics endpoint (its accept loop in a daemon thread); returns the bound port.

        Raises OSError when the address cannot be bound.
        """
        handler = type("Handler", (_QuietMetricsHandler,), {"registry": self.registry, "timeout": timeout_s})
        warn = RateLimitedWarning(log, "metrics endpoint connection limit reached: connections closed")

        def refused() -> None:
            self.limit_hit("metrics_connections")
            warn.hit(limit="--metrics-max-connections", value=max_connections)

        self._http = BoundedHTTPServer((host, port), handler, max_connections, refused)
        threading.Thread(target=self._http.serve_forever, name="metrics-http", daemon=True).start()
        return int(self._http.server_address[1])

    def stop_http(self) -> None:
        """Stop the endpoint: no new connections, open ones are dropped."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _QuietMetricsHandler(MetricsHandler):
    """prometheus_client's handler without the ``Server:`` header (it named the Python version) and
    without stderr access logs; ``timeout`` (seconds) closes a connection that stops sending."""

    timeout: float = 5.0

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())


class BoundedHTTPServer(socketserver.TCPServer):
    """A TCP server that handles each connection on one of ``max_connections`` pooled threads.

    A connection arriving while all are busy is closed at once and ``on_refused`` is called (from
    the accept thread), so neither threads nor file descriptors grow with idle clients.
    """

    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, max_connections: int,
                 on_refused: Callable[[], None]) -> None:
        self.address_family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][0]
        self._slots = threading.BoundedSemaphore(max_connections)
        self._pool = ThreadPoolExecutor(max_connections, thread_name_prefix="metrics-http")
        self._on_refused = on_refused
        super().__init__(address, handler)  # binds; closes the socket (server_close) when that fails

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._on_refused()
            self.shutdown_request(request)
            return
        self._pool.submit(self._serve, request, client_address)

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a client error must not reach stderr as a traceback
            log.debug("metrics request failed", exc_info=True, extra={"peer": str(client_address)})
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
