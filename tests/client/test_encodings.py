"""Encodings and invalid Unicode in every input container (issue 14, kinds 1 and 3), beyond the handed cases."""

from __future__ import annotations

import codecs
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client.__main__ import main
from client.api import SentimentClient
from client.encoding import EncodingError
from client.formats import FormatError, open_reader
from client.scoring import ScoreOptions, score_file
from tests.client.conftest import make_reviews
from tests.client.helpers import probability, read_rows
from tests.conftest import REPO_ROOT

OPTIONS = ScoreOptions(chunk_rows=3, progress=False)
# (codec that writes the mark itself or none, the mark to prepend)
MARKED = {"utf-8-sig": ("utf-8", codecs.BOM_UTF8), "utf-16-le": ("utf-16-le", codecs.BOM_UTF16_LE),
          "utf-16-be": ("utf-16-be", codecs.BOM_UTF16_BE), "utf-32-le": ("utf-32-le", codecs.BOM_UTF32_LE)}


def serialize(fmt: str, rows: list[dict]) -> str:
    """``rows`` (id, review) as the text of a ``fmt`` file (csv, tsv, jsonl, txt)."""
    if fmt in ("csv", "tsv"):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, list(rows[0]), delimiter="," if fmt == "csv" else "\t", lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return "".join(r["review"] + "\n" for r in rows)


def bad_rows(output: Path) -> list[dict]:
    path = output.with_name(output.name + ".bad_rows.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.mark.parametrize("mark", sorted(MARKED))
@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "txt"])
def test_a_byte_order_mark_is_consumed_in_every_text_format(tmp_path: Path, local_backend, reference, fmt: str,
                                                            mark: str) -> None:
    texts = make_reviews(7, seed=2)
    rows = [{"review": t, "id": str(i)} for i, t in enumerate(texts)]  # the text column first: the mark is on it
    codec, bom = MARKED[mark]
    source = tmp_path / f"in.{fmt}"
    source.write_bytes(bom + serialize(fmt, rows).encode(codec))
    output = tmp_path / "out.jsonl"
    summary = score_file(source, output, local_backend, OPTIONS)
    out = read_rows(output)
    column = "text" if fmt == "txt" else "review"
    assert [r[column] for r in out] == texts  # no mark in a name or a value
    assert all("\ufeff" not in key for key in out[0])
    assert summary["scored"] == 7 and summary["bad_rows"] == 0
    assert [r["probability"] for r in out] == pytest.approx(reference(texts), abs=1e-6)
    assert summary["columns_used"]["encoding"].endswith(", from its byte-order mark")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_a_mark_left_inside_a_column_name_is_not_part_of_it(tmp_path: Path, local_backend, fmt: str) -> None:
    """What a tool that read a marked file as plain UTF-8 leaves: pandas to Parquet, a doubly marked CSV."""
    source = tmp_path / f"in.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.table({"\ufeffreview": ["great fun", "awful"], "id": [1, 2]}), source)
    elif fmt == "jsonl":
        source.write_text('{"\ufeffreview": "great fun", "id": 1}\n{"\ufeffreview": "awful", "id": 2}\n',
                          encoding="utf-8")
    else:
        source.write_bytes(codecs.BOM_UTF8 * 2 + b"review,id\ngreat fun,1\nawful,2\n")
    summary = score_file(source, tmp_path / "out.jsonl", local_backend, OPTIONS)
    out = read_rows(tmp_path / "out.jsonl")
    assert [r["review"] for r in out] == ["great fun", "awful"] and summary["scored"] == 2
    assert all("\ufeff" not in key for row in out for key in row)


@pytest.mark.parametrize("fmt", ["text", "csv", "jsonl"])
def test_a_marked_utf16_input_read_from_a_pipe(tmp_path: Path, tiny_model: Path, fmt: str) -> None:
    """Readers peek at the mark without seeking, and read a pipe once."""
    texts = ["a wonderful film", "très ennuyeux"]
    data = codecs.BOM_UTF16_LE + serialize("txt" if fmt == "text" else fmt,
                                           [{"review": t} for t in texts]).encode("utf-16-le")
    output = tmp_path / "out.jsonl"
    result = subprocess.run([sys.executable, "-m", "client", "score", "/dev/stdin", "--input-format", fmt,
                             "--output", str(output), "--local", str(tiny_model), "--threads", "1", "--no-progress"],
                            input=data, cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    column = "text" if fmt == "text" else "review"
    assert [r[column] for r in read_rows(output)] == texts
    assert "(utf-16, from its byte-order mark)" in result.stdout.decode()


def test_a_mark_starting_a_later_jsonl_line_is_skipped(tmp_path: Path, local_backend) -> None:
    """Files concatenated with `cat` carry each one's mark into the middle of the whole."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"review": "great fun"}\n\xef\xbb\xbf{"review": "awful", "extra": 1}\n')
    summary = score_file(source, tmp_path / "out.csv", local_backend, OPTIONS)
    assert summary["scored"] == 2
    assert list(read_rows(tmp_path / "out.csv")[0])[:2] == ["review", "extra"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "txt"])
def test_a_file_in_another_encoding_names_rows_and_the_flag_then_reads_with_it(tmp_path: Path, local_backend,
                                                                               fmt: str) -> None:
    texts = ["Un film très réussi", "plain ascii review", "Mauvais, ennuyeux — à éviter"]
    source = tmp_path / f"in.{fmt}"
    source.write_bytes(serialize(fmt, [{"review": t} for t in texts]).encode("cp1252"))
    summary = score_file(source, tmp_path / "out.jsonl", local_backend, OPTIONS)
    reported = bad_rows(tmp_path / "out.jsonl")
    assert [r["row"] for r in reported] == [1, 3] and summary["scored"] == 1
    assert all("not valid UTF-8 (byte 0xe8" in r["error"] or "byte 0xe0" in r["error"] or "0x97" in r["error"]
               for r in reported)
    assert all("--encoding cp1252" in r["error"] for r in reported)  # what to do
    fixed = score_file(source, tmp_path / "fixed.jsonl", local_backend,
                       ScoreOptions(chunk_rows=3, progress=False, encoding="cp1252"))
    column = "text" if fmt == "txt" else "review"
    assert [r[column] for r in read_rows(tmp_path / "fixed.jsonl")] == texts and fixed["scored"] == 3


def test_utf16_without_a_mark_and_a_header_that_is_not_utf8_are_refused_with_the_flag(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes("review,sentiment\r\ngreat,positive\r\n".encode("utf-16-le"))
    with pytest.raises(FormatError, match="NUL bytes.*--encoding utf-16-le"):
        open_reader(source, "csv", None, None)
    assert open_reader(source, "csv", None, None, encoding="utf-16-le").columns == ["review", "sentiment"]
    source.write_bytes("critique_révisée,review\n1,great\n".encode("latin-1"))
    with pytest.raises(FormatError, match=r"header row is not valid UTF-8 \(byte 0xe9.*--encoding"):
        open_reader(source, "csv", None, None)
    with pytest.raises(FormatError, match="unknown --encoding 'klingon'"):
        open_reader(source, "csv", None, None, encoding="klingon")
    with pytest.raises(FormatError, match="--encoding applies to"):
        open_reader(tmp_path / "in.csv", "parquet", None, None, encoding="utf-8")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1), min_size=1, max_size=6),
       mark=st.sampled_from(sorted(MARKED) + ["utf-8"]), fmt=st.sampled_from(["csv", "tsv", "jsonl"]))
def test_any_text_reads_back_exactly_whatever_the_mark(tmp_path: Path, texts: list[str], mark: str, fmt: str) -> None:
    codec, bom = MARKED.get(mark, ("utf-8", b""))
    source = tmp_path / f"h.{fmt}"
    source.write_bytes(bom + serialize(fmt, [{"review": t} for t in texts]).encode(codec))
    reader = open_reader(source, fmt, None, None)
    try:
        records = [record for record, _text, _gold, _error in reader.rows()]
    finally:
        reader.close()
    assert reader.columns == ["review"]
    assert [r["review"] for r in records] == texts


def test_predict_argument_that_is_not_utf8_gets_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "client", "predict", b"caf\xe9 cr\xe8me", "--server", "127.0.0.1:9"],
                            cwd=REPO_ROOT, capture_output=True, timeout=60)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1
    assert "review argument 1 is not valid UTF-8 (byte 0xe9 at character 4)" in err and "iconv" in err
    assert "Traceback" not in err and "surrogates not allowed" not in err


def test_predict_argument_mark_is_stripped(server, reference, capsys) -> None:
    assert main(["predict", "\ufeffa wonderful film", "--server", server.address, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["text"] == "a wonderful film"
    assert printed["probability"] == pytest.approx(reference(["a wonderful film"])[0], abs=1e-6)


# ------------------------------------------------------------------ kind 3: invalid Unicode in any container


def test_lone_surrogates_in_any_field_are_bad_rows_and_every_output_stays_valid(tmp_path: Path,
                                                                               local_backend) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "review": "great fun"}\n'
                      '{"id": "b\\udc00", "review": "fine film"}\n'          # in another field
                      '{"id": "c", "review": "\\ude00 low half first"}\n'     # a low half alone
                      '{"id": "d", "review": "pair \\ud83d\\ude00 is fine"}\n'  # a whole pair: valid
                      '{"id": "e", "review": "boring", "meta": {"x": "\\ud800"}}\n', encoding="utf-8")
    for target in ("out.jsonl", "out.csv", "out.parquet", "out.txt"):
        summary = score_file(source, tmp_path / target, local_backend, OPTIONS)
        reported = bad_rows(tmp_path / target)
        assert [r["row"] for r in reported] == [2, 3], target
        assert "column 'id'" in reported[0]["error"] and "U+DC00" in reported[0]["error"]
        assert "column 'review'" in reported[1]["error"] and "U+DE00" in reported[1]["error"]
        assert summary["scored"] == 3
        if target == "out.parquet":
            read_rows(tmp_path / target)  # pyarrow's strict conversion of every string succeeds
        else:
            (tmp_path / target).read_bytes().decode("utf-8")  # strict: the output is valid UTF-8
    out = read_rows(tmp_path / "out.jsonl")
    assert out[1]["id"] == "b\udc00" and out[4]["meta"] == {"x": "\ud800"}  # JSON output keeps them, escaped
    assert read_rows(tmp_path / "out.csv")[1]["id"] == "b\ufffd"


def test_parquet_binary_text_column_and_bad_bytes_in_other_columns(tmp_path: Path, local_backend,
                                                                  reference) -> None:
    texts = [b"great fun", b"caf\xe9 bad bytes", b"a dull mess", b"ok film"]
    notes = pa.array([b"x", b"y", b"z", b"\xff\xfe"], pa.large_binary()).view(pa.large_string())
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"review": pa.array(texts, pa.binary()), "note": notes, "id": [1, 2, 3, 4]}), source)
    for target in ("out.csv", "out.parquet"):
        summary = score_file(source, tmp_path / target, local_backend, OPTIONS)
        reported = bad_rows(tmp_path / target)
        assert [(r["row"], r["id"]) for r in reported] == [(2, 2), (4, 4)]
        assert "column 'review' is not valid UTF-8 (byte 0xe9" in reported[0]["error"]
        assert "column 'note' is not valid UTF-8 (byte 0xff" in reported[1]["error"]
        out = read_rows(tmp_path / target)
        assert [probability(out[i]["probability"]) for i in (0, 2)] == pytest.approx(
            reference(["great fun", "a dull mess"]), abs=1e-6)
        assert summary["scored"] == 2
    assert read_rows(tmp_path / "out.csv")[0]["review"] == "great fun"  # binary text decoded, not b'...'


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), min_size=1,
                                       max_size=30),
                               st.none() | st.integers(0xD800, 0xDFFF)), min_size=1, max_size=8),
       container=st.sampled_from(["jsonl", "parquet"]))
def test_only_rows_with_invalid_text_are_bad_in_any_container(tmp_path: Path, local_backend, rows, container) -> None:
    texts = [t + "x" + (chr(s) if s is not None else "") for t, s in rows]  # "x": never blank
    source = tmp_path / f"h.{container}"
    if container == "jsonl":
        source.write_text("".join(json.dumps({"review": t}) + "\n" for t in texts), encoding="utf-8")
    else:  # the surrogate written as the bytes a careless encoder produces (CESU-style)
        raw = [t.encode("utf-8", "surrogatepass") for t in texts]
        pq.write_table(pa.table({"review": pa.array(raw, pa.binary()).view(pa.string())}), source)
    output = tmp_path / "h.csv"
    summary = score_file(source, output, local_backend, ScoreOptions(chunk_rows=3, progress=False))
    expected_bad = [i + 1 for i, (_, s) in enumerate(rows) if s is not None]
    assert [r["row"] for r in bad_rows(output)] == expected_bad
    assert summary["scored"] == len(rows) - len(expected_bad)
    output.read_bytes().decode("utf-8")


def test_the_client_never_sends_invalid_text_and_the_server_keeps_serving(server) -> None:
    with SentimentClient(server.address) as client:
        with pytest.raises(EncodingError, match=r"lone surrogate U\+D83D"):
            client.predict("half \ud83d")
        with pytest.raises(EncodingError, match="text 1 is not valid UTF-8"):
            client.predict_batch(["fine", "caf\udce9"])
        answered = []
        with pytest.raises(EncodingError, match="request 'b': text 0"):
            for key, predictions in client.stream([("a", ["good"]), ("b", ["\udfff"]), ("c", ["bad"])], window=1):
                answered.append((key, len(predictions)))
        assert answered == [("a", 1)]  # what came before was answered; nothing after it was sent
        assert client.predict("still serving").label in ("positive", "negative")


def test_raw_invalid_utf8_on_the_wire_is_invalid_argument(server) -> None:
    """Bytes a client without the checks above could send: refused, never UNKNOWN."""
    bad = b"\x0a\x06bad \xed\xa0"  # PredictRequest.text holding the start of an encoded surrogate
    with pytest.raises(grpc.RpcError) as caught:
        server.channel.unary_unary("/sentiment.v1.SentimentService/Predict")(bad, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
