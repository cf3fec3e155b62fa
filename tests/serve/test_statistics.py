"""Triton-style statistics totals and the repository index, as pure functions and objects."""

from __future__ import annotations

import threading
from pathlib import Path

from serve.engine.statistics import BatchTotals, Duration, InferenceStatistics
from serve.grpc.kserve_extensions import model_statistics, repository_index


def test_totals_add_up_per_request_and_per_batch() -> None:
    stats = InferenceStatistics()
    stats.queued([0.001, 0.003])
    stats.batch_done(texts=5, requests=2, input_s=0.0001, infer_s=0.002, output_s=0.00001)
    stats.request_done(True, 0.004)
    stats.request_done(True, 0.005)
    stats.request_done(False, 0.0001)
    s = stats.snapshot()
    assert (s.inference_count, s.execution_count) == (5, 1) and s.last_inference_ms > 0
    assert s.success == Duration(2, 9_000_000) and s.fail == Duration(1, 100_000)
    assert s.queue == Duration(2, 4_000_000)
    # Each request of the batch is charged the whole batch's time, as Triton counts it.
    assert s.compute_infer == Duration(2, 4_000_000) and s.compute_input == Duration(2, 200_000)
    assert s.compute_output == Duration(2, 20_000)
    assert s.batches == {5: BatchTotals(1, 100_000, 2_000_000, 10_000)}
    message = model_statistics("m", 3, s)
    assert (message.version, message.inference_stats.queue.ns, message.batch_stats[0].compute_infer.count) == \
        ("3", 4_000_000, 1)
    stats.reset()
    assert stats.snapshot().inference_count == 0 and stats.snapshot().batches == {}


def test_updates_from_many_threads_are_not_lost() -> None:
    stats = InferenceStatistics()

    def work() -> None:
        for _ in range(2000):
            stats.batch_done(texts=2, requests=1, input_s=0.0, infer_s=0.001, output_s=0.0)
            stats.request_done(True, 0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    s = stats.snapshot()
    assert (s.inference_count, s.execution_count, s.success.count) == (16_000, 8000, 8000)
    assert s.batches[2].count == 8000


def test_repository_index_lists_every_version_and_marks_the_served_one(tmp_path: Path) -> None:
    for folder in ("imdb-lstm/1", "imdb-lstm/2", "imdb-lstm/notes", "other/4", ".hidden/1"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "README.md").write_text("not a model")
    entries = [(e.name, e.version, e.state) for e in repository_index(tmp_path, ("imdb-lstm", 2), ready_only=False)]
    assert entries == [("imdb-lstm", "1", "UNAVAILABLE"), ("imdb-lstm", "2", "READY"), ("other", "4", "UNAVAILABLE")]
    reasons = {e.reason for e in repository_index(tmp_path, ("imdb-lstm", 2), ready_only=False) if e.state != "READY"}
    assert reasons == {"not served: this server serves 'imdb-lstm' version 2"}
    assert [(e.name, e.version) for e in repository_index(tmp_path, ("imdb-lstm", 2), ready_only=True)] == [
        ("imdb-lstm", "2")]
    assert repository_index(tmp_path / "missing", None, ready_only=False) == []
    loading = repository_index(tmp_path, None, ready_only=False)
    assert {e.state for e in loading} == {"UNAVAILABLE"} and "loading" in loading[0].reason
    assert repository_index(tmp_path, None, ready_only=True) == []
