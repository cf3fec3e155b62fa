"""Reliability fixtures: the tiny real model, servers in-process and as ``python -m serve`` processes.

Every server binds loopback only; every process started here is stopped by its fixture.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fixtures.server_thread import ServerThread, make_settings
from tests.fixtures.tiny_repository import build_tiny_repository
from tests.serve.test_process import ServeProcess

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the machine is shared: no extra pools in tests

TIMEOUT = 30.0
# Explicit thread counts for every subprocess server: the machine has two shared cores.
PROCESS_THREADS = ["--intra-op-threads", "1", "--workers", "1"]


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real model repository (fp32), shared by every reliability test."""
    return build_tiny_repository(tmp_path_factory.mktemp("reliability_repo"))


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    """A loaded server with the shipped default limits, one per test module."""
    running = ServerThread(make_settings(repository))
    yield running
    running.close()


def health_status(channel: grpc.Channel) -> str:
    """The server's overall health status name."""
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def start_process(repository: Path, *args: str) -> tuple[ServeProcess, int, str]:
    """``python -m serve`` on the tiny model, SERVING; returns it, its gRPC port and its metrics URL."""
    process = ServeProcess(["--model-repository", str(repository), "--metrics-port", "0", *PROCESS_THREADS,
                            *(() if "--http-port" in args else ("--http-port", "0")),
                            *(args if "--port" in args else ("--port", "0", *args))])
    try:
        listening = process.wait_log("listening")
        process.wait_log("serving")
    except BaseException:
        process.kill()
        raise
    port = int(re.search(r":(\d+)$", listening["address"]).group(1))
    return process, port, f"http://127.0.0.1:{listening['metrics_port']}/metrics"


def metrics_url(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.server.metrics_port}/metrics"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``condition`` until it holds (bounded): waits for a state, never for a duration."""
    until = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.01)
