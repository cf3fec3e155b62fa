"""The handed field cases (shared/cases/field-2026-11/README.md), each with the README's expected value.

The inputs are written here byte for byte (the cases folder is beside the clone, not in it);
where that folder exists, each test first checks that its bytes are the handed file's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client.__main__ import main
from client.backends import ServerBackend
from client.formats import FormatError
from client.scoring import ScoreOptions, score_file
from tests.client.helpers import probability, read_rows
from tests.conftest import REPO_ROOT

CASES = REPO_ROOT.parent / "shared" / "cases" / "field-2026-11"
C01 = b'\xef\xbb\xbfreview,sentiment\r\n"A wonderful, moving film.",positive\r\n"Dull and far too long.",negative\r\n'
C02 = b"review,note,note\nA wonderful film.,first,second\nA dull mess.,alpha,beta\n"
C02B = b"review,review\nA wonderful film.,A dull boring mess.\n"
C06 = (b'{"id": 1, "review": "Loved every minute of it."}\n{"id": 2, "review": "Best film of the year \\ud83d"}\n'
       b'{"id": 3, "review": "Boring and far too long."}\n')
C10_REVIEWS = [b"A wonderful, moving film.", b"R\xc9UNION was dull", b"Dull and far too long."]
OPTIONS = ScoreOptions(chunk_rows=2, progress=False)


def handed(tmp_path: Path, name: str, content: bytes) -> Path:
    """``content`` written to ``tmp_path/name``, after checking it against the handed file when present."""
    if (CASES / name).is_file():
        assert (CASES / name).read_bytes() == content, f"the test's copy of {name} differs from the handed file"
    path = tmp_path / name
    path.write_bytes(content)
    return path


def bad_rows(output: Path) -> list[dict]:
    path = output.with_name(output.name + ".bad_rows.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.fixture(params=["local", "server"])
def backend(request, local_backend):
    """Both paths the README ran the cases on: --local, and --server against a real server."""
    if request.param == "local":
        yield local_backend
        return
    server = request.getfixturevalue("server")
    remote = ServerBackend(server.address, batch_size=2, concurrency=2)
    yield remote
    remote.close()


def test_c01_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path, backend, reference) -> None:
    source = handed(tmp_path, "c01_bom.csv", C01)
    summary = score_file(source, tmp_path / "o.csv", backend, OPTIONS)
    out = read_rows(tmp_path / "o.csv")
    assert list(out[0])[:2] == ["review", "sentiment"]  # the mark is gone from the header
    texts = ["A wonderful, moving film.", "Dull and far too long."]
    assert [r["review"] for r in out] == texts
    assert summary["scored"] == summary["rows"] == 2 and summary["bad_rows"] == 0  # all rows scored
    assert [probability(r["probability"]) for r in out] == pytest.approx(reference(texts), abs=1e-6)
    assert summary["evaluation"]["evaluated"] == 2  # `sentiment` found as the gold labels
    assert summary["columns_used"]["encoding"] == "utf-8, from its byte-order mark"


def test_c02_repeated_column_names_keep_every_value(tmp_path: Path, local_backend) -> None:
    source = handed(tmp_path, "c02_dup_cols.csv", C02)
    summary = score_file(source, tmp_path / "o.csv", local_backend, OPTIONS)
    out = read_rows(tmp_path / "o.csv")
    assert [(r["note"], r["note.1"]) for r in out] == [("first", "second"), ("alpha", "beta")]  # none lost
    assert summary["scored"] == 2
    assert any("'note'" in note and "'note.1'" in note for note in summary["columns_used"]["notes"])  # told


def test_c02b_repeated_text_column_is_refused_naming_it(tmp_path: Path, local_backend, tiny_model: Path,
                                                       capsys) -> None:
    source = handed(tmp_path, "c02b_dup_text.csv", C02B)
    with pytest.raises(FormatError, match=r"column 'review' appears 2 times.*\['review', 'review.1'\].*--text-column"):
        score_file(source, tmp_path / "o.csv", local_backend, OPTIONS)
    assert not (tmp_path / "o.csv").exists()
    args = ["score", str(source), "--output", str(tmp_path / "o.csv"), "--local", str(tiny_model), "--threads", "1",
            "--no-progress"]
    assert main(args) == 1
    assert "appears 2 times" in capsys.readouterr().err
    # The flag the message names picks either copy; the other is kept in the output.
    assert main([*args, "--text-column", "review.1"]) == 0
    (row,) = read_rows(tmp_path / "o.csv")
    assert (row["review"], row["review.1"]) == ("A wonderful film.", "A dull boring mess.")


def test_c06_lone_surrogate_is_a_bad_row_and_resume_works(tmp_path: Path, backend, reference) -> None:
    source = handed(tmp_path, "c06_lone_surrogate.jsonl", C06)
    output = tmp_path / "o.jsonl"
    summary = score_file(source, output, backend, ScoreOptions(chunk_rows=1, progress=False))
    out = read_rows(output)
    assert [r["id"] for r in out] == [1, 2, 3]
    assert out[1]["review"] == "Best film of the year \ud83d"  # kept exactly, as a JSON escape
    assert "\\ud83d" in output.read_text(encoding="utf-8").splitlines()[1]
    good = ["Loved every minute of it.", "Boring and far too long."]
    assert [out[0]["probability"], out[2]["probability"]] == pytest.approx(reference(good), abs=1e-6)
    assert out[1]["probability"] is None and out[1]["label"] is None
    (bad,) = bad_rows(output)
    assert bad["row"] == 2 and bad["id"] == 2 and "lone surrogate U+D83D" in bad["error"]
    assert summary["bad_rows"] == 1 and summary["scored"] == 2
    # --resume after a run that stopped at the bad row (exit 3) continues and finishes.
    staged = tmp_path / "staged.jsonl"
    with pytest.raises(Exception, match="stopped at row 2"):
        score_file(source, staged, backend, ScoreOptions(chunk_rows=1, progress=False, fail_on_bad_rows=True))
    resumed = score_file(source, staged, backend, ScoreOptions(chunk_rows=1, progress=False, resume=True))
    assert resumed["resumed_at_row"] == 1 and resumed["rows"] == 3 and resumed["bad_rows"] == 1
    assert read_rows(staged) == out


def test_c06_exit_status_says_rows_were_bad(tmp_path: Path, tiny_model: Path, capsys) -> None:
    source = handed(tmp_path, "c06_lone_surrogate.jsonl", C06)
    args = ["score", str(source), "--local", str(tiny_model), "--threads", "1", "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "o.jsonl")]) == 4  # completed, with bad rows
    assert "scored 2 of 3 rows" in capsys.readouterr().out and len(read_rows(tmp_path / "o.jsonl")) == 3
    assert main([*args, "--output", str(tmp_path / "stop.jsonl"), "--fail-on-bad-rows"]) == 3


def write_c10(path: Path) -> Path:
    """A Parquet string column holding bytes that are not UTF-8 (Arrow writes them unchecked)."""
    reviews = pa.array(C10_REVIEWS, pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": [1, 2, 3], "review": reviews}), path)
    if (CASES / path.name).is_file():
        handed_column = pq.read_table(CASES / path.name).column("review").cast(pa.binary()).to_pylist()
        assert handed_column == C10_REVIEWS
    return path


@pytest.mark.parametrize("target", ["o.parquet", "o.csv", "o.jsonl"])
def test_c10_invalid_utf8_in_parquet_is_a_bad_row_naming_its_row(tmp_path: Path, local_backend, reference,
                                                                  target: str) -> None:
    source = write_c10(tmp_path / "c10_invalid_utf8.parquet")
    output = tmp_path / target
    summary = score_file(source, output, local_backend, OPTIONS)
    (bad,) = bad_rows(output)
    assert bad["row"] == 2 and bad["id"] == 2 and "not valid UTF-8 (byte 0xc9" in bad["error"]
    out = read_rows(output)
    assert [str(r["id"]) for r in out] == ["1", "2", "3"]
    texts = ["A wonderful, moving film.", "Dull and far too long."]
    assert [probability(out[0]["probability"]), probability(out[2]["probability"])] == pytest.approx(
        reference(texts), abs=1e-6)
    assert probability(out[1]["probability"]) is None
    assert summary["scored"] == 2 and summary["bad_rows"] == 1
    assert out[1]["review"] == "R\ufffdUNION was dull"  # every output stays valid UTF-8

