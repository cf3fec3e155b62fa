"""``--batching steps`` end to end: a real server on the tiny model with a step graph."""

from __future__ import annotations

import logging
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.grpc.kserve_codec import encode_bytes_tensor
from serve.ops.errors import ConfigurationError
from serve.ops.settings import load_settings
from tests.fixtures.tiny_repository import build_tiny_repository
from tests.serve.conftest import REVIEWS, ServerThread, alone_scorer, make_settings

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def steps_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serve tests' tiny model (same weights, fp32 and int8) with its step graph."""
    return build_tiny_repository(tmp_path_factory.mktemp("steps_repo"), int8=True, steps=True)


@pytest.fixture(scope="module")
def steps_reference(steps_repository: Path):
    """Each text scored alone by the same version's whole graph (tiny tokenizers differ between builds)."""
    return alone_scorer(steps_repository)


@pytest.fixture(scope="module")
def steps_server(steps_repository: Path):
    running = ServerThread(make_settings(steps_repository, batching="steps", step_tokens=4, max_active_rows=3))
    yield running
    running.close()


def scrape(server: ServerThread) -> str:
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()


def sample(text: str, name: str) -> float:
    """The value of an unlabelled series in a Prometheus text page."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not on the metrics page"
    return float(match.group(1))


def test_steps_give_every_text_its_whole_sequence_answer(steps_server, steps_reference) -> None:
    api = pb_grpc.SentimentServiceStub(steps_server.channel)
    reply = api.PredictBatch(pb.PredictBatchRequest(texts=REVIEWS), timeout=TIMEOUT)
    expected = steps_reference(REVIEWS)
    np.testing.assert_allclose([p.probability for p in reply.predictions], expected, atol=1e-5, rtol=0)
    assert [p.label for p in reply.predictions] == ["positive" if p >= 0.5 else "negative" for p in expected]
    one = api.Predict(pb.PredictRequest(text=REVIEWS[2]), timeout=TIMEOUT)
    assert abs(one.prediction.probability - steps_reference([REVIEWS[2]])[0]) <= 1e-5


def test_concurrent_requests_among_any_batch_mates(steps_server, steps_reference) -> None:
    api = pb_grpc.SentimentServiceStub(steps_server.channel)
    rng = np.random.default_rng(0)
    requests = [[REVIEWS[i] for i in rng.integers(0, len(REVIEWS), size=int(rng.integers(1, 5)))] for _ in range(24)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda texts: api.PredictBatch(pb.PredictBatchRequest(texts=texts), timeout=TIMEOUT),
                                requests))
    for texts, reply in zip(requests, replies, strict=True):
        got = [p.probability for p in reply.predictions]
        np.testing.assert_allclose(got, steps_reference(texts), atol=1e-5, rtol=0)


def test_kserve_and_errors_are_the_same_on_the_steps_path(steps_server, steps_reference) -> None:
    request = kpb.ModelInferRequest(model_name="imdb-lstm")
    request.inputs.add(name="text", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(encode_bytes_tensor([REVIEWS[0].encode(), REVIEWS[1].encode()]))
    reply = kpb_grpc.GRPCInferenceServiceStub(steps_server.channel).ModelInfer(request, timeout=TIMEOUT)
    np.testing.assert_allclose(np.frombuffer(reply.raw_output_contents[0], dtype="<f4"), steps_reference(REVIEWS[:2]),
                               atol=1e-5, rtol=0)
    with pytest.raises(grpc.RpcError) as caught:
        pb_grpc.SentimentServiceStub(steps_server.channel).Predict(pb.PredictRequest(text="  "), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_step_metrics(steps_server) -> None:
    pb_grpc.SentimentServiceStub(steps_server.channel).PredictBatch(pb.PredictBatchRequest(texts=REVIEWS),
                                                                    timeout=TIMEOUT)
    text = scrape(steps_server)
    for series in ("sentiment_steps_total", "sentiment_step_rows_count", "sentiment_step_tokens_bucket",
                   "sentiment_step_joins_sum", "sentiment_step_active_rows", 'sentiment_tokens_total{kind="padding"}'):
        assert series in text, series
    steps = sample(text, "sentiment_steps_total")
    assert steps >= 2  # 8 texts, 3 rows at a time
    assert sample(text, "sentiment_step_rows_sum") <= 3 * steps


@pytest.mark.parametrize("case", ["no step graph", "int8"])
def test_steps_fall_back_to_whole_with_one_log_line(case, repository, steps_repository, reference, steps_reference,
                                                   caplog) -> None:
    settings = (make_settings(repository, batching="steps") if case == "no step graph"
                else make_settings(steps_repository, batching="steps", precision="int8"))
    with caplog.at_level(logging.WARNING, logger="serve.engine.step_engine"):
        running = ServerThread(settings)
    try:
        reply = pb_grpc.SentimentServiceStub(running.channel).PredictBatch(
            pb.PredictBatchRequest(texts=REVIEWS), timeout=TIMEOUT)
        expected = reference(REVIEWS) if case == "no step graph" else steps_reference(REVIEWS, "int8")
        np.testing.assert_allclose([p.probability for p in reply.predictions], expected, atol=1e-5, rtol=0)
        assert sample(scrape(running), "sentiment_steps_total") == 0
    finally:
        running.close()
    lines = [r for r in caplog.records if "falls back to whole-sequence" in r.getMessage()]
    assert len(lines) == 1


def test_a_step_graph_that_disagrees_with_the_whole_graph_is_refused(tmp_path) -> None:
    """The steps of another seed's weights: the version loads, but serving it would break one text, one answer."""
    good = build_tiny_repository(tmp_path / "good", steps=True)
    other = build_tiny_repository(tmp_path / "other", steps=True, seed=5)
    version = good / "imdb-lstm" / "1"
    (version / "step.onnx").write_bytes((other / "imdb-lstm" / "1" / "step.onnx").read_bytes())
    import json

    from tests.fixtures.tiny_repository import write_metadata
    metadata = json.loads((version / "metadata.json").read_text())
    write_metadata(version, "imdb-lstm", 1, {k: metadata[k] for k in ("max_tokens", "head_tokens", "pad_id",
                                                                       "unk_id", "steps")})
    running = ServerThread(make_settings(good, batching="steps"), load=False)
    try:
        with pytest.raises(Exception, match="step graph's probabilities differ"):
            running.load()
    finally:
        running.close()


def test_batching_flag_and_environment(tmp_path) -> None:
    # whole stays the default: on a quiet machine steps lost at 1, 8 and 32 single-text clients
    # (bench/results/steps_ab_quiet.md); steps won only 1 client x 8 texts.
    assert load_settings([]).batching == "whole"
    assert load_settings(["--batching", "steps"]).batching == "steps"
    assert load_settings(["--batching", "steps", "--step-tokens", "16"]).step_tokens == 16
    assert load_settings([], {"SENTIMENT_BATCHING": "steps"}).batching == "steps"
    with pytest.raises(ConfigurationError, match="SENTIMENT_BATCHING"):
        load_settings([], {"SENTIMENT_BATCHING": "rows"})
    with pytest.raises(ConfigurationError, match="step_tokens must be >= 1"):
        load_settings(["--step-tokens", "0"])


def test_hot_reload_drains_the_old_versions_steps(tmp_path, reference) -> None:
    root = build_tiny_repository(tmp_path, steps=True)
    running = ServerThread(make_settings(root, batching="steps", repository_poll_s=0.05))
    try:
        api = pb_grpc.SentimentServiceStub(running.channel)
        assert api.Predict(pb.PredictRequest(text=REVIEWS[0]), timeout=TIMEOUT).model.version == 1
        build_tiny_repository(root, version=2, steps=True, seed=3)
        deadline = time.monotonic() + TIMEOUT
        while api.Predict(pb.PredictRequest(text=REVIEWS[0]), timeout=TIMEOUT).model.version != 2:
            assert time.monotonic() < deadline, "the server never switched to version 2"
            time.sleep(0.05)
        reply = api.PredictBatch(pb.PredictBatchRequest(texts=REVIEWS), timeout=TIMEOUT)
        assert reply.model.version == 2 and len(reply.predictions) == len(REVIEWS)
        assert "sentiment_steps_total" in scrape(running)
    finally:
        running.close()
