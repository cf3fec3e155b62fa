"""Interrupted runs: killed or Ctrl-C'd mid-run, then --resume: no duplicate, no loss, same scores.

The input is a FIFO that the test feeds: the scorer commits the chunks it has, then blocks
reading, and the test kills it there, so "mid-run" is certain without relying on timing.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client.scoring import ScoreOptions, ScoringError, score_file
from tests.client.conftest import make_reviews
from tests.client.helpers import read_rows, write_rows
from tests.conftest import REPO_ROOT

CHUNK = 10


def rows(n: int = 150) -> list[dict]:
    return [{"id": str(i), "review": t} for i, t in enumerate(make_reviews(n, seed=3))]


def csv_text(items: list[dict], header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["id", "review"], lineterminator="\n")
    if header:
        writer.writeheader()
    writer.writerows(items)
    return buffer.getvalue()


def cli(source: Path, output: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "client", "score", str(source), "--output", str(output), "--local", str(model),
            "--threads", "1", "--chunk-rows", str(CHUNK), "--no-progress", *extra]


def committed(output: Path) -> int:
    return len(list(output.with_name(output.name + ".partial").glob("part-*.csv")))


def interrupt_midway(tmp_path: Path, model: Path, data: list[dict], sig: signal.Signals) -> tuple[Path, int]:
    """Start a run on a FIFO, feed it 95 rows, wait for 9 committed chunks, send ``sig``."""
    fifo, output = tmp_path / "in.csv", tmp_path / "out.csv"
    os.mkfifo(fifo)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    # Started as a non-interactive shell starts a background job: SIGINT ignored. The scorer
    # must install its own handler, or the SIGINT case would hang until the timeout.
    proc = subprocess.Popen(cli(fifo, output, model), cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    with fifo.open("w", encoding="utf-8") as feed:  # opens once the scorer opens its end
        feed.write(csv_text(data[:95], header=True))
        feed.flush()
        deadline = time.monotonic() + 60
        while committed(output) < 9:  # polls for a state, the kill does not depend on timing
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "scorer made no progress in 60 s"
            time.sleep(0.02)
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    fifo.unlink()  # the resumed run reads the same rows from a regular file
    write_rows(fifo, data)
    return output, code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_without_duplicates_or_loss(tmp_path: Path, tiny_model: Path, local_backend,
                                                            reference, sig: signal.Signals) -> None:
    data = rows()
    output, code = interrupt_midway(tmp_path, tiny_model, data, sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    assert not output.exists()  # never a half-written output
    assert committed(output) == 9

    resumed = subprocess.run(cli(tmp_path / "in.csv", output, tiny_model, "--resume"), cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    out = read_rows(output)
    assert [r["id"] for r in out] == [r["id"] for r in data]  # each row exactly once, in order
    assert [r["review"] for r in out] == [r["review"] for r in data]
    assert [float(r["probability"]) for r in out] == pytest.approx(reference([r["review"] for r in data]),
                                                                   abs=1e-6)
    summary = read_summary(output)
    assert summary["resumed_at_row"] == 90 and summary["rows_this_run"] == 60 and summary["rows"] == 150
    assert not output.with_name("out.csv.partial").exists()


def read_summary(output: Path) -> dict:
    import json

    return json.loads(output.with_name(output.name + ".summary.json").read_text(encoding="utf-8"))


def test_leftovers_of_an_interrupted_commit_are_redone(tmp_path: Path, local_backend) -> None:
    source = write_rows(tmp_path / "in.csv", rows(40))
    options = ScoreOptions(chunk_rows=CHUNK, progress=False)
    score_file(source, tmp_path / "reference.csv", local_backend, options)
    output = tmp_path / "out.csv"
    ScoringProbe(source, output, local_backend, options).commit_rows(0, 20)
    # What a crash while committing rows 20..29 leaves: a half-written temporary part, and
    # the JSON twin already renamed while the part itself never was.
    staging = tmp_path / "out.csv.partial"
    (staging / ".tmp-part-000000000020-000000000030.csv").write_text("garbage,half,writ")
    (staging / "part-000000000020-000000000030.json").write_text('{"start": 20, "end": 30}')
    summary = score_file(source, output, local_backend, ScoreOptions(chunk_rows=CHUNK, progress=False, resume=True))
    assert summary["resumed_at_row"] == 20 and summary["rows_this_run"] == 20
    assert output.read_bytes() == (tmp_path / "reference.csv").read_bytes()
    assert not staging.exists()


class ScoringProbe:
    """Commits the parts of a row range exactly as a real run would, then stops (a crash)."""

    def __init__(self, source: Path, output: Path, backend, options: ScoreOptions) -> None:
        from client.formats import open_reader
        from client.scoring import ScoringRun

        self.run = ScoringRun(source, output, backend, options)
        self.reader = open_reader(source, self.run.in_fmt, options.text_column, options.label_column)

    def commit_rows(self, start: int, end: int) -> None:
        reader = self.reader
        spec, skip, _ = self.run.prepare(reader.columns, reader.text_column, reader.label_column, reader.notes,
                                         reader.encoding)
        for chunk in self.reader.chunks(self.run.options.chunk_rows, skip):
            if chunk.start >= end:
                break
            scored = self.run.score_chunk(chunk)
            self.run.commit(spec, scored, self.run.account(scored))
        self.reader.close()


def test_existing_staging_needs_resume_and_same_settings(tmp_path: Path, local_backend) -> None:
    source = write_rows(tmp_path / "in.csv", rows(30))
    output = tmp_path / "out.csv"
    options = ScoreOptions(chunk_rows=CHUNK, progress=False)
    ScoringProbe(source, output, local_backend, options).commit_rows(0, 10)
    with pytest.raises(ScoringError, match="pass --resume"):
        score_file(source, output, local_backend, options)
    other = ScoreOptions(chunk_rows=CHUNK, progress=False, resume=True, prediction_column="predicted")
    with pytest.raises(ScoringError, match="added_columns"):
        score_file(source, output, local_backend, other)
    write_rows(source, rows(31))  # the input changed under the interrupted run
    with pytest.raises(ScoringError, match="input_bytes"):
        score_file(source, output, local_backend, ScoreOptions(chunk_rows=CHUNK, progress=False, resume=True))


def test_resume_of_a_finished_run_scores_nothing(tmp_path: Path, local_backend) -> None:
    source = write_rows(tmp_path / "in.parquet", rows(25))
    output = tmp_path / "out.parquet"
    first = score_file(source, output, local_backend, ScoreOptions(chunk_rows=CHUNK, progress=False))
    before = output.read_bytes()
    again = score_file(source, output, local_backend, ScoreOptions(chunk_rows=CHUNK, progress=False, resume=True))
    assert again == first and output.read_bytes() == before


def test_parquet_resume_skips_whole_row_groups(tmp_path: Path, local_backend) -> None:
    data = rows(60)
    source = write_rows(tmp_path / "in.parquet", data)  # row groups of 7 rows, chunks of 10
    options = ScoreOptions(chunk_rows=CHUNK, progress=False)
    score_file(source, tmp_path / "reference.parquet", local_backend, options)
    output = tmp_path / "out.parquet"
    ScoringProbe(source, output, local_backend, options).commit_rows(0, 30)
    summary = score_file(source, output, local_backend, ScoreOptions(chunk_rows=CHUNK, progress=False, resume=True))
    assert summary["resumed_at_row"] == 30
    assert read_rows(output) == read_rows(tmp_path / "reference.parquet")
