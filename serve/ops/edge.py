"""The gRPC edge: domain errors -> status codes (the only place), metrics and access logs.

:class:`EdgeInterceptor` wraps every handler of the server (both APIs, health, reflection),
so servicers only convert messages and raise :mod:`serve.ops.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import StatusCode

from serve.ops.errors import (
    AdminDisabled,
    DeadlineExpired,
    ExplainUnavailable,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    ReloadRejected,
    ServingError,
)
from serve.ops.metrics import Metrics

log = logging.getLogger("serve.edge")

STATUS_CODES: dict[type[ServingError], StatusCode] = {
    InvalidInput: StatusCode.INVALID_ARGUMENT,
    ModelNotFound: StatusCode.NOT_FOUND,
    ModelNotReady: StatusCode.UNAVAILABLE,
    Overloaded: StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExpired: StatusCode.DEADLINE_EXCEEDED,
    ReloadRejected: StatusCode.FAILED_PRECONDITION,
    ExplainUnavailable: StatusCode.FAILED_PRECONDITION,
    AdminDisabled: StatusCode.PERMISSION_DENIED,
}


def status_for(exc: ServingError) -> StatusCode:
    """The gRPC status code a domain error is answered with."""
    for kind in type(exc).__mro__:
        if kind in STATUS_CODES:
            return STATUS_CODES[kind]
    return StatusCode.INTERNAL


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The client's deadline as a time.monotonic() instant, or None if it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


_HANDLER_FACTORIES = {(False, False): grpc.unary_unary_rpc_method_handler,
                      (False, True): grpc.unary_stream_rpc_method_handler,
                      (True, False): grpc.stream_unary_rpc_method_handler,
                      (True, True): grpc.stream_stream_rpc_method_handler}


def handler_like(handler: grpc.RpcMethodHandler, behaviour: Callable[..., Any],
                 request_deserializer: Callable[[bytes], Any] | None) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind (streaming or not, each way) and serializer that runs ``behaviour``."""
    factory = _HANDLER_FACTORIES[(handler.request_streaming, handler.response_streaming)]
    return factory(behaviour, request_deserializer=request_deserializer,
                   response_serializer=handler.response_serializer)


class _Undecodable:
    """Stands in for a request message that failed to parse, so the handler can refuse it cleanly."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error

    def refuse(self) -> InvalidInput:
        return InvalidInput(f"request message could not be parsed ({self.error}); strings must be valid UTF-8")


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` that returns an :class:`_Undecodable` instead of raising.

    Left raising, grpc answers a malformed message with UNKNOWN (unary) and our stream
    handlers with INTERNAL; bad bytes from a client are INVALID_ARGUMENT.
    """
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return _Undecodable(exc)

    return parse


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream that raises :class:`InvalidInput` at the first message that failed to parse."""
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.refuse()
        yield request


def _parsed(request: Any, streaming: bool) -> Any:
    """The request (or request stream) a handler may use; raises InvalidInput for an unparsable message."""
    if streaming:
        return _checked(request)
    if isinstance(request, _Undecodable):
        raise request.refuse()
    return request


class _Call:
    """Bookkeeping for one RPC: turns an exception into a status and records the outcome."""

    def __init__(self, method: str, metrics: Metrics | None) -> None:
        self.method, self.metrics, self.started = method, metrics, time.perf_counter()
        if metrics is not None:
            metrics.request_started(method)

    async def fail(self, exc: BaseException, context: grpc.aio.ServicerContext) -> None:
        """Abort the RPC with the status ``exc`` deserves (raises grpc's AbortError)."""
        if isinstance(exc, ServingError):
            await context.abort(status_for(exc), str(exc))
        log.error("unexpected error", exc_info=exc, extra={"method": self.method})
        await context.abort(StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the server log")

    def done(self, context: grpc.aio.ServicerContext, cancelled: bool = False) -> None:
        code = "CANCELLED" if cancelled else (context.code() or StatusCode.OK)
        name = code if isinstance(code, str) else code.name
        seconds = time.perf_counter() - self.started
        if self.metrics is not None:
            self.metrics.request_done(self.method, name, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rpc", extra={"method": self.method, "code": name, "ms": round(seconds * 1000, 3)})


class EdgeInterceptor(grpc.aio.ServerInterceptor):
    """Maps errors and records every RPC; the one wrapper around all handlers."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self._metrics = metrics
        # method -> (handler, its wrapper): the lookup answers the same handler object for a
        # method every time, so each is wrapped once, not per call (it showed in the throughput
        # of many small calls). A new handler object (a token refusal) is wrapped anew.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        behaviour = (handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream)
        streaming = handler.request_streaming
        wrapped = self._wrap_stream(behaviour, method, streaming) if inspect.isasyncgenfunction(behaviour) \
            else self._wrap_unary(behaviour, method, streaming)
        result = handler_like(handler, wrapped, _tolerant(handler.request_deserializer))
        self._wrapped[method] = (handler, result)
        return result

    def _wrap_unary(self, behaviour: Callable[..., Awaitable[Any]], method: str,
                    streaming: bool) -> Callable[..., Awaitable[Any]]:
        metrics = self._metrics

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            rpc = _Call(method, metrics)
            cancelled = False
            try:
                return await behaviour(_parsed(request, streaming), context)
            except asyncio.CancelledError:
                cancelled = True
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await rpc.fail(exc, context)
            finally:
                rpc.done(context, cancelled)

        return call

    def _wrap_stream(self, behaviour: Callable[..., AsyncIterator[Any]], method: str,
                     streaming: bool) -> Callable[..., AsyncIterator[Any]]:
        metrics = self._metrics

        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            rpc = _Call(method, metrics)
            cancelled = False
            try:
                async for response in behaviour(_parsed(request, streaming), context):
                    yield response
            except (asyncio.CancelledError, GeneratorExit):
                cancelled = True
                raise
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await rpc.fail(exc, context)
            finally:
                rpc.done(context, cancelled)

        return call
