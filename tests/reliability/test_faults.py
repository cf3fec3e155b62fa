"""Faults on real ``python -m serve`` processes: SIGTERM under load, SIGKILL and restart on the same port.

tests/serve/test_process.py already checks that a stream and four unary calls in flight
across a SIGTERM finish; here the server is under sustained mixed load when it is stopped
or killed, and the clients (the library's retry policy, the batch scorer's --resume) must
carry on across a restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench.load import Outcome, closed_loop, metric, summarize
from bench.machine import free_port
from client.api import SentimentClient
from tests.client.helpers import read_rows
from tests.client.test_resume import committed, csv_text, rows
from tests.conftest import REPO_ROOT
from tests.reliability.conftest import TIMEOUT, start_process, wait_until
from tests.reliability.test_soak import soak_texts

API_METHODS = ("/sentiment.v1.SentimentService/", "/inference.GRPCInferenceService/ModelInfer")


def test_sigterm_under_load_finishes_every_admitted_call_and_refuses_new_ones_with_unavailable(
        repository: Path) -> None:
    # debug: one access-log line per RPC, so the server's own account of every call it handled is known.
    process, port, metrics = start_process(repository, "--grace-period-s", "20", "--log-level", "debug")
    stop = threading.Event()
    result: list[Outcome] = []
    load = threading.Thread(target=lambda: asyncio.run(closed_loop(
        f"127.0.0.1:{port}", soak_texts(), clients=12, seconds=TIMEOUT, max_requests=50_000, stop=stop,
        pause_after_refusal_s=0.01, record=result)))
    try:
        load.start()
        wait_until(lambda: metric(metrics, "sentiment_requests_total") >= 100, "load to reach the server")
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(TIMEOUT) == 0
        process.wait_log("stopped")
        wait_until(lambda: any(o.code == "UNAVAILABLE" for o in result), "a call refused after the SIGTERM")
    finally:
        stop.set()
        load.join(TIMEOUT * 2)
        process.kill()
    summary = summarize(result)
    print(f"SIGTERM under load: {summary}")
    codes = summary["codes"]
    # Refused calls get UNAVAILABLE (retryable). A call that reaches the server in the instant grpc
    # begins its shutdown is cancelled by grpc itself (CANCELLED, before any handler runs: the
    # server's log below has no such call); a known limit, see docs/reliability.md.
    # Rarely (1 run in about 35 here, on a loaded machine) grpc's transport ends a call racing the
    # connection teardown with INTERNAL (an RST_STREAM or GOAWAY; grpc/grpc issue 14109 calls this an
    # inherent corner case of shutdown). That is not the server's answer: its own INTERNAL always reads
    # "internal error (...)", and the server log below shows every handled call ended OK.
    transport = [o for o in result if o.code == "INTERNAL" and not o.details.startswith("internal error (")]
    unexpected = [(o.kind, o.code, o.details) for o in result
                  if o.code not in ("OK", "UNAVAILABLE", "CANCELLED") and o not in transport]
    assert "UNAVAILABLE" in codes and not unexpected, (codes, unexpected[:5])
    assert codes.get("CANCELLED", 0) + len(transport) <= 12, codes  # at most one racing call per client
    # Every call the server began handling ended OK there, and the clients saw each of those answers.
    handled = [line for line in process.lines if line.get("msg") == "rpc" and line["method"].startswith(API_METHODS)]
    assert {line["code"] for line in handled} == {"OK"}
    assert len(handled) == summary["codes"]["OK"]


def test_client_retry_policy_recovers_across_sigkill_and_restart_on_the_same_port(repository: Path) -> None:
    port = free_port()
    first, _, _ = start_process(repository, "--port", str(port))
    second = None
    # The default policy: it must outlast a restart by itself.
    client = SentimentClient(f"127.0.0.1:{port}", timeout_s=TIMEOUT)
    try:
        before = client.predict("a wonderful film")
        first.proc.kill()
        assert first.proc.wait(TIMEOUT) == -signal.SIGKILL
        answers: list = []
        # Called while nothing listens: it must wait out the restart through its retries.
        caller = threading.Thread(target=lambda: answers.append(_attempt(lambda: client.predict("a wonderful film"))))
        caller.start()
        second, _, _ = start_process(repository, "--port", str(port))
        caller.join(TIMEOUT * 2)
        assert not caller.is_alive()
        assert answers == [before]
        assert client.predict_batch(["a wonderful film", "a dull mess"])[0] == before
    finally:
        client.close()
        first.kill()
        if second is not None:
            second.kill()


def _attempt(call):
    """The call's result, or the exception it raised (so a failing thread is reported by the test)."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - handed to the test's assertion
        return exc


def test_batch_scorer_and_server_killed_mid_run_resume_without_loss_or_duplicates(repository: Path,
                                                                                   tmp_path: Path) -> None:
    """The server dies under the scorer mid-run; after a restart, --resume completes the file exactly once.

    As in tests/client/test_resume.py, the input is a FIFO the test feeds, so "mid-run" is a
    state (9 chunks committed, the scorer waiting for rows), not a moment.
    """
    port = free_port()
    data = rows(150)
    fifo, output = tmp_path / "in.csv", tmp_path / "out.csv"
    os.mkfifo(fifo)
    server, _, _ = start_process(repository, "--port", str(port))
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(REPO_ROOT))

    def scorer(source: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "client", "score", str(source), "--output", str(output),
                "--server", f"127.0.0.1:{port}", "--chunk-rows", "10", "--batch-size", "4", "--concurrency", "2",
                "--timeout", "5", "--no-progress", *extra]

    restarted = None
    proc = subprocess.Popen(scorer(fifo), cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        with fifo.open("w", encoding="utf-8") as feed:
            feed.write(csv_text(data[:95], header=True))
            feed.flush()
            wait_until(lambda: committed(output) >= 9 or proc.poll() is not None, "9 committed chunks", 60)
            assert proc.poll() is None, proc.stderr.read()
            server.proc.kill()  # the server dies; the scorer then gets the rest of its input
            server.proc.wait(TIMEOUT)
            feed.write(csv_text(data[95:], header=False))
        _, errors = proc.communicate(timeout=60)  # it retries, then gives up: the chunk is not committed
        assert proc.returncode == 1 and "UNAVAILABLE" in errors, errors
        assert committed(output) == 9 and not output.exists()

        restarted, _, _ = start_process(repository, "--port", str(port))
        fifo.unlink()  # the resumed run reads the same rows from a regular file
        fifo.write_text(csv_text(data, header=True), encoding="utf-8")
        resumed = subprocess.run(scorer(fifo, "--resume"), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                 timeout=120)
        assert resumed.returncode == 0, resumed.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        server.kill()
        if restarted is not None:
            restarted.kill()
    out = read_rows(output)
    assert [r["id"] for r in out] == [r["id"] for r in data]  # each row exactly once, in order
    assert [r["review"] for r in out] == [r["review"] for r in data]
    assert [float(r["probability"]) for r in out] == pytest.approx(reference(repository, [r["review"] for r in data]),
                                                                   abs=1e-6)


def reference(repository: Path, texts: list[str]) -> list[float]:
    """P(positive) of each text, in-process, from the same model version the server served."""
    from client.backends import LocalBackend

    backend = LocalBackend(repository / "imdb-lstm" / "1", threads=1, batch_size=16)
    try:
        return [float(p) for p in backend.score(texts)[0]]
    finally:
        backend.close()

