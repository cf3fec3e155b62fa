"""The gRPC client and --server scoring against a real server on a free loopback port."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import grpc
import pytest

from client.__main__ import main
from client.api import RetryPolicy, SentimentClient, with_retries
from client.backends import ServerBackend
from client.scoring import ScoreOptions, score_file
from tests.client.conftest import make_reviews, start_server
from tests.client.helpers import probability, read_rows, write_rows
from tests.fixtures.tiny_repository import build_tiny_repository
from tests.serve.conftest import alone_scorer


def test_predict_batch_stream_and_health(server, reference) -> None:
    texts = make_reviews(40, seed=5)
    expected = reference(texts)
    with SentimentClient(server.address) as client:
        assert client.health() == "SERVING"
        one = client.predict(texts[0])
        assert one.probability == pytest.approx(expected[0], abs=1e-6)
        assert (one.model, one.version) == ("imdb-lstm", 1)
        batch = client.predict_batch(texts)
        assert [p.probability for p in batch] == pytest.approx(expected, abs=1e-6)
        assert [p.label for p in batch] == ["positive" if p >= 0.5 else "negative" for p in expected]
        requests = {f"req-{i}": texts[i:i + 7] for i in range(0, 40, 7)}
        answered = client.score_stream(requests, window=2)
        assert sorted(answered) == sorted(requests)
        for key, chunk in requests.items():
            start = int(key.split("-")[1])
            assert [p.probability for p in answered[key]] == pytest.approx(expected[start:start + len(chunk)],
                                                                           abs=1e-6)


def test_server_scoring_equals_local(tmp_path: Path, server, local_backend) -> None:
    rows = [{"id": str(i), "review": t, "sentiment": "positive" if i % 2 else "negative"}
            for i, t in enumerate(make_reviews(230, seed=9))]
    rows[3]["review"] = ""  # bad rows never reach the server
    source = write_rows(tmp_path / "in.csv", rows)
    options = ScoreOptions(chunk_rows=50, progress=False)
    backend = ServerBackend(server.address, batch_size=16, concurrency=3)
    try:
        remote = score_file(source, tmp_path / "server.csv", backend, options)
    finally:
        backend.close()
    local = score_file(source, tmp_path / "local.csv", local_backend, options)
    server_rows, local_rows = read_rows(tmp_path / "server.csv"), read_rows(tmp_path / "local.csv")
    assert [r["id"] for r in server_rows] == [r["id"] for r in rows]
    assert [probability(r["probability"]) for r in server_rows] == pytest.approx(
        [probability(r["probability"]) for r in local_rows], abs=1e-6)
    assert [r["label"] for r in server_rows] == [r["label"] for r in local_rows]
    assert remote["bad_rows"] == local["bad_rows"] == 1
    assert remote["evaluation"]["confusion_matrix"] == local["evaluation"]["confusion_matrix"]
    assert remote["backend"]["backend"] == "server" and remote["backend"]["version"] == 1


def test_unavailable_is_retried_until_the_model_is_loaded(tiny_model: Path, reference) -> None:
    starting = start_server(tiny_model.parents[1], load=False)  # listening, model not loaded yet
    sleeps: list[float] = []

    def load_while_backing_off(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == 2:
            starting.load()

    try:
        with SentimentClient(starting.address, retry=RetryPolicy(attempts=4, initial_backoff_s=0.01)) as client:
            assert client.health() == "NOT_SERVING"
            answered = client.score_stream({"a": ["great fun"], "b": ["awful"]}, sleep=load_while_backing_off)
            assert len(sleeps) == 2  # two UNAVAILABLE answers, then the loaded model answered
            assert [answered[k][0].probability for k in "ab"] == pytest.approx(reference(["great fun", "awful"]),
                                                                              abs=1e-6)
            assert main(["--server", starting.address, "health"]) == 0
    finally:
        starting.close()


def test_scoring_fits_its_window_to_a_small_server_queue(tmp_path: Path) -> None:
    """Field report: requests of 8 texts, several in flight, against a queue of 8 texts were refused on every
    retry."""
    # One step loop reading one row a token at a time: slow enough that the queue fills.
    repository = build_tiny_repository(tmp_path / "repo", steps=True)
    reference = alone_scorer(repository)
    small = start_server(repository, max_queue_size=8, max_texts_per_request=8, batching="steps",
                         workers=1, max_active_rows=1, step_tokens=1)
    texts = make_reviews(100, seed=4)
    source = write_rows(tmp_path / "in.txt", [{"text": t} for t in texts])
    backend = ServerBackend(small.address, batch_size=8, concurrency=4)
    backend.client.retry = RetryPolicy(attempts=10, initial_backoff_s=0.01, max_backoff_s=0.05)
    try:
        summary = score_file(source, tmp_path / "out.csv", backend, ScoreOptions(chunk_rows=50, progress=False))
    finally:
        backend.close()
        small.close()
    assert summary["bad_rows"] == 0
    assert [probability(r["probability"]) for r in read_rows(tmp_path / "out.csv")] == pytest.approx(
        reference(texts), abs=1e-6)


def test_text_the_server_refuses_is_a_bad_row(tmp_path: Path, tiny_model: Path, reference) -> None:
    strict = start_server(tiny_model.parents[1], max_chars_per_text=1000)
    texts = make_reviews(30, seed=2)
    texts[11] = "great fun " * 150  # 1500 characters: over this server's limit
    source = write_rows(tmp_path / "in.txt", [{"text": t} for t in texts])
    backend = ServerBackend(strict.address, batch_size=4, concurrency=2)
    try:
        summary = score_file(source, tmp_path / "out.jsonl", backend, ScoreOptions(chunk_rows=8, progress=False))
    finally:
        backend.close()
        strict.close()
    out = read_rows(tmp_path / "out.jsonl")
    assert summary["bad_rows"] == 1 and summary["bad_row_examples"][0]["row"] == 12
    # The server advertised its limit (GetLimits): the client refuses the text in its words, without a call.
    assert "has 1500 characters; the server accepts at most 1000" in summary["bad_row_examples"][0]["error"]
    assert out[11]["probability"] is None and out[11]["label"] is None
    scored = [i for i in range(30) if i != 11]
    assert [out[i]["probability"] for i in scored] == pytest.approx(reference([texts[i] for i in scored]), abs=1e-6)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_with_retries_backs_off_on_retryable_codes_only() -> None:
    outcomes = [FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED), FakeRpcError(grpc.StatusCode.UNAVAILABLE), "ok"]
    delays: list[float] = []

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    policy = RetryPolicy(attempts=5, initial_backoff_s=0.1, max_backoff_s=0.15)
    assert with_retries(call, policy, delays.append) == "ok"
    assert len(delays) == 2 and all(0 <= d <= 0.15 for d in delays)
    with pytest.raises(FakeRpcError):  # INVALID_ARGUMENT is the caller's fault: no retry
        with_retries(lambda: (_ for _ in ()).throw(FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)), policy,
                     delays.append)
    assert len(delays) == 2
    always = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(FakeRpcError):
        with_retries(lambda: (_ for _ in ()).throw(always), RetryPolicy(attempts=3), delays.append)
    assert len(delays) == 4  # 3 attempts, 2 backoffs


def test_no_server_fails_cleanly(capsys) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    retry = RetryPolicy(attempts=2, initial_backoff_s=0.01)
    with SentimentClient(address, timeout_s=2, retry=retry) as client, pytest.raises(grpc.RpcError) as caught:
        client.predict("great")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert main(["--server", address, "--timeout", "2", "predict", "great"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_cli_predict_and_health(server, reference, capsys) -> None:
    assert main(["--server", server.address, "predict", "great fun", "a dull mess", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in lines] == ["great fun", "a dull mess"]
    assert [r["probability"] for r in lines] == pytest.approx(reference(["great fun", "a dull mess"]), abs=1e-6)
    assert main(["--server", server.address, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert main(["health", "--server", server.address]) == 0  # either side of the subcommand


def test_cli_score_through_the_server(tmp_path: Path, server, reference) -> None:
    texts = make_reviews(20, seed=4)
    source = write_rows(tmp_path / "in.txt", [{"text": t} for t in texts])
    assert main(["score", str(source), "--output", str(tmp_path / "out.csv"), "--server", server.address,
                 "--batch-size", "8", "--concurrency", "2", "--no-progress"]) == 0
    out = read_rows(tmp_path / "out.csv")
    assert [float(r["probability"]) for r in out] == pytest.approx(reference(texts), abs=1e-6)


def test_server_scoring_needs_no_onnxruntime(tmp_path: Path, server, reference) -> None:
    """The client image installs only gRPC, numpy, tqdm and pyarrow: score --server must run there."""
    import subprocess

    texts = make_reviews(12, seed=8)
    source = write_rows(tmp_path / "in.jsonl", [{"review": t} for t in texts])
    blocked = ("onnxruntime", "tokenizers", "ray", "torch", "serve", "runtime")
    code = (f"import sys; sys.modules.update(dict.fromkeys({blocked!r})); "  # None: importing them fails
            "from client.__main__ import main; "
            f"sys.exit(main(['score', {str(source)!r}, '--output', {str(tmp_path / 'out.jsonl')!r}, "
            f"'--server', {server.address!r}, '--no-progress']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["probability"] for r in read_rows(tmp_path / "out.jsonl")] == pytest.approx(reference(texts), abs=1e-6)
