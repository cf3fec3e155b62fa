"""The HTTP port: KServe v2 REST and the ``/v1`` JSON API, served by aiohttp on grpc.aio's event loop.

Same process, same loop, same :class:`~serve.engine.core.InferenceCore` as the gRPC port, so the
same model, batcher, limits and metrics. Handlers only turn HTTP into the gRPC APIs' messages
(:mod:`serve.rest.codec`) and call the same servicer code; :func:`edge` is the one wrapper
around them: domain errors -> HTTP statuses (through :func:`serve.ops.edge.status_for`, the gRPC
mapping, so both ports answer alike), KServe's ``{"error": "..."}`` bodies for every failure
(unknown paths and wrong methods included), metrics and debug access logs.

Routes (``{name}``: the model; every model route also takes ``/versions/{version}``):

- ``GET /v2``, ``GET /v2/health/live``, ``GET /v2/health/ready``: server metadata and health
  (200 for true, 400 for false, empty body, as the protocol says); health needs no token.
- ``GET /v2/models/{name}``, ``GET .../ready``, ``POST .../infer``: model metadata, readiness, inference.
- Triton's extensions, as over gRPC: ``GET .../config``, ``GET .../stats``, ``GET /v2/models/stats``,
  ``POST /v2/repository/index``.
- ``POST /v1/predict`` ``{"text": ...}`` and ``POST /v1/predict:batch`` ``{"texts": [...]}``.
- ``POST /v1/explain`` ``{"text": ..., "per_token": false}``: sentiment.v1 Explain through the same
  :class:`~serve.engine.explain_service.ExplainService` (same queue, limits and errors).
- ``GET /``: the review inspector (:mod:`serve.rest.inspector`), a static page that calls
  ``/v1/explain``; it and its files need no token (they hold no data), the API calls do.

Guarding the port: bodies larger than ``--max-message-bytes`` get 413 (refused from the
Content-Length before reading); a client gets ``--http-read-timeout-s`` to send its headers
(else the connection is dropped) and as long again for its body (else 408); a client that
disconnects cancels its request, as a cancelled gRPC call does.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError
from grpc import StatusCode

from protos.inference import grpc_predict_v2_pb2 as pb
from serve.engine.core import InferenceCore
from serve.engine.explain_service import ExplainService
from serve.grpc.kserve_servicer import KServeServicer
from serve.ops.edge import status_for
from serve.ops.errors import ConfigurationError, ExplainUnavailable, InvalidInput, ModelNotReady, ServingError
from serve.ops.logs import RateLimitedWarning
from serve.ops.metrics import Metrics
from serve.ops.security import TokenChecker, read_tokens
from serve.ops.settings import Settings
from serve.rest import codec as rest_codec
from serve.rest import inspector

log = logging.getLogger("serve.rest")
SERVER_NAME = "imdb-sentiment-edge"  # the Server header of every HTTP answer, without versions
# aiohttp logs a request that is not well-formed HTTP (and a client that vanishes mid-answer)
# at ERROR with a traceback; any client could flood the log that way. Such records go to this
# logger and are demoted to one DEBUG line each (see _ClientFaults).
protocol_log = logging.getLogger("serve.rest.protocol")

# gRPC status -> HTTP status, as Google's APIs and grpc-gateway map them (google/rpc/code.proto).
HTTP_STATUS: dict[StatusCode, int] = {
    StatusCode.OK: 200,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.NOT_FOUND: 404,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DEADLINE_EXCEEDED: 504,
}
# Probes work without secrets, as gRPC health does; so does the inspector page's static files (no data in them).
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready", *inspector.PATHS})
UNMATCHED = "HTTP unmatched"  # the metrics' method label of requests that reach no route
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_status_for(exc: ServingError) -> int:
    """The HTTP status a domain error is answered with (the gRPC port's code, in HTTP's terms)."""
    return HTTP_STATUS.get(status_for(exc), 500)


def error_response(status: int, message: str, headers: Any = None) -> web.Response:
    """KServe v2 REST's error answer: ``{"error": message}`` with ``status``."""
    return web.Response(status=status, body=rest_codec.error_body(message), content_type=rest_codec.JSON_TYPE,
                        headers=headers)


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=rest_codec.dumps(value), content_type=rest_codec.JSON_TYPE)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The HTTP port's TLS from the gRPC port's files (None: plaintext); client certificates as --tls-client-ca says."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key, password=lambda: b"")
    if settings.tls_client_ca is not None:
        context.load_verify_locations(cafile=settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


def _method_label(request: web.Request) -> str:
    """The metrics label of a request: method and route template, so model names never become label values."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return UNMATCHED
    return f"{request.method} {info.route.resource.canonical}"


class RestApi:
    """The HTTP handlers over the inference core and the KServe servicer (shared with the gRPC port)."""

    def __init__(self, settings: Settings, core: InferenceCore, kserve: KServeServicer, metrics: Metrics | None,
                 tokens: TokenChecker | None, explainer: ExplainService | None = None) -> None:
        self.settings = settings
        self.core = core
        self.kserve = kserve
        self.explainer = explainer
        self.metrics = metrics
        self._auth_warning = RateLimitedWarning(log, "authentication failed", 60.0)
        self.tokens = tokens
        self.draining = False  # set at shutdown: readiness says false before the port closes

    # -- the one wrapper

    @web.middleware
    async def edge(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Errors -> statuses and ``{"error"}`` bodies, token check, metrics and access log, for every request."""
        method = _method_label(request)
        started = time.perf_counter()
        if self.metrics is not None:
            self.metrics.request_started(method)
        status = "CANCELLED"  # what a disconnected client's request is counted as
        try:
            response = await self._answer(request, handler)
            status = str(response.status)
            return response
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.request_done(method, status, seconds)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("http", extra={"method": method, "code": status, "ms": round(seconds * 1000, 3)})

    async def _answer(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            self._check_token(request)
            return await handler(request)
        except web.HTTPException as exc:  # aiohttp's own refusals: no route, wrong method, body too large...
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k not in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH)}
            return error_response(exc.status, self._reason(request, exc), headers)
        except ServingError as exc:
            status = http_status_for(exc)
            # 429 (queue full) and 503 (not ready): a well-behaved HTTP client waits before retrying (RFC 9110 10.2.3).
            return error_response(status, str(exc), {"Retry-After": "1"} if status in (429, 503) else None)
        except Exception as exc:
            log.error("unexpected error", exc_info=exc, extra={"method": request.method, "path": request.path})
            return error_response(500, f"internal error ({type(exc).__name__}); see the server log")

    def _check_token(self, request: web.Request) -> None:
        if self.tokens is None or request.path in OPEN_PATHS:
            return
        refused = self.tokens.check([(key.lower(), value) for key, value in request.headers.items()])
        if refused is not None:
            kind, reason = refused  # counted and logged as the gRPC port's failures are
            if self.metrics is not None:
                self.metrics.auth_failed(kind)
            self._auth_warning.hit(peer=request.remote, method=f"{request.method} {request.path}", reason=kind)
            raise web.HTTPUnauthorized(text=reason.replace("metadata", "header"),
                                       headers={hdrs.WWW_AUTHENTICATE: "Bearer"})

    async def body(self, request: web.Request) -> bytes:
        """The request body: 413 beyond --max-message-bytes, 408 if it takes longer than --http-read-timeout-s."""
        limit = self.settings.max_message_bytes
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                                text=_too_large(request.content_length, limit))
        try:
            async with asyncio.timeout(self.settings.http_read_timeout_s):
                return await request.read()
        except TimeoutError as exc:
            raise web.HTTPRequestTimeout(text=f"the request body did not arrive within "
                                              f"{self.settings.http_read_timeout_s:g} s (--http-read-timeout-s)"
                                         ) from exc
        except RequestPayloadError as exc:  # a body that does not decode as its Content-Encoding says
            reason = getattr(exc.__cause__, "message", None) or str(exc)
            raise InvalidInput(f"the request body could not be read: {reason} (Content-Encoding "
                               f"{request.headers.get(hdrs.CONTENT_ENCODING)!r})") from exc
        except ConnectionError as exc:  # the client went away mid-body: nobody to answer, nothing to log
            raise InvalidInput("the connection closed before the request body arrived") from exc

    # -- KServe v2 REST

    async def server_metadata(self, request: web.Request) -> web.Response:
        reply = await self.kserve.ServerMetadata(pb.ServerMetadataRequest(), None)
        return json_response({"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)})

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.core.ready and not self.draining else 400)

    async def model_ready(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        reply = await self.kserve.ModelReady(pb.ModelReadyRequest(name=name, version=version), None)
        return web.Response(status=200 if reply.ready and not self.draining else 400)

    async def model_metadata(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        reply = await self.kserve.ModelMetadata(pb.ModelMetadataRequest(name=name, version=version), None)
        return json_response(rest_codec.message_json(reply))

    async def model_config(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        reply = await self.kserve.ModelConfig(pb.ModelConfigRequest(name=name, version=version), None)
        return json_response(rest_codec.message_json(reply.config))  # Triton's HTTP answers the config itself

    async def model_statistics(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        reply = await self.kserve.ModelStatistics(pb.ModelStatisticsRequest(name=name, version=version), None)
        return json_response(rest_codec.message_json(reply))

    async def repository_index(self, request: web.Request) -> web.Response:
        ready_only = rest_codec.repository_ready_only(await self.body(request))
        reply = await self.kserve.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready_only), None)
        return json_response([rest_codec.message_json(model) for model in reply.models])

    async def infer(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        self._check_ready()
        body = await self.body(request)
        call = rest_codec.infer_request(body, request.headers.get(rest_codec.HEADER_LENGTH), name, version)
        reply = await self.kserve.infer(call.request, None)
        data, header_length = rest_codec.infer_response(call, reply)
        if header_length is None:
            return web.Response(body=data, content_type=rest_codec.JSON_TYPE)
        return web.Response(body=data, content_type=rest_codec.BINARY_TYPE,
                            headers={rest_codec.HEADER_LENGTH: str(header_length)})

    # -- sentiment.v1 as JSON

    async def predict(self, request: web.Request) -> web.Response:
        self._check_ready()
        text = rest_codec.predict_text(await self.body(request))
        return json_response(rest_codec.predict_response(await self.core.predict([text], field="text")))

    async def predict_batch(self, request: web.Request) -> web.Response:
        self._check_ready()
        texts = rest_codec.predict_texts(await self.body(request))
        return json_response(rest_codec.predict_batch_response(await self.core.predict(texts, field="texts")))

    async def explain(self, request: web.Request) -> web.Response:
        self._check_ready()
        if self.explainer is None:
            raise ExplainUnavailable("this server was built without Explain")
        text, per_token = rest_codec.explain_request(await self.body(request))
        return json_response(rest_codec.explain_response(await self.explainer.explain(text, per_token)))

    def _check_ready(self) -> None:
        """Refuse work before reading a body the server could not score anyway."""
        if not self.core.ready or self.draining:
            raise ModelNotReady("the model is not loaded and warm yet" if not self.draining
                                else "the server is shutting down")

    def _reason(self, request: web.Request, exc: web.HTTPException) -> str:
        """A message a client can act on for aiohttp's own refusals."""
        if isinstance(exc, web.HTTPNotFound) and request.match_info.http_exception is not None:
            return f"no such endpoint: {request.method} {request.path} (see docs/serving.md for the HTTP API)"
        if isinstance(exc, web.HTTPMethodNotAllowed):
            return (f"{request.path} does not take {request.method}; allowed: "
                    f"{', '.join(sorted(exc.allowed_methods))}")
        if isinstance(exc, web.HTTPRequestEntityTooLarge) and "--max-message-bytes" not in (exc.text or ""):
            return _too_large(request.content_length, self.settings.max_message_bytes)
        return exc.text or exc.reason


def _model(request: web.Request) -> tuple[str, str]:
    """The model name and version a route names ('' where it names none: every model, the served version)."""
    return request.match_info.get("name", ""), request.match_info.get("version", "")


def _too_large(size: int | None, limit: int) -> str:
    size_text = f"of {size} bytes " if size is not None else ""
    return (f"request body {size_text}exceeds the limit of {limit} bytes (--max-message-bytes); "
            "send fewer or shorter texts per request")


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    """No ``Server: Python/3.x aiohttp/y`` banner (versions help an attacker; docs/security.md):
    aiohttp only fills the header in when the response has none."""
    response.headers[hdrs.SERVER] = SERVER_NAME


def build_app(api: RestApi) -> web.Application:
    """The aiohttp application: routes and the edge middleware."""
    app = web.Application(middlewares=[api.edge], client_max_size=api.settings.max_message_bytes)
    app.on_response_prepare.append(_no_banner)
    routes = [web.get("/v2", api.server_metadata), web.get("/v2/health/live", api.live),
              web.get("/v2/health/ready", api.ready), web.get("/v2/models/stats", api.model_statistics),
              web.post("/v2/repository/index", api.repository_index),
              web.post("/v1/predict", api.predict), web.post("/v1/predict:batch", api.predict_batch),
              web.post("/v1/explain", api.explain), *inspector.routes()]
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [web.get(model, api.model_metadata), web.get(model + "/ready", api.model_ready),
                   web.post(model + "/infer", api.infer), web.get(model + "/config", api.model_config),
                   web.get(model + "/stats", api.model_statistics)]
    app.add_routes(routes)
    return app


class _ClientFaults(logging.Filter):
    """Demote aiohttp's protocol-level records to DEBUG, one line without traceback: they are the client's faults."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg, record.args = f"{record.getMessage()}: {type(record.exc_info[1]).__name__}", ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return protocol_log.isEnabledFor(logging.DEBUG)


protocol_log.addFilter(_ClientFaults())


class RestServer:
    """The HTTP port's lifecycle: bind on :meth:`start`, drain on :meth:`stop`."""

    def __init__(self, settings: Settings, core: InferenceCore, kserve: KServeServicer,
                 metrics: Metrics | None = None, explainer: ExplainService | None = None) -> None:
        tokens = None
        if settings.auth_token_file is not None:
            tokens = TokenChecker(read_tokens(settings.auth_token_file))
        self.settings = settings
        self.api = RestApi(settings, core, kserve, metrics, tokens, explainer)
        self._ssl = ssl_context(settings)
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen on --host:--http-port; returns the bound port (:class:`ConfigurationError` if it cannot)."""
        s = self.settings
        runner = web.AppRunner(build_app(self.api), handle_signals=False, access_log=None, logger=protocol_log,
                               handler_cancellation=True, keepalive_timeout=s.http_read_timeout_s,
                               shutdown_timeout=s.grace_period_s)
        await runner.setup()
        site = web.TCPSite(runner, s.host, s.http_port, ssl_context=self._ssl, reuse_port=False)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigurationError(f"cannot serve HTTP on {s.host}:{s.http_port}: {exc}") from exc
        self._runner = runner
        return int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Readiness false, stop accepting, let in-flight requests finish within the grace period."""
        self.api.draining = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
