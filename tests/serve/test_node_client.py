"""A Node.js client (@grpc/grpc-js) that knows the server only through reflection, v1 and v1alpha.

Another language's gRPC stack and protobuf runtime, none of our code: it lists the services,
fetches their descriptors over reflection, builds its stubs from them and calls both APIs.
That checks the descriptors we publish, the wire format, and both reflection versions
(current tools ask v1, older ones v1alpha). The npm packages are pinned in
tests/serve/node_client/package-lock.json and installed into a temporary folder; the test
skips, saying why, where node or npm is missing or the install cannot reach the registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import REVIEWS, ServerThread

PROBE = Path(__file__).parent / "node_client"


@pytest.fixture(scope="module")
def node_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """probe.js with its pinned node_modules beside it, in a temporary folder."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the Node.js client test (apt-get install nodejs npm)")
    folder = tmp_path_factory.mktemp("node_client")
    for name in ("package.json", "package-lock.json", "probe.js"):
        shutil.copy(PROBE / name, folder / name)
    try:
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=folder,
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("npm ci took over 240 s (no registry reachable?)")
    if done.returncode != 0:
        pytest.skip(f"npm ci failed (no registry reachable?): {done.stderr.strip()[-500:]}")
    return folder / "probe.js"


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_a_node_client_built_from_reflection_calls_both_apis(node_probe: Path, server: ServerThread, reference,
                                                             version: str) -> None:
    texts = [*REVIEWS[:3], "Dull."]
    done = subprocess.run(["node", str(node_probe), server.address, version, *texts], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert {"sentiment.v1.SentimentService", "inference.GRPCInferenceService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= set(out["services"])
    assert {"ModelInfer", "ModelStreamInfer", "ModelConfig", "ModelStatistics"} <= set(out["kserve_methods"])
    expected = reference(texts)
    labels = ["positive" if p >= 0.5 else "negative" for p in expected]
    assert [label for label, _ in out["predict_batch"]] == labels
    np.testing.assert_allclose([p for _, p in out["predict_batch"]], expected, atol=1e-6, rtol=0)
    infer = out["model_infer"]
    assert infer["id"] == "node-1" and infer["outputs"]["label"] == labels
    np.testing.assert_allclose(infer["outputs"]["probability"], expected, atol=1e-6, rtol=0)
    assert out["bad_request"]["code"] == 3 and "exactly one input named 'text'" in out["bad_request"]["details"]
