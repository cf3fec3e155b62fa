"""Table structure that would lose data, and the columns a run reads and adds (issue 14, kinds 2 and 7)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.__main__ import main
from client.columns import added_columns, unique_names
from client.formats import FormatError
from client.scoring import ScoreOptions, score_file
from tests.client.conftest import make_reviews
from tests.client.helpers import probability, read_rows, write_rows
from tests.conftest import REPO_ROOT

OPTIONS = ScoreOptions(chunk_rows=4, progress=False)


# ------------------------------------------------------------------ kind 2: nothing lost without a word


@given(st.lists(st.sampled_from(["a", "b", "a.1", "a.2", "b.1", "review", "c"]), max_size=12))
def test_unique_names_are_distinct_and_keep_every_unrepeated_name(names: list[str]) -> None:
    out, repeated = unique_names(names)
    assert len(out) == len(names) and len(set(out)) == len(out)
    for name, new in zip(names, out, strict=True):
        if names.count(name) == 1:
            assert new == name
    for name, copies in repeated.items():
        assert copies[0] == name and len(copies) == names.count(name)  # the first copy keeps its name


def test_parquet_repeated_column_names_keep_every_column(tmp_path: Path, local_backend) -> None:
    source = tmp_path / "in.parquet"
    table = pa.Table.from_arrays([pa.array(["great fun", "awful"]), pa.array(["x1", "y1"]), pa.array(["x2", "y2"])],
                                 names=["review", "note", "note"])
    pq.write_table(table, source)
    for target in ("out.parquet", "out.csv", "out.jsonl"):
        summary = score_file(source, tmp_path / target, local_backend, OPTIONS)
        out = read_rows(tmp_path / target)
        assert [(r["note"], r["note.1"]) for r in out] == [("x1", "x2"), ("y1", "y2")], target
        assert summary["scored"] == 2 and any("'note.1'" in n for n in summary["columns_used"]["notes"])


def test_parquet_repeated_text_column_is_refused_naming_the_copies(tmp_path: Path, local_backend) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), source)
    with pytest.raises(FormatError, match=r"'text' appears 2 times.*\['text', 'text.1'\].*--text-column"):
        score_file(source, tmp_path / "out.csv", local_backend, OPTIONS)
    summary = score_file(source, tmp_path / "out.csv", local_backend,
                         ScoreOptions(chunk_rows=4, progress=False, text_column="text.1"))
    assert summary["scored"] == 1 and read_rows(tmp_path / "out.csv")[0]["text"] == "a"


@pytest.mark.parametrize("target", ["out.csv", "out.parquet", "out.tsv", "out.jsonl"])
def test_jsonl_records_with_different_keys_keep_the_union(tmp_path: Path, local_backend, target: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "review": "great fun"}\n'
                      '{"id": 2, "review": "awful", "stars": 1}\n'
                      '{"review": "fine", "author": "kim", "id": 3}\n', encoding="utf-8")
    summary = score_file(source, tmp_path / target, local_backend, OPTIONS)
    out = read_rows(tmp_path / target)
    if target != "out.jsonl":  # JSON Lines writes each record with its own keys
        assert list(out[0])[:4] == ["id", "review", "stars", "author"]
    assert [str(r.get("stars") or "") for r in out] == ["", "1", ""]
    assert [r.get("author") or "" for r in out] == ["", "", "kim"]
    assert summary["scored"] == 3
    assert any("different keys" in note for note in summary["columns_used"]["notes"])


def test_jsonl_from_a_pipe_refuses_a_fixed_column_output_it_would_cut(tmp_path: Path, tiny_model: Path) -> None:
    data = b'{"review": "great fun"}\n{"review": "awful", "stars": 1}\n'

    def score(output: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "client", "score", "/dev/stdin", "--input-format", "jsonl",
                               "--output", str(tmp_path / output), "--local", str(tiny_model), "--threads", "1",
                               "--no-progress"], input=data, cwd=REPO_ROOT, capture_output=True, timeout=120)

    refused = score("out.csv")
    assert refused.returncode == 1
    err = refused.stderr.decode()
    assert "row 2 has field(s) ['stars']" in err and "--output NAME.jsonl" in err and "Traceback" not in err
    kept = score("out.jsonl")
    assert kept.returncode == 0, kept.stderr.decode()
    assert read_rows(tmp_path / "out.jsonl")[1]["stars"] == 1


def test_a_key_repeated_inside_a_jsonl_object(tmp_path: Path, local_backend) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"review": "great fun", "tag": "a", "tag": "b"}\n'
                      '{"review": "first", "review": "second"}\n', encoding="utf-8")
    summary = score_file(source, tmp_path / "out.csv", local_backend, OPTIONS)
    out = read_rows(tmp_path / "out.csv")
    assert (out[0]["tag"], out[0]["tag.1"]) == ("a", "b")  # both values kept
    assert (out[1]["review"], out[1]["review.1"]) == ("first", "second")
    bad = [json.loads(line) for line in (tmp_path / "out.csv.bad_rows.jsonl").read_text().splitlines()]
    assert [r["row"] for r in bad] == [2] and "key 'review' appears 2 times" in bad[0]["error"]
    assert summary["scored"] == 1


@pytest.mark.parametrize(("name", "content", "delimiter", "named"), [
    ("in.csv", "review;sentiment\n\"great; really\";positive\nawful;negative\n", ";", "semicolon"),
    ("in.csv", "review\tsentiment\ngreat, really\tpositive\nawful\tnegative\n", "tab", "tab"),
    ("in.tsv", "review,sentiment\n\"great\tfun\",positive\nawful,negative\n", ",", "comma"),
    ("in.csv", "review|sentiment\ngreat, really|positive\nawful|negative\n", "|", "pipe"),
])
def test_a_delimiter_other_than_the_formats_is_refused_naming_it_and_the_flag(
        tmp_path: Path, local_backend, name: str, content: str, delimiter: str, named: str) -> None:
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    with pytest.raises(FormatError, match=f"looks separated by '{named}'.*--delimiter {named}"):
        score_file(source, tmp_path / "out.jsonl", local_backend, OPTIONS)
    summary = score_file(source, tmp_path / "out.jsonl", local_backend,
                         ScoreOptions(chunk_rows=4, progress=False, delimiter=delimiter))
    out = read_rows(tmp_path / "out.jsonl")
    assert [r["sentiment"] for r in out] == ["positive", "negative"]
    assert summary["scored"] == 2 and summary["evaluation"]["evaluated"] == 2


def test_a_one_column_file_is_not_mistaken_for_another_delimiter(tmp_path: Path, local_backend) -> None:
    source = tmp_path / "in.csv"
    source.write_text("review\n\"great; fun, really\"\nawful\n", encoding="utf-8")
    assert score_file(source, tmp_path / "out.csv", local_backend, OPTIONS)["scored"] == 2


# ------------------------------------------------------------------ kind 7: the common labelled layout


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "tsv"])
@pytest.mark.parametrize("labels", [("positive", "negative"), ("1", "0"), ("pos", "neg")])
def test_text_and_label_columns_work_without_flags(tmp_path: Path, local_backend, reference, fmt: str,
                                                   labels: tuple[str, str]) -> None:
    texts = make_reviews(11, seed=4)
    rows = [{"text": t, "label": labels[i % 2]} for i, t in enumerate(texts)]
    source = write_rows(tmp_path / f"in.{fmt}", rows)
    summary = score_file(source, tmp_path / f"out.{fmt}", local_backend, OPTIONS)
    out = read_rows(tmp_path / f"out.{fmt}")
    assert [r["label"] for r in out] == [r["label"] for r in rows]  # the gold labels are untouched
    assert [probability(r["probability"]) for r in out] == pytest.approx(reference(texts), abs=1e-6)
    assert [r["predicted_label"] for r in out] == [
        "positive" if p >= 0.5 else "negative" for p in reference(texts)]
    assert summary["evaluation"]["evaluated"] == 11  # the label column was used as the gold labels
    added = ["probability", "predicted_label", "known_word_fraction"]
    assert summary["columns_used"] == {"text": "text", "label": "label", "added": added,
                                       "encoding": None if fmt == "parquet" else "utf-8", "notes": []}


def test_the_columns_used_are_printed(tmp_path: Path, tiny_model: Path, capsys) -> None:
    source = write_rows(tmp_path / "in.csv", [{"Text": "great fun", "Label": "1"}, {"Text": "awful", "Label": "0"}])
    assert main(["score", str(source), "--output", str(tmp_path / "out.csv"), "--local", str(tiny_model),
                 "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ("text from column 'Text', gold labels from 'Label'; added columns 'probability' (P(positive)), "
            "'label' (predicted label), 'known_word_fraction' (share of its words the model knew whole)") in printed
    assert "evaluated 2 labelled rows" in printed


def test_ambiguous_text_columns_are_refused_and_ambiguous_labels_not_evaluated(tmp_path: Path,
                                                                              local_backend) -> None:
    both = write_rows(tmp_path / "both.csv", [{"review": "great", "text": "awful"}])
    with pytest.raises(FormatError, match=r"several candidates \['review', 'text'\].*--text-column"):
        score_file(both, tmp_path / "out.csv", local_backend, OPTIONS)
    labels = write_rows(tmp_path / "labels.csv", [{"text": "great", "label": "1", "sentiment": "negative"}])
    summary = score_file(labels, tmp_path / "out.csv", local_backend, OPTIONS)
    assert summary["evaluation"] is None and summary["scored"] == 1
    assert any("several gold-label candidates" in n and "--label-column" in n
               for n in summary["columns_used"]["notes"])
    chosen = score_file(labels, tmp_path / "chosen.csv", local_backend,
                        ScoreOptions(chunk_rows=4, progress=False, label_column="sentiment"))
    assert chosen["evaluation"]["evaluated"] == 1
    off = score_file(both, tmp_path / "off.csv", local_backend,
                     ScoreOptions(chunk_rows=4, progress=False, text_column="text", label_column=""))
    assert off["evaluation"] is None and off["columns_used"]["text"] == "text"


def test_added_column_names_step_aside_only_when_defaulted() -> None:
    assert added_columns(["text", "label"], None, None) == ("probability", "predicted_label", "known_word_fraction")
    assert added_columns(["probability", "label", "predicted_label"], None, None) == (
        "predicted_probability", "predicted_label_2", "known_word_fraction")
    assert added_columns(["text"], "p", "y", "k") == ("p", "y", "k")
    with pytest.raises(ValueError, match="already has column"):
        added_columns(["text", "label"], None, "label")


def test_progress_bar_ends_at_the_record_count_not_the_line_count(tmp_path: Path, local_backend, capsys) -> None:
    rows = [{"review": f"line one of {i}\nline two\nthree", "id": str(i)} for i in range(20)]
    source = write_rows(tmp_path / "in.csv", rows)  # 61 physical lines, 20 records
    score_file(source, tmp_path / "out.csv", local_backend, ScoreOptions(chunk_rows=7, progress=True))
    final = capsys.readouterr().err.strip().split("\r")[-1]
    assert re.search(r"\b20(\.0)?/20(\.0)? ", final), final  # was .../60: physical lines
