"""Bad rows go to a side file with their row numbers and never abort the run; the evaluation summary."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from client.__main__ import main
from client.evaluation import Confusion, parse_gold
from client.scoring import BadRowsError, ScoreOptions, score_file
from tests.client.helpers import probability, read_rows

OPTIONS = ScoreOptions(chunk_rows=4, progress=False)


def bad_rows(output: Path) -> list[dict]:
    path = output.with_name(output.name + ".bad_rows.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_csv_bad_rows(tmp_path: Path, local_backend) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,review,sentiment\n"
                       b"1,a wonderful film,positive\n"
                       b"2,,negative\n"                       # empty text
                       b"3,   ,negative\n"                    # only spaces
                       b"4\n"                                 # missing column
                       b"5,caf\xe9 au lait is bad,negative\n"  # Latin-1 byte: not UTF-8
                       b"6,a dull mess,negative,extra\n"      # too many fields
                       b"7,\"quoted, with comma\nand newline\",positive\n")
    summary = score_file(source, tmp_path / "out.csv", local_backend, OPTIONS)
    out = read_rows(tmp_path / "out.csv")
    assert [r["id"] for r in out] == ["1", "2", "3", "4", "5", "6", "7"]  # every row kept, in order
    assert [r["label"] != "" for r in out] == [True, False, False, False, False, False, True]
    assert out[6]["review"] == "quoted, with comma\nand newline"
    assert out[4]["review"] == "caf\ufffd au lait is bad"  # the output stays valid UTF-8
    reported = bad_rows(tmp_path / "out.csv")
    assert [(r["row"], r["id"]) for r in reported] == [(2, "2"), (3, "3"), (4, "4"), (5, "5"), (6, "6")]
    assert [r["error"].split(";")[0] for r in reported] == [
        "empty text", "empty text", "row has 1 fields, the header has 3",
        "column 'review' is not valid UTF-8 (byte 0xe9 at character 4)", "row has 4 fields, the header has 3"]
    assert "--encoding cp1252" in reported[3]["error"]  # says what to do
    assert summary["bad_rows"] == 5 and summary["scored"] == 2 and summary["rows"] == 7


def test_jsonl_text_and_parquet_bad_rows(tmp_path: Path, local_backend) -> None:
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"review": "great fun"}\n{"review": 5}\n{"other": "x"}\n{not json\n[1, 2]\n'
                      b'\n{"review": "\xff"}\n{"review": "boring"}\n')
    score_file(jsonl, tmp_path / "out.jsonl", local_backend, OPTIONS)
    assert [(r["row"], r["error"].split(" (")[0]) for r in bad_rows(tmp_path / "out.jsonl")] == [
        (2, "text is not a string"), (3, "missing column 'review'"), (4, "invalid JSON"),
        (5, "not a JSON object"), (6, "empty line"), (7, "line is not valid UTF-8")]
    out = read_rows(tmp_path / "out.jsonl")
    assert len(out) == 8 and out[0]["label"] and out[7]["label"] and out[3]["probability"] is None

    text = tmp_path / "in.txt"
    text.write_text("great fun\n\nboring\n", encoding="utf-8")
    score_file(text, tmp_path / "out.txt", local_backend, OPTIONS)
    assert [r["row"] for r in bad_rows(tmp_path / "out.txt")] == [2]
    assert [probability(r["probability"]) is None for r in read_rows(tmp_path / "out.txt")] == [False, True, False]

    parquet = tmp_path / "in.parquet"
    pq.write_table(pa.table({"review": ["great", None, "", "awful"], "n": [1, 2, 3, 4]}), parquet)
    summary = score_file(parquet, tmp_path / "out.parquet", local_backend, OPTIONS)
    assert [(r["row"], r["error"]) for r in bad_rows(tmp_path / "out.parquet")] == [(2, "missing text"),
                                                                                  (3, "empty text")]
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column("n").to_pylist() == [1, 2, 3, 4]  # Parquet types survive
    assert out.schema.field("probability").type == pa.float32()
    assert summary["evaluation"] is None  # no label column


def test_fail_on_bad_rows_stops_with_exit_3(tmp_path: Path, tiny_model: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("good film\n" * 9 + "\n" + "good film\n" * 5, encoding="utf-8")
    options = ScoreOptions(chunk_rows=4, progress=False, fail_on_bad_rows=True)
    from client.backends import LocalBackend

    with pytest.raises(BadRowsError, match="stopped at row 10: empty text"):
        score_file(source, tmp_path / "out.txt", LocalBackend(tiny_model, threads=1), options)
    assert not (tmp_path / "out.txt").exists()
    assert len(list((tmp_path / "out.txt.partial").glob("part-*.txt"))) == 2  # rows before the chunk kept
    code = main(["score", str(source), "--output", str(tmp_path / "cli.txt"), "--local", str(tiny_model),
                 "--threads", "1", "--chunk-rows", "4", "--fail-on-bad-rows", "--no-progress"])
    assert code == 3


def test_parse_gold() -> None:
    assert [parse_gold(v) for v in ("positive", "NEG", " pos ", "1", 0, 1, True, "false", 2, "meh", None, "")] == [
        1, 0, 1, 1, 0, 1, 1, 0, None, None, None, None]
    assert parse_gold("good", ("bad", "good")) == 1


def test_confusion_metrics() -> None:
    confusion = Confusion()
    for gold, predicted, times in ((1, 1, 6), (1, 0, 2), (0, 1, 1), (0, 0, 3), (None, 1, 4)):
        for _ in range(times):
            confusion.add(gold, predicted)
    metrics = confusion.metrics()
    assert metrics["evaluated"] == 12 and metrics["unlabeled"] == 4
    assert metrics["accuracy"] == pytest.approx(9 / 12)
    assert metrics["precision"] == pytest.approx(6 / 7)
    assert metrics["recall"] == pytest.approx(6 / 8)
    assert metrics["f1"] == pytest.approx(2 * (6 / 7) * (6 / 8) / (6 / 7 + 6 / 8))
    assert metrics["confusion_matrix"]["matrix"] == [[3, 1], [2, 6]]
    assert Confusion(tn=3).metrics()["precision"] is None  # no positive prediction: undefined, not 0


def test_summary_matches_the_output(tmp_path: Path, local_backend, capsys) -> None:
    from tests.client.conftest import make_reviews
    from tests.client.helpers import write_rows

    rows = [{"review": t, "sentiment": ["positive", "negative", "neg", "?"][i % 4]}
            for i, t in enumerate(make_reviews(60))]
    source = write_rows(tmp_path / "in.csv", rows)
    summary = score_file(source, tmp_path / "out.csv", local_backend, OPTIONS)
    out = read_rows(tmp_path / "out.csv")
    gold = [parse_gold(r["sentiment"]) for r in out]
    predicted = [int(r["label"] == "positive") for r in out]
    tp = sum(g == 1 and p == 1 for g, p in zip(gold, predicted, strict=True))
    tn = sum(g == 0 and p == 0 for g, p in zip(gold, predicted, strict=True))
    evaluation = summary["evaluation"]
    assert evaluation["unlabeled"] == 15 and evaluation["evaluated"] == 45
    assert evaluation["accuracy"] == pytest.approx((tp + tn) / 45)
    assert evaluation["confusion_matrix"]["matrix"][1][1] == tp
    written = json.loads((tmp_path / "out.csv.summary.json").read_text(encoding="utf-8"))
    assert written["evaluation"] == evaluation
    assert main(["score", str(source), "--output", str(tmp_path / "cli.csv"), "--local",
                 str(local_backend.local.model.path), "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "confusion matrix" in printed
