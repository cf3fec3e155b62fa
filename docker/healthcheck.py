"""Container health check: asks the server's standard gRPC health service (grpc.health.v1).

Exit 0 when the server answers SERVING, 1 otherwise (Docker's HEALTHCHECK contract). The
address and transport come from the same SENTIMENT_* variables the server reads, so a changed
port, listen address or TLS setting needs no second setting; a wildcard listen address is
checked on loopback.

TLS (``SENTIMENT_TLS_CERT`` set): the server is verified against ``HEALTHCHECK_TLS_CA`` (PEM),
or, without it, against the server's own certificate chain (enough for a self-signed
certificate or a chain that includes its root). ``HEALTHCHECK_TLS_SERVER_NAME`` is the name to
expect in the certificate when it does not name the address checked (127.0.0.1).
Mutual TLS (``SENTIMENT_TLS_CLIENT_CA`` set): the check presents ``HEALTHCHECK_TLS_CERT`` and
``HEALTHCHECK_TLS_KEY``, a client certificate signed by that CA. Health needs no token.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


class HealthcheckError(Exception):
    """The check's own configuration is unusable (a file missing, a client certificate not given)."""


def target(environ: Mapping[str, str]) -> str:
    host = environ.get("SENTIMENT_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{environ.get('SENTIMENT_PORT', '8001')}"


def _read(environ: Mapping[str, str], name: str) -> bytes:
    path = environ[name]
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise HealthcheckError(f"{name}={path}: cannot read it ({exc.strerror or exc})") from exc


def _set(environ: Mapping[str, str], name: str) -> bool:
    return bool(environ.get(name, "").strip())


def channel(environ: Mapping[str, str]) -> grpc.Channel:
    """A channel to the server as its settings describe it: plaintext, TLS or mutual TLS."""
    address = target(environ)
    if not _set(environ, "SENTIMENT_TLS_CERT"):
        return grpc.insecure_channel(address)
    roots = _read(environ, "HEALTHCHECK_TLS_CA" if _set(environ, "HEALTHCHECK_TLS_CA") else "SENTIMENT_TLS_CERT")
    key = chain = None
    if _set(environ, "SENTIMENT_TLS_CLIENT_CA"):
        if not (_set(environ, "HEALTHCHECK_TLS_CERT") and _set(environ, "HEALTHCHECK_TLS_KEY")):
            raise HealthcheckError("the server requires client certificates (SENTIMENT_TLS_CLIENT_CA): set "
                                   "HEALTHCHECK_TLS_CERT and HEALTHCHECK_TLS_KEY to one signed by that CA")
        chain, key = _read(environ, "HEALTHCHECK_TLS_CERT"), _read(environ, "HEALTHCHECK_TLS_KEY")
    options = []
    if _set(environ, "HEALTHCHECK_TLS_SERVER_NAME"):
        options.append(("grpc.ssl_target_name_override", environ["HEALTHCHECK_TLS_SERVER_NAME"]))
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(roots, key, chain), options)


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    timeout = float(environ.get("HEALTHCHECK_TIMEOUT_S", "2"))
    address = target(environ)
    try:
        with channel(environ) as open_channel:
            reply = health_pb2_grpc.HealthStub(open_channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                   timeout=timeout)
    except HealthcheckError as exc:
        print(f"{address}: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"{address}: {exc.code().name} {exc.details() or ''}".rstrip(), file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
