"""Which version and precision get served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.ops.errors import ConfigurationError
from tests.fixtures.tiny_repository import build_tiny_repository
from tests.serve.conftest import REVIEWS, ServerThread, make_settings

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two_versions")
    build_tiny_repository(root, version=1, seed=1)
    return build_tiny_repository(root, version=2, seed=2)


def served(settings) -> tuple[int, list[float]]:
    running = ServerThread(settings)
    try:
        reply = pb_grpc.SentimentServiceStub(running.channel).PredictBatch(pb.PredictBatchRequest(texts=REVIEWS),
                                                                           timeout=TIMEOUT)
        return reply.model.version, [p.probability for p in reply.predictions]
    finally:
        running.close()


def test_latest_is_the_highest_version_and_a_pinned_one_is_honoured(two_versions: Path) -> None:
    latest, latest_scores = served(make_settings(two_versions))
    pinned, pinned_scores = served(make_settings(two_versions, version="1"))
    assert (latest, pinned) == (2, 1)
    assert latest_scores != pinned_scores  # different weights, really a different model


def test_int8_precision_serves_the_quantized_graph(repository: Path, reference) -> None:
    _, scores = served(make_settings(repository, precision="int8"))
    np.testing.assert_allclose(scores, reference(REVIEWS, "int8"), atol=1e-6, rtol=0)
    assert np.abs(np.array(scores) - reference(REVIEWS, "fp32")).max() > 1e-6  # not the fp32 graph


def test_metrics_port_in_use_is_a_configuration_error(repository: Path, server: ServerThread) -> None:
    with pytest.raises(ConfigurationError, match="cannot serve metrics"):
        ServerThread(make_settings(repository, metrics_port=server.server.metrics_port), load=False)
