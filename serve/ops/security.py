"""Transport security and token authentication of the gRPC port (docs/security.md).

:func:`server_credentials` turns ``--tls-cert``/``--tls-key``/``--tls-client-ca`` into grpc
server credentials. :class:`TokenAuthInterceptor` refuses calls without a configured bearer
token (``authorization: Bearer <token>`` metadata) with UNAUTHENTICATED; health checking and
reflection stay open so orchestrators and grpcurl can probe. It sits inside
:class:`serve.ops.edge.EdgeInterceptor`, so refusals are counted and access-logged like any call.
Token values are never logged, echoed to clients, or kept in memory beyond their digests.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from serve.ops.edge import handler_like
from serve.ops.errors import ConfigurationError
from serve.ops.settings import Settings

# Services anyone may call: probes must work without secrets. Both reflection versions are
# listed because clients (grpcurl, grpc_cli) try v1 first, then v1alpha.
OPEN_SERVICES = frozenset({
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})
AUTH_HEADER = "authorization"
SCHEME = "bearer"


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
        values = [value for key, value in metadata or () if key == AUTH_HEADER]
        if not values:
            return "missing credentials: send the metadata 'authorization: Bearer <token>'"
        if len(values) > 1:
            return "send exactly one 'authorization' metadata entry"
        value = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != SCHEME or not token.strip():
            return "malformed 'authorization' metadata: expected 'Bearer <token>'"
        candidate = _digest(token.strip().encode("utf-8"))
        matched = False
        for digest in self._digests:  # every token, no early exit: timing tells nothing about which
            matched |= hmac.compare_digest(candidate, digest)
        return None if matched else "invalid token"


def _service_of(method: str) -> str:
    """``/grpc.health.v1.Health/Check`` -> ``grpc.health.v1.Health``."""
    return method.lstrip("/").split("/", 1)[0]


def _refusing(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler shaped like ``handler`` (so the edge wraps it the same way) that answers UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    return handler_like(handler, refuse, handler.request_deserializer)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with a valid bearer token, except health checking and reflection."""

    def __init__(self, checker: TokenChecker) -> None:
        self._checker = checker

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) in OPEN_SERVICES:
            return handler
        reason = self._checker.refusal(handler_call_details.invocation_metadata)
        return handler if reason is None else _refusing(handler, reason)


def auth_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The token interceptor when ``--auth-token-file`` is set, else nothing."""
    if settings.auth_token_file is None:
        return []
    return [TokenAuthInterceptor(TokenChecker(read_tokens(settings.auth_token_file)))]


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
