"""Transport security, token authentication and admission limits of the gRPC port (docs/security.md).

:func:`server_credentials` turns ``--tls-cert``/``--tls-key``/``--tls-client-ca`` into grpc
server credentials. :class:`TokenAuthInterceptor` refuses calls without a configured bearer
token (``authorization: Bearer <token>`` metadata) with UNAUTHENTICATED; health checking and
reflection stay open so orchestrators and grpcurl can probe. :class:`CallLimitInterceptor`
caps the calls in flight (``--max-calls-in-flight``, ``--max-open-calls-in-flight``).

Both decide from the method name and metadata alone, when the call arrives: a refused call is
answered by a handler that takes the request as a stream and never reads it, so its message
(up to ``--max-message-bytes``) is neither buffered whole nor parsed. They sit inside
:class:`serve.ops.edge.EdgeInterceptor`, so refusals are counted and access-logged like any call.
Token values are never logged, echoed to clients, or kept in memory beyond their digests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2

from serve.ops.errors import ConfigurationError
from serve.ops.logs import RateLimitedWarning
from serve.ops.settings import Settings

log = logging.getLogger("serve.security")

# Services anyone may call: probes must work without secrets. Both reflection versions are
# listed because clients (grpcurl, grpc_cli) try v1 first, then v1alpha.
OPEN_SERVICES = frozenset({
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
AUTH_HEADER = "authorization"
SCHEME = "bearer"


def check_token_file_mode(path: Path, strict: bool) -> None:
    """Warn (``strict``: refuse with :class:`ConfigurationError`) when users other than the file's owner
    and group may read ``path``: anyone on the host could then call the server."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigurationError(f"cannot read --auth-token-file {path}: {exc}") from exc
    if not mode & stat.S_IROTH:
        return
    message = (f"--auth-token-file {path} is readable by every user (mode {stat.filemode(mode)}): "
               f"run `chmod o-rwx {path}` (or mount it as a secret readable by the server's user only)")
    if strict:
        raise ConfigurationError(message + "; refused because of --strict-token-file")
    log.warning("token file readable by every user", extra={"path": str(path), "mode": stat.filemode(mode),
                                                            "advice": message})


def read_tokens(path: Path) -> list[str]:
    """The tokens in ``path``: one per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read --auth-token-file {path}: {exc}") from exc
    tokens = []
    for number, line in enumerate(lines, 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if len(token.split()) != 1:  # the message names the line, never its content
            raise ConfigurationError(f"--auth-token-file {path} line {number}: a token is one word without "
                                     "spaces (write the token alone, not 'Bearer <token>')")
        tokens.append(token)
    if not tokens:
        raise ConfigurationError(f"--auth-token-file {path} holds no token (one per line; '#' starts a comment)")
    return tokens


def _digest(token: bytes) -> bytes:
    # Comparing fixed-length digests keeps compare_digest constant-time and hides token lengths.
    return hashlib.sha256(token).digest()


class TokenChecker:
    """Accepts the bearer tokens it was built with; compares in constant time."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ConfigurationError("token authentication needs at least one token")
        self._digests = [_digest(token.encode("utf-8")) for token in tokens]

    def refusal(self, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
        """Why a call with this invocation metadata is refused, or None when it may proceed."""
        refused = self.check(metadata)
        return None if refused is None else refused[1]

    def check(self, metadata: Sequence[tuple[str, Any]] | None) -> tuple[str, str] | None:
        """None when a call with this metadata may proceed, else (kind, message to the client); kind is
        one of ``missing``, ``malformed``, ``invalid`` (the failure metric's label)."""
        values = [value for key, value in metadata or () if key == AUTH_HEADER]
        if not values:
            return "missing", "missing credentials: send the metadata 'authorization: Bearer <token>'"
        if len(values) > 1:
            return "malformed", "send exactly one 'authorization' metadata entry"
        value = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != SCHEME or not token.strip():
            return "malformed", "malformed 'authorization' metadata: expected 'Bearer <token>'"
        candidate = _digest(token.strip().encode("utf-8"))
        matched = False
        for digest in self._digests:  # every token, no early exit: timing tells nothing about which
            matched |= hmac.compare_digest(candidate, digest)
        return None if matched else ("invalid", "invalid token")


def _service_of(method: str) -> str:
    """``/grpc.health.v1.Health/Check`` -> ``grpc.health.v1.Health``."""
    return method.lstrip("/").split("/", 1)[0]


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, reason: str,
              on_refusal: Callable[[grpc.aio.ServicerContext], None]) -> grpc.RpcMethodHandler:
    """A handler that answers ``code`` without reading the request.

    It takes the request as a stream whatever the method's kind (the wire format is the same),
    so grpc.aio hands it an iterator it never advances instead of first receiving and parsing
    the whole message, as it does for a unary request. The response side keeps ``handler``'s
    kind, so the edge wraps it like the real one. ``on_refusal`` gets the context (the peer).
    """
    if handler.response_streaming:
        async def refuse_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _abort(context, code, reason, on_refusal)
            yield  # pragma: no cover - abort raises; the yield only makes this an async generator

        return grpc.stream_stream_rpc_method_handler(refuse_stream, response_serializer=handler.response_serializer)

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await _abort(context, code, reason, on_refusal)

    return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=handler.response_serializer)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, reason: str,
                 on_refusal: Callable[[grpc.aio.ServicerContext], None]) -> None:
    """Record the refusal and answer it; raises grpc's AbortError, or returns if the client already left."""
    on_refusal(context)
    try:
        await context.abort(code, reason)
    except grpc.aio.AbortError:
        raise
    except Exception:  # the client cancelled first: grpc cannot send the status, and nobody waits for it
        return


class RefusalObserver(Protocol):
    """Counts refused calls (the metrics module implements it)."""

    def auth_failed(self, kind: str) -> None: ...

    def limit_hit(self, limit: str) -> None: ...


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with a valid bearer token, except health checking and reflection.

    Failures are counted by kind (``observer.auth_failed``) and logged as a warning with the
    peer address, at most one line per ``log_interval_s`` (with the count since the last line).
    """

    def __init__(self, checker: TokenChecker, observer: RefusalObserver | None = None,
                 log_interval_s: float = 60.0) -> None:
        self._checker = checker
        self._observer = observer
        self._warn = RateLimitedWarning(log, "authentication failed", log_interval_s)

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) in OPEN_SERVICES:
            return handler
        refused = self._checker.check(handler_call_details.invocation_metadata)
        if refused is None:
            return handler
        kind, reason = refused
        method = handler_call_details.method

        def record(context: grpc.aio.ServicerContext) -> None:
            if self._observer is not None:
                self._observer.auth_failed(kind)
            self._warn.hit(peer=context.peer(), method=method, reason=kind)

        return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, reason, record)


class CallLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls beyond ``max_calls`` in flight (``max_open_calls`` for health and reflection) with
    RESOURCE_EXHAUSTED, before their message is read.

    A call counts from its arrival (the interceptors run in the task grpc.aio starts for it,
    before it receives the request) until that task ends, so a call still uploading its message
    counts too. Refusals are counted (``observer.limit_hit``) and logged, rate-limited.
    """

    def __init__(self, max_calls: int, max_open_calls: int, observer: RefusalObserver | None = None,
                 log_interval_s: float = 60.0) -> None:
        self._limits = {"calls": max_calls, "open_calls": max_open_calls}
        self._in_flight = {"calls": 0, "open_calls": 0}
        self._observer = observer
        self._warn = RateLimitedWarning(log, "call limit reached: calls refused with RESOURCE_EXHAUSTED",
                                        log_interval_s)

    @property
    def in_flight(self) -> dict[str, int]:
        """Calls counted now, by limit."""
        return dict(self._in_flight)

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        task = asyncio.current_task()
        if handler is None or task is None:
            return handler
        counted = ["calls"] + (["open_calls"] if _service_of(handler_call_details.method) in OPEN_SERVICES else [])
        full = next((name for name in counted if self._in_flight[name] >= self._limits[name]), None)
        if full is not None:
            flag = "--max-calls-in-flight" if full == "calls" else "--max-open-calls-in-flight"
            reason = f"server busy: {self._limits[full]} calls in flight ({flag}); retry with backoff"
            method = handler_call_details.method

            def record(context: grpc.aio.ServicerContext) -> None:
                if self._observer is not None:
                    self._observer.limit_hit(full)
                self._warn.hit(peer=context.peer(), method=method, limit=flag, value=self._limits[full])

            return _refusing(handler, grpc.StatusCode.RESOURCE_EXHAUSTED, reason, record)
        for name in counted:
            self._in_flight[name] += 1
        task.add_done_callback(lambda _: self._release(counted))
        return handler

    def _release(self, counted: list[str]) -> None:
        for name in counted:
            self._in_flight[name] -= 1


def admission_interceptors(settings: Settings, observer: RefusalObserver | None = None
                           ) -> list[grpc.aio.ServerInterceptor]:
    """The call limits, then the token check when ``--auth-token-file`` is set (outermost first)."""
    interceptors: list[grpc.aio.ServerInterceptor] = [
        CallLimitInterceptor(settings.max_calls_in_flight, settings.max_open_calls_in_flight, observer)]
    if settings.auth_token_file is not None:
        check_token_file_mode(settings.auth_token_file, settings.strict_token_file)
        interceptors.append(TokenAuthInterceptor(TokenChecker(read_tokens(settings.auth_token_file)), observer))
    return interceptors


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, or None for plaintext.

    With ``--tls-client-ca`` the handshake requires a client certificate signed by that CA:
    a client without one, or with one from another CA, never reaches a handler.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    check_tls_files(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    try:
        chain = settings.tls_cert.read_bytes()
        key = settings.tls_key.read_bytes()
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca is not None else None
    except OSError as exc:
        raise ConfigurationError(f"cannot read a TLS file: {exc}") from exc
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def check_tls_files(cert: Path, key: Path, client_ca: Path | None) -> None:
    """Refuse unusable TLS files with the reason; grpc itself would only fail to bind the port.

    Parsed with the standard library's OpenSSL bindings: same PEM formats grpc accepts.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key gets an empty password and fails here instead of prompting on a TTY.
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        reason = ("the private key does not belong to the certificate" if "KEY_VALUES_MISMATCH" in str(exc)
                  else "expected a PEM certificate chain and an unencrypted PEM private key (grpc cannot use "
                       "encrypted keys; DER converts with `openssl x509 -inform der` / `openssl pkey -inform der`)")
        raise ConfigurationError(f"--tls-cert {cert} with --tls-key {key}: {reason}") from exc
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError as exc:
            raise ConfigurationError(f"--tls-client-ca {client_ca}: no PEM CA certificate in it") from exc
