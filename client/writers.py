"""Writing scored rows: one *part* per chunk, merged into the output at the end.

A part is the unit that scoring commits atomically (see :mod:`client.scoring`). Every
output is valid UTF-8 (Parquet strings included): text that is not is written with U+FFFD,
except in JSON Lines, which keeps a lone surrogate as its JSON escape. A fixed-column output
(CSV, TSV, Parquet) refuses a record with a field it would have to drop.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.encoding import repair, unicode_problem
from client.formats import Chunk, FormatError, invalid_columns, is_text_like

OUTPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet", "text")


@dataclass
class OutputSpec:
    """What every part of one output has in common: format, input columns, added columns."""

    fmt: str
    columns: list[str]
    text_column: str
    probability_column: str = "probability"
    label_column: str = "label"
    arrow_schema: Any = field(default=None, repr=False)  # pyarrow.Schema of Parquet input
    known_column: str = "known_word_fraction"  # the readability signal (not in text output)
    # Columns added after those (score --explain): name -> pyarrow type name ("string", "float32").
    extra_columns: tuple[tuple[str, str], ...] = ()

    def check(self) -> None:
        clash = {self.probability_column, self.label_column, self.known_column,
                 *(n for n, _ in self.extra_columns)} & set(self.columns)
        if clash:
            raise FormatError(f"the input already has column(s) {sorted(clash)}: name the added columns "
                              "differently with --probability-column/--prediction-column/--known-column, or "
                              "rename the input's columns")
        if self.extra_columns and self.fmt == "text":
            raise FormatError("a text output has no room for added columns: write .csv, .tsv, .jsonl or .parquet")

    @property
    def out_columns(self) -> list[str]:
        return [*self.columns, self.probability_column, self.label_column, self.known_column,
                *(n for n, _ in self.extra_columns)]

    def extra_values(self, extras: dict[str, Any] | None) -> list[Any]:
        """The extra columns' values of one row (None where ``extras`` lacks them)."""
        return [None if extras is None else extras.get(name) for name, _ in self.extra_columns]


def format_probability(value: float) -> float:
    """The float32 probability as the shortest decimal that reads back to the same float32."""
    import numpy as np

    return float(str(np.float32(value)))


def write_part(path: Path, spec: OutputSpec, chunk: Chunk, probabilities: Sequence[float | None],
               labels: Sequence[str | None], known: Sequence[float | None] | None = None,
               extras: Sequence[dict[str, Any] | None] | None = None) -> None:
    """Write one chunk's rows, with the added columns, to ``path`` (a part file).

    ``known``: each row's known-word fraction (None: unknown); text output has no such column.
    ``extras``: per row, the values of ``spec.extra_columns`` (None: empty).
    """
    probs = [None if p is None else format_probability(p) for p in probabilities]
    knowns = [None if k is None else format_probability(k) for k in (known or [None] * len(probs))]
    added = [spec.extra_values(e) for e in (extras or [None] * len(probs))]
    if spec.fmt in ("csv", "tsv", "parquet") and chunk.batch is None:
        _check_fixed_columns(spec, chunk)
    if spec.fmt == "parquet":
        _write_parquet_part(path, spec, chunk, probs, labels, knowns, added)
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        if spec.fmt in ("csv", "tsv"):
            writer = csv.writer(handle, delimiter="," if spec.fmt == "csv" else "\t", lineterminator="\n")
            for record, p, label, k, more in zip(chunk.rows_as_records(), probs, labels, knowns, added, strict=True):
                writer.writerow([_csv_value(record.get(c)) for c in spec.columns]
                                + ["" if p is None else repr(p), label or "", "" if k is None else repr(k)]
                                + [_csv_value(v) for v in more])
        elif spec.fmt == "jsonl":
            for record, p, label, k, more in zip(chunk.rows_as_records(), probs, labels, knowns, added, strict=True):
                row = dict(record)
                row[spec.probability_column], row[spec.label_column], row[spec.known_column] = p, label, k
                row.update(zip((n for n, _ in spec.extra_columns), more, strict=True))
                handle.write(json_line(row))
        else:  # text: label, probability, review; tabs and newlines in the review become spaces
            for record, p, label in zip(chunk.rows_as_records(), probs, labels, strict=True):
                text = _csv_value(record.get(spec.text_column))
                text = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
                handle.write(f"{label or ''}\t{'' if p is None else repr(p)}\t{text}\n")


def json_line(value: Any) -> str:
    """``value`` as one JSON line, non-ASCII as is; a lone surrogate is kept, as a ``\\u`` escape."""
    line = json.dumps(value, ensure_ascii=False, default=str)
    if unicode_problem(line) is not None:  # not writable as UTF-8: escape, which loses nothing
        line = json.dumps(value, default=str)
    return line + "\n"


def _check_fixed_columns(spec: OutputSpec, chunk: Chunk) -> None:
    """Refuse a record with a field that a fixed-column output (CSV, TSV, Parquet) would drop."""
    known = set(spec.columns)
    for index, record in enumerate(chunk.rows_as_records()):
        extra = [key for key in record if key not in known]
        if extra:
            raise FormatError(f"row {chunk.start + index + 1} has field(s) {extra} that the first record lacks; a "
                              f"{spec.fmt} output has one set of columns ({spec.columns}) and would drop them. Write "
                              "JSON Lines (--output NAME.jsonl keeps every key), or read from a regular file "
                              "instead of a pipe (its keys are all collected first)")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return repair(json.dumps(value, ensure_ascii=False))
    return repair(str(value))


def _write_parquet_part(path: Path, spec: OutputSpec, chunk: Chunk, probs: list[float | None],
                        labels: Sequence[str | None], knowns: list[float | None], added: list[list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if chunk.batch is not None:
        table = pa.Table.from_batches([chunk.batch])
        for name in invalid_columns(chunk.batch):  # strings that are not UTF-8: written repaired, as in CSV
            index = table.schema.get_field_index(name)
            if is_text_like(table.schema.field(index).type):
                repaired = pa.array([_repaired_text(r.get(name)) for r in chunk.records],
                                    type=table.schema.field(index).type)
                table = table.set_column(index, table.schema.field(index), repaired)
    else:
        records = chunk.rows_as_records()
        table = pa.table({c: pa.array([_parquet_value(r.get(c)) for r in records], type=pa.string())
                          for c in spec.columns})
    table = table.append_column(spec.probability_column, pa.array(probs, type=pa.float32()))
    table = table.append_column(spec.label_column, pa.array(list(labels), type=pa.string()))
    table = table.append_column(spec.known_column, pa.array(knowns, type=pa.float32()))
    for i, (name, kind) in enumerate(spec.extra_columns):
        table = table.append_column(name, pa.array([row[i] for row in added], type=getattr(pa, kind)()))
    pq.write_table(table, path)


def _repaired_text(value: Any) -> Any:
    return repair(value) if isinstance(value, str) else value


def _parquet_value(value: Any) -> str | None:
    # Columns from text formats become strings: a CSV field has no type to keep.
    return None if value is None else _csv_value(value)


def merge_parts(parts: Sequence[Path], spec: OutputSpec, destination: Path) -> None:
    """Concatenate committed parts into ``destination`` (written beside it, then renamed)."""
    tmp = destination.with_name(f".{destination.name}.tmp-{os.getpid()}")
    try:
        if spec.fmt == "parquet":
            _merge_parquet(parts, tmp)
        else:
            with tmp.open("wb") as out:
                if spec.fmt in ("csv", "tsv"):
                    header = io.StringIO()
                    csv.writer(header, delimiter="," if spec.fmt == "csv" else "\t",
                               lineterminator="\n").writerow(spec.out_columns)
                    out.write(header.getvalue().encode("utf-8"))
                for part in parts:
                    with part.open("rb") as handle:
                        shutil.copyfileobj(handle, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


def _merge_parquet(parts: Sequence[Path], tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for part in parts:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
        if writer is None:
            writer = pq.ParquetWriter(tmp, pa.schema([]))
    finally:
        if writer is not None:
            writer.close()
