"""``python -m serve`` as a real process: start-up, SIGTERM drain, exit codes, no torch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.conftest import REPO_ROOT

TIMEOUT = 30.0


def env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_WAIT_POLICY="PASSIVE", **extra)


class ServeProcess:
    """``python -m serve`` on a free port; its JSON log lines are collected as they arrive."""

    def __init__(self, args: list[str], **extra_env: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "serve", *args], cwd=REPO_ROOT, env=env(**extra_env),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[dict] = []
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(json.loads(line) if line.startswith("{") else {"msg": line.rstrip()})
                self._new.notify_all()
        with self._new:
            self.lines.append({"msg": "<eof>"})
            self._new.notify_all()

    def wait_log(self, msg: str) -> dict:
        """The first log line whose message is ``msg`` (waits for it, bounded)."""
        until = time.monotonic() + TIMEOUT
        with self._new:
            while True:
                for line in self.lines:
                    if line.get("msg") == msg:
                        return line
                    if line.get("msg") == "<eof>":
                        raise AssertionError(f"server exited before logging {msg!r}: {self.lines}")
                assert self._new.wait(until - time.monotonic()), f"no {msg!r} in {self.lines}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


def scrape(url: str, method: str) -> float:
    """RPCs of ``method`` the server has started: in flight now plus answered."""
    text = urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()
    pattern = rf'^sentiment_(?:requests_in_flight|requests_total)\{{[^}}]*{method}[^}}]*\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


@pytest.fixture
def serve_process(repository: Path) -> Iterator[ServeProcess]:
    process = ServeProcess(["--model-repository", str(repository), "--port", "0", "--metrics-port", "0",
                            "--http-port", "0", "--intra-op-threads", "1", "--grace-period-s", "20"])
    yield process
    process.kill()


def test_sigterm_drains_in_flight_requests_then_exits_zero(serve_process: ServeProcess) -> None:
    listening = serve_process.wait_log("listening")
    port = re.search(r":(\d+)$", listening["address"]).group(1)
    metrics_url = f"http://127.0.0.1:{listening['metrics_port']}/metrics"
    serve_process.wait_log("serving")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

    # A stream in flight across the SIGTERM: its first answer proves it is open on the server.
    outbox: list[pb.PredictStreamRequest | None] = [pb.PredictStreamRequest(id="before", texts=["great film"])]
    ready = threading.Condition()

    def requests() -> Iterator[pb.PredictStreamRequest]:
        sent = 0
        while True:
            with ready:
                assert ready.wait_for(lambda sent=sent: len(outbox) > sent, TIMEOUT)
                item = outbox[sent]
            sent += 1
            if item is None:
                return
            yield item

    def push(item: pb.PredictStreamRequest | None) -> None:
        with ready:
            outbox.append(item)
            ready.notify_all()

    stream = pb_grpc.SentimentServiceStub(channel).PredictStream(requests(), timeout=TIMEOUT)
    assert next(stream).id == "before"
    texts = ["a fine film, " * 150, "an awful film, " * 150] * 256  # heavy enough to be in flight a while
    unary = [pb_grpc.SentimentServiceStub(channel).PredictBatch.future(pb.PredictBatchRequest(texts=texts),
                                                                         timeout=TIMEOUT) for _ in range(4)]
    # SIGTERM only once the server has started handling all four (in flight or already done), so
    # none of them may be lost; calls that never reached a handler would be refused, not drained.
    until = time.monotonic() + TIMEOUT
    while (in_flight := scrape(metrics_url, "PredictBatch")) < 4:
        assert time.monotonic() < until, f"the server saw only {in_flight} of 4 requests"
        time.sleep(0.005)

    os.kill(serve_process.proc.pid, signal.SIGTERM)
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # an open Watch is an in-flight call too; let the drain finish early
    for i in range(5):
        push(pb.PredictStreamRequest(id=f"after-{i}", texts=["a dull mess", "loved it"]))
    push(None)
    after = [reply.id for reply in stream]
    assert sorted(after) == [f"after-{i}" for i in range(5)]
    assert [len(future.result().predictions) for future in unary] == [len(texts)] * 4
    assert serve_process.proc.wait(TIMEOUT) == 0
    serve_process.wait_log("stopped")
    channel.close()


def test_bad_configuration_exits_two_with_a_clear_message(repository: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "serve", "--model-repository", str(repository), "--port", "0",
                           "--metrics-port", "-1", "--http-port", "-1", "--device", "cuda"], cwd=REPO_ROOT, env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1 or done.returncode == 2
    assert "CUDA" in done.stderr and "--allow-cpu-fallback" in done.stderr
    done = subprocess.run([sys.executable, "-m", "serve", "--port", "0", "--http-port", "0"], cwd=REPO_ROOT,
                          env=env(SENTIMENT_MAX_BATCH_SIZE="0"), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and "max_batch_size must be >= 1" in done.stderr


def test_serving_never_imports_torch(repository: Path) -> None:
    code = f"""
import asyncio, sys
from serve.ops.settings import load_settings
from serve.server import create_server
import serve.__main__, client  # noqa
async def main():
    server, port = create_server(load_settings(["--model-repository", {str(repository)!r}, "--port", "0",
                                                "--metrics-port", "-1", "--http-port", "0", "--intra-op-threads", "1"]))
    await server.start(); await server.load()
    (prediction,) = (await server.core.predict(["a fine film"])).predictions
    await server.stop(0)
    return prediction
print(asyncio.run(main()).label)
assert "torch" not in sys.modules, "torch was imported"
print("no torch")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() in (["positive", "no", "torch"], ["negative", "no", "torch"])
