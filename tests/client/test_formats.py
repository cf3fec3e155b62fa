"""Every input format through score_file: every row kept, in order, fields untouched, right scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from client.formats import FormatError, detect_format
from client.scoring import ScoreOptions, score_file
from tests.client.conftest import make_reviews
from tests.client.helpers import probability, read_rows, write_rows
from tests.conftest import fabricated_reviews, write_archive, write_folder

N = 103  # not a multiple of chunk or batch size: the last chunk and batch are partial


def table(n: int = N) -> list[dict]:
    texts = make_reviews(n)
    return [{"id": f"r{i:04d}", "review": t, "sentiment": "positive" if i % 2 else "negative",
             "stars": str(i % 10)} for i, t in enumerate(texts)]


def options(**overrides) -> ScoreOptions:
    return ScoreOptions(chunk_rows=10, progress=False, **overrides)


@pytest.mark.parametrize(("source", "target"), [
    ("in.csv", "out.csv"), ("in.tsv", "out.tsv"), ("in.jsonl", "out.jsonl"), ("in.parquet", "out.parquet"),
    ("in.csv", "out.parquet"), ("in.parquet", "out.csv"), ("in.jsonl", "out.tsv"), ("in.csv", "out.txt"),
])
def test_rows_kept_in_order_with_exact_probabilities(tmp_path: Path, local_backend, reference,
                                                     source: str, target: str) -> None:
    rows = table()
    summary = score_file(write_rows(tmp_path / source, rows), tmp_path / target, local_backend, options())
    out = read_rows(tmp_path / target)
    assert len(out) == len(rows) == summary["rows"] == summary["scored"]
    expected = reference([r["review"] for r in rows])
    for original, scored, p in zip(rows, out, expected, strict=True):
        if target.endswith(".txt"):
            assert scored["text"] == original["review"]
        else:
            assert {k: str(scored[k]) for k in original} == original  # every input field untouched
        assert probability(scored["probability"]) == pytest.approx(p, abs=1e-6)
        assert scored["label"] == ("positive" if p >= 0.5 else "negative")
    assert {r["label"] for r in out} == {"positive", "negative"}  # the fixture exercises both
    assert not (tmp_path / (target + ".partial")).exists()


def test_plain_text_one_review_per_line(tmp_path: Path, local_backend, reference) -> None:
    texts = make_reviews(25)
    source = write_rows(tmp_path / "reviews.txt", [{"text": t} for t in texts])
    score_file(source, tmp_path / "scored.jsonl", local_backend, options())
    out = read_rows(tmp_path / "scored.jsonl")
    assert [r["text"] for r in out] == texts
    assert [r["probability"] for r in out] == pytest.approx(reference(texts), abs=1e-6)


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_aclimdb_folder_and_archive(tmp_path: Path, local_backend, reference, kind: str) -> None:
    members = fabricated_reviews(per_label=5)
    source = (write_archive(tmp_path / "aclImdb.tar.gz", members) if kind == "archive"
              else write_folder(tmp_path / "data", members))
    summary = score_file(source, tmp_path / "scored.csv", local_backend, options())
    out = read_rows(tmp_path / "scored.csv")
    assert len(out) == len(members) == 20
    assert sorted(r["path"] for r in out) == sorted(members)
    for row in out:
        assert row["text"] == members[row["path"]]
        assert row["sentiment"] == ("positive" if "/pos/" in row["path"] else "negative")
    assert [probability(r["probability"]) for r in out] == pytest.approx(reference([r["text"] for r in out]),
                                                                         abs=1e-6)
    assert summary["evaluation"]["evaluated"] == 20  # the folder names are the gold labels


def test_output_format_from_extension_and_overrides(tmp_path: Path) -> None:
    assert detect_format(tmp_path / "x.CSV") == "csv"
    assert detect_format(tmp_path / "x.ndjson") == "jsonl"
    assert detect_format(tmp_path / "aclImdb_v1.tar.gz") == "aclimdb"
    assert detect_format(tmp_path / "x.data", "tsv") == "tsv"
    with pytest.raises(FormatError, match="cannot tell the format"):
        detect_format(tmp_path / "x.data")


def test_missing_text_column_is_a_clear_error(tmp_path: Path, local_backend) -> None:
    source = write_rows(tmp_path / "in.csv", [{"id": "1", "body": "great"}])
    with pytest.raises(FormatError, match=r"cannot tell which column .* \['id', 'body'\]\); pass --text-column"):
        score_file(source, tmp_path / "out.csv", local_backend, options())
    with pytest.raises(FormatError, match="no column 'review'"):
        score_file(source, tmp_path / "out.csv", local_backend, options(text_column="review"))


def test_an_output_that_is_a_folder_is_refused(tmp_path: Path, local_backend) -> None:
    source = write_rows(tmp_path / "in.csv", [{"id": "1", "review": "great"}])
    (tmp_path / "out.parquet").mkdir()  # e.g. left by an older --ray run, which wrote folders
    with pytest.raises(FormatError, match="is a folder"):
        score_file(source, tmp_path / "out.parquet", local_backend, options())


def test_added_column_clash_is_refused(tmp_path: Path, local_backend) -> None:
    source = write_rows(tmp_path / "in.jsonl", [{"review": "great", "label": "pos"}])
    with pytest.raises(FormatError, match="already has column"):
        score_file(source, tmp_path / "out.jsonl", local_backend, options(prediction_column="label"))
    score_file(source, tmp_path / "out.jsonl", local_backend, options(prediction_column="predicted"))
    (row,) = read_rows(tmp_path / "out.jsonl")
    assert row["label"] == "pos" and row["predicted"] in ("positive", "negative")


def test_jsonl_keeps_json_types(tmp_path: Path, local_backend) -> None:
    rows = [{"id": i, "review": t, "meta": {"votes": i, "tags": ["x"]}, "ok": True}
            for i, t in enumerate(make_reviews(12))]
    score_file(write_rows(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", local_backend, options())
    out = read_rows(tmp_path / "out.jsonl")
    assert [{k: r[k] for k in rows[0]} for r in out] == rows
    assert all(isinstance(r["probability"], float) for r in out)
    json.dumps(out)  # plain JSON values only


def test_progress_bar_shows_rows_rate_and_total(tmp_path: Path, local_backend, capsys) -> None:
    source = write_rows(tmp_path / "in.csv", table())
    score_file(source, tmp_path / "out.csv", local_backend, ScoreOptions(chunk_rows=10, progress=True))
    err = capsys.readouterr().err
    assert "rows/s" in err and "/103" in err  # rate, and the total the ETA is computed from
