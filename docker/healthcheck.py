"""Container health check: asks the server's standard gRPC health service (grpc.health.v1).

Exit 0 when the server answers SERVING, 1 otherwise (Docker's HEALTHCHECK contract). The
address comes from the same SENTIMENT_* variables the server reads, so a changed port or
listen address needs no second setting; a wildcard listen address is checked on loopback.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def target(environ: dict[str, str]) -> str:
    host = environ.get("SENTIMENT_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{environ.get('SENTIMENT_PORT', '8001')}"


def main() -> int:
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "2"))
    address = target(dict(os.environ))
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=timeout)
    except grpc.RpcError as exc:
        print(f"{address}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
