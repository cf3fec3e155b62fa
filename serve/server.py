"""Building the gRPC server (``create_server``) and running it (``serve``).

Start-up: listen at once with health NOT_SERVING, load and warm the model off the event
loop, then switch health to SERVING. SIGTERM/SIGINT: health NOT_SERVING, stop accepting,
let in-flight requests finish within the grace period, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protos.inference import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from protos.sentiment.v1 import admin_pb2, admin_pb2_grpc, sentiment_pb2, sentiment_pb2_grpc
from serve.engine.core import InferenceCore
from serve.engine.explain_service import ExplainService
from serve.grpc.admin_servicer import ModelAdminServicer
from serve.grpc.kserve_servicer import KServeServicer
from serve.grpc.reflection import enable_server_reflection
from serve.grpc.sentiment_servicer import SentimentServicer
from serve.lifecycle.reload import ModelReloader, RepositoryWatcher
from serve.ops.edge import EdgeInterceptor
from serve.ops.errors import ConfigurationError
from serve.ops.metrics import Metrics
from serve.ops.security import admission_interceptors, server_credentials
from serve.ops.settings import Settings
from serve.rest.server import RestServer

log = logging.getLogger("serve.server")
SENTIMENT_SERVICE = sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"].full_name
KSERVE_SERVICE = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# "" is the whole server, as grpc_health_probe asks by default.
HEALTH_NAMES = ("", SENTIMENT_SERVICE, KSERVE_SERVICE)


class Server:
    """The gRPC server with its core, health servicer and metrics endpoint."""

    def __init__(self, settings: Settings, grpc_server: grpc.aio.Server, core: InferenceCore,
                 health_servicer: health.aio.HealthServicer, metrics: Metrics, reloader: ModelReloader,
                 watcher: RepositoryWatcher | None, explainer: ExplainService | None = None) -> None:
        self.settings = settings
        self.grpc = grpc_server
        self.core = core
        self.health = health_servicer
        self.metrics = metrics
        self.reloader = reloader
        self.watcher = watcher
        self.explainer = explainer
        self.metrics_port: int | None = None
        self.rest: RestServer | None = None  # the HTTP port (serve/rest/server.py), None with --http-port -1
        self.http_port: int | None = None

    async def start(self) -> None:
        """Accept connections (health answers NOT_SERVING) and open the metrics endpoint."""
        for name in HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.grpc.start()
        if self.rest is not None:
            try:
                self.http_port = await self.rest.start()
            except ConfigurationError:
                await self.grpc.stop(0)
                raise
        if self.settings.metrics_port >= 0:
            host = self.settings.metrics_bind_host
            try:
                self.metrics_port = self.metrics.serve_http(host, self.settings.metrics_port,
                                                            self.settings.metrics_max_connections,
                                                            self.settings.metrics_timeout_s)
            except OSError as exc:
                await self.grpc.stop(0)
                if self.rest is not None:
                    await self.rest.stop()
                raise ConfigurationError(f"cannot serve metrics on {host}:"
                                         f"{self.settings.metrics_port}: {exc}") from exc

    async def load(self) -> None:
        """Load and warm the model, then report SERVING (and start following new versions, if asked)."""
        await self.core.load()
        for name in HEALTH_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.watcher is not None:
            self.watcher.start()

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, finish in-flight ones within ``grace`` seconds, release the model."""
        grace = self.settings.grace_period_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.watcher is not None:
            await self.watcher.stop()
        await asyncio.gather(self.grpc.stop(grace), self.rest.stop() if self.rest is not None else asyncio.sleep(0))
        if self.explainer is not None:
            await self.explainer.close()
        await self.core.close()
        self.metrics.stop_http()


def create_server(settings: Settings) -> tuple[Server, int]:
    """Build the server and bind its port (port 0 picks a free one); returns it and the bound port.

    Nothing is loaded yet: call ``await server.start()`` then ``await server.load()``.
    """
    # Read the credentials first: an unusable certificate or token file is refused before
    # anything else is built (and without needing an event loop).
    credentials = server_credentials(settings)
    metrics = Metrics()
    # The edge wraps the call limits and the token check, so refused calls are counted and logged
    # like any other; both refuse before the request message is read.
    interceptors = [EdgeInterceptor(metrics), *admission_interceptors(settings, metrics)]
    core = InferenceCore(settings, metrics)
    reloader = ModelReloader(core, metrics)
    watcher = RepositoryWatcher(reloader, settings) if settings.watch_repository else None
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
        *connection_options(settings),
    ]
    grpc_server = grpc.aio.server(interceptors=interceptors, options=options)
    explainer = ExplainService(core, settings)
    sentiment_pb2_grpc.add_SentimentServiceServicer_to_server(
        SentimentServicer(core, settings.stream_window, explainer), grpc_server)
    kserve = KServeServicer(core)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(kserve, grpc_server)
    admin_pb2_grpc.add_ModelAdminServicer_to_server(ModelAdminServicer(core, reloader, settings), grpc_server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
    enable_server_reflection((SENTIMENT_SERVICE, KSERVE_SERVICE, ADMIN_SERVICE, HEALTH_SERVICE), grpc_server)
    address = f"{settings.host}:{settings.port}"
    try:
        port = (grpc_server.add_secure_port(address, credentials) if credentials is not None
                else grpc_server.add_insecure_port(address))
    except RuntimeError as exc:
        raise ConfigurationError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise ConfigurationError(f"cannot listen on {address} (port in use, or the address is not local)")
    server = Server(settings, grpc_server, core, health_servicer, metrics, reloader, watcher, explainer)
    if settings.http_port >= 0:  # the HTTP port shares the core, the KServe servicer and the metrics
        server.rest = RestServer(settings, core, kserve, metrics, explainer)
    return server, port


# File descriptors kept for everything but client connections: model files, the metrics
# endpoint and its clients, logs, the repository watcher.
RESERVED_FDS = 64


def connection_cap(settings: Settings) -> int:
    """``--max-connections``, lowered to fit the open-file limit (whose soft value is first raised to
    the hard one): past that limit accept() fails, and every socket, /metrics included, stalls."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or settings.max_connections + RESERVED_FDS <= soft:
        return settings.max_connections
    cap = max(1, soft - RESERVED_FDS)
    log.warning("--max-connections lowered to fit the open-file limit",
                extra={"max_connections": settings.max_connections, "open_file_limit": soft, "lowered_to": cap})
    return cap


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """grpc core's per-connection limits (channel arguments) from the settings.

    Streams per connection are advertised in HTTP/2 SETTINGS (clients queue beyond them); an idle
    connection (no call) is closed with GOAWAY; an old one is asked to go away and its calls get
    the grace time; a connection beyond the cap is closed on arrival, before any handshake; one
    that does not finish its handshake in time is closed; keepalive pings find dead peers.
    """
    def ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))

    options = [
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.max_allowed_incoming_connections", connection_cap(settings)),
        ("grpc.server_handshake_timeout_ms", ms(settings.handshake_timeout_s)),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ]
    if settings.connection_idle_s > 0:
        options.append(("grpc.max_connection_idle_ms", ms(settings.connection_idle_s)))
    if settings.connection_max_age_s > 0:
        options += [("grpc.max_connection_age_ms", ms(settings.connection_max_age_s)),
                    ("grpc.max_connection_age_grace_ms", ms(settings.connection_age_grace_s))]
    return options


KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS = 60_000, 20_000


def warn_if_exposed(settings: Settings) -> None:
    """One loud warning per port that listens beyond loopback without TLS or tokens."""
    for exposure in settings.exposed_without_protection:
        log.warning("LISTENING BEYOND LOOPBACK WITHOUT PROTECTION: anyone who can reach this address can use "
                    "it; set --tls-cert/--tls-key and --auth-token-file, or listen on 127.0.0.1 "
                    "(docs/security.md)", extra={"exposed": exposure})


def process_age_s() -> float | None:
    """Seconds since this process started (Linux), for the cold-start log line."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


async def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit status (0 after a clean drain)."""
    server, port = create_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    warn_if_exposed(settings)
    log.info("listening", extra={"address": f"{settings.host}:{port}", "tls": settings.tls,
                                 "token_auth": settings.auth_token_file is not None,
                                 "metrics_host": settings.metrics_bind_host, "metrics_port": server.metrics_port,
                                 "http_port": server.http_port})
    loading = asyncio.create_task(server.load())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if loading.done() and loading.exception() is not None:
        exc = loading.exception()
        log.error("model failed to load", extra={"error": f"{type(exc).__name__}: {exc}"})
        status = 1
    elif loading.done():
        log.info("serving", extra={"startup_s": process_age_s(), "port": port})
        await stopping
    started = time.monotonic()
    log.info("shutting down", extra={"grace_s": settings.grace_period_s})
    loading.cancel()
    await server.stop()
    log.info("stopped", extra={"drain_s": round(time.monotonic() - started, 3)})
    return status
