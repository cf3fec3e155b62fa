"""NVIDIA's perf_analyzer, the load tester shipped in the tritonclient wheel, runs unmodified.

It reads the model's metadata and configuration, sends ModelInfer (or ModelStreamInfer)
requests, and reads the statistics before and after each measurement to split the server's
time into queue and compute: every one of those RPCs has to match Triton's for it to finish.
Skipped, saying why, where the binary cannot run (it is x86-64 Linux only, and needs
Debian's libb64-0d; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.perf_analyzer_bench import PERF_ANALYZER, perf_analyzer_env
from tests.serve.conftest import REVIEWS, ServerThread


@pytest.fixture(scope="module")
def perf_analyzer() -> list[str]:
    if not PERF_ANALYZER.exists():
        pytest.skip(f"no perf_analyzer beside {sys.executable} (the tritonclient wheel ships it on x86-64 Linux)")
    probe = subprocess.run([str(PERF_ANALYZER), "--version"], capture_output=True, text=True, timeout=30,
                           env=perf_analyzer_env())
    if "error while loading shared libraries" in probe.stderr:
        pytest.skip(f"perf_analyzer cannot start: {probe.stderr.strip()} (apt-get install libb64-0d)")
    return [str(PERF_ANALYZER)]


def run(command: list[str], server: ServerThread, data: Path, *extra: str) -> str:
    done = subprocess.run([*command, "-m", "imdb-lstm", "-i", "grpc", "-u", server.address, "--input-data", str(data),
                           "--concurrency-range", "2", "--measurement-mode", "count_windows",
                           "--measurement-request-count", "40", "--max-trials", "4",
                           # Any windows count as stable: this checks the protocol, and on a busy
                           # machine an unstable measurement would make perf_analyzer exit non-zero.
                           "--stability-percentage", "1000", *extra],
                          capture_output=True, text=True, timeout=180, env=perf_analyzer_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["unary", "streaming"])
def test_perf_analyzer_measures_the_server(perf_analyzer: list[str], server: ServerThread, tmp_path: Path,
                                           mode: list[str]) -> None:
    data = tmp_path / "reviews.json"
    data.write_text(json.dumps({"data": [{"text": {"content": [review], "shape": [1]}} for review in REVIEWS[:6]]}))
    out = run(perf_analyzer, server, data, *mode)
    requests = int(re.search(r"Client:\s+Request count: (\d+)", out).group(1))
    succeeded = int(re.search(r"Successful request count: (\d+)", out).group(1))
    assert requests >= 40 and succeeded >= requests - 2  # the server's count brackets the client's window
    # Its server-side breakdown comes from our statistics: queue and compute times were reported.
    breakdown = re.search(r"Avg request latency: \d+ usec \(overhead \d+ usec \+ queue (\d+) usec \+ "
                          r"compute input (\d+) usec \+ compute infer (\d+) usec", out)
    assert breakdown is not None, out
    assert int(breakdown.group(3)) > 0
