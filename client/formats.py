"""Reading reviews from, and writing scored rows to, every supported file format.

Readers stream: they yield :class:`Chunk` objects of at most ``chunk_rows`` rows and never
hold the whole input. A row that cannot be scored (empty text, missing column, undecodable
bytes) still comes through, with its ``error`` set, so the output keeps every input row in
input order and the side file can name it.

Writers write one *part* per chunk (the unit that scoring commits atomically) and merge the
parts into the final file at the end; see :mod:`client.scoring`.

Formats (by extension, or ``--input-format``): ``csv``, ``tsv``, ``jsonl`` (JSON Lines),
``parquet``, ``text`` (one review per line) and ``aclimdb`` (the aclImdb folder or its
``.tar.gz``; read only, one row per review file).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import shutil
import stat
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = ("csv", "tsv", "jsonl", "parquet", "text", "aclimdb")
OUTPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet", "text")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text"}
# Plain-text and aclImdb inputs have no header: their review column is always called this.
TEXT_COLUMN = "text"
ACLIMDB_COLUMNS = ["path", "split", "id", "rating", "sentiment", TEXT_COLUMN]
_ACL_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
# Reviews can be long; the csv module refuses fields over 128 KiB by default.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class FormatError(ValueError):
    """The input cannot be read as the requested format (not a per-row problem)."""


def detect_format(path: str | Path, explicit: str | None = None) -> str:
    """The format named by ``explicit``, else guessed from the path (folder, extension)."""
    if explicit:
        if explicit not in FORMATS:
            raise FormatError(f"unknown format {explicit!r}; choose one of {', '.join(FORMATS)}")
        return explicit
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith((".tar.gz", ".tgz", ".tar")):
        return "aclimdb"
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise FormatError(f"cannot tell the format of {path} from its extension; use one of "
                          f"{', '.join(sorted(_EXTENSIONS))} or pass --input-format/--output-format")
    return fmt


@dataclass
class Chunk:
    """Consecutive input rows ``start .. start+len-1`` (0-based row numbers, header excluded).

    ``records`` holds each row's fields as read (strings for CSV, JSON values for JSON
    Lines); Parquet chunks carry the Arrow ``batch`` instead, so types survive untouched.
    ``texts[i]`` is None exactly when ``errors[i]`` says why row ``start+i`` is bad.
    """

    start: int
    texts: list[str | None]
    errors: list[str | None]
    gold: list[Any] | None
    records: list[dict[str, Any]] | None = None
    batch: Any = None  # pyarrow.RecordBatch for Parquet input

    def __len__(self) -> int:
        return len(self.texts)

    def value(self, index: int, column: str) -> Any:
        """One field of row ``start + index`` (None when the row lacks it)."""
        if self.records is not None:
            return self.records[index].get(column)
        if column not in self.batch.schema.names:
            return None
        return self.batch.column(column)[index].as_py()

    def rows_as_records(self) -> list[dict[str, Any]]:
        """Each row's input fields as a dict (converting an Arrow batch when needed)."""
        if self.records is not None:
            return self.records
        return self.batch.to_pylist()


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def count_lines(path: Path) -> int | None:
    """Newline count of a regular file, fast (bytes only); None for pipes and FIFOs."""
    if not _is_regular(path):
        return None
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _clean(value: str) -> tuple[str, bool]:
    """``value`` with undecodable bytes (read as surrogate escapes) replaced by U+FFFD.

    Returns ``(text, had_bad_bytes)``; the output is then always valid UTF-8.
    """
    try:
        value.encode("utf-8")
        return value, False
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), True


def text_error(value: Any) -> str | None:
    if value is None:
        return "missing text"
    if not isinstance(value, str):
        return f"text is not a string ({type(value).__name__})"
    if not value.strip():
        return "empty text"
    return None


class Reader:
    """Base class: subclasses yield ``(record, text_or_None, gold, error)`` per row."""

    fmt: str = ""

    def __init__(self, path: Path, text_column: str, label_column: str | None) -> None:
        self.path = path
        self.text_column = text_column
        self.label_column = label_column
        self.columns: list[str] = []

    @property
    def has_labels(self) -> bool:
        return self.label_column is not None and self.label_column in self.columns

    def close(self) -> None:
        """Release the input file (readers that keep one open override this)."""

    def total_rows(self) -> int | None:
        """Row count if cheap to know (used for the progress bar's ETA), else None."""
        return None

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        raise NotImplementedError

    def chunks(self, chunk_rows: int, skip: int = 0) -> Iterator[Chunk]:
        """Chunks from row ``skip`` on; skipped rows are parsed but never scored."""
        start, records, texts, errors, gold = skip, [], [], [], []
        for number, (record, text, label, error) in enumerate(self.rows()):
            if number < skip:
                continue
            records.append(record)
            texts.append(text)
            errors.append(error)
            gold.append(label)
            if len(texts) == chunk_rows:
                yield Chunk(start, texts, errors, gold if self.has_labels else None, records)
                start, records, texts, errors, gold = start + len(texts), [], [], [], []
        if texts:
            yield Chunk(start, texts, errors, gold if self.has_labels else None, records)


class DelimitedReader(Reader):
    """CSV or TSV with a header row; every field is kept as the exact string read.

    The file is opened once and read in one pass, so the input may be a pipe or FIFO.
    """

    def __init__(self, path: Path, text_column: str, label_column: str | None, delimiter: str) -> None:
        super().__init__(path, text_column, label_column)
        self.fmt = "csv" if delimiter == "," else "tsv"
        # surrogateescape: undecodable bytes become a per-row error, not a crash of the run.
        self.handle = path.open("r", encoding="utf-8", errors="surrogateescape", newline="")
        self.reader = csv.reader(self.handle, delimiter=delimiter)
        header = next(self.reader, None)
        if not header:
            self.close()
            raise FormatError(f"{path}: empty file, expected a header row naming the columns")
        self.columns = [_clean(name)[0] for name in header]
        if text_column not in self.columns:
            self.close()
            raise FormatError(f"{path}: no column {text_column!r} (columns: {self.columns}); pass --text-column")

    def close(self) -> None:
        self.handle.close()

    def total_rows(self) -> int | None:
        lines = count_lines(self.path)  # an upper bound when quoted fields span lines
        return None if lines is None else max(lines - 1, 0)

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        width = len(self.columns)
        for fields in self.reader:
            bad_bytes = False
            cleaned = []
            for value in fields:
                value, bad = _clean(value)
                cleaned.append(value)
                bad_bytes |= bad
            record = dict(zip(self.columns, cleaned, strict=False))
            text = record.get(self.text_column)
            if bad_bytes:
                error = "undecodable bytes (not UTF-8)"
            elif len(fields) != width:
                error = f"row has {len(fields)} fields, the header has {width}"
            else:
                error = text_error(text)
            gold = record.get(self.label_column) if self.label_column else None
            yield record, None if error else text, gold, error


class JsonLinesReader(Reader):
    """One JSON object per line; the columns are the first object's keys (one pass, pipes work)."""

    fmt = "jsonl"

    def __init__(self, path: Path, text_column: str, label_column: str | None) -> None:
        super().__init__(path, text_column, label_column)
        self.handle = path.open("r", encoding="utf-8", errors="surrogateescape", newline="\n")
        self.pending: list[str] = []  # lines read while looking for the columns, replayed by rows()
        for line in self.handle:
            self.pending.append(line)
            parsed = self._parse(line)[0]
            if parsed:
                self.columns = list(parsed)
                break
        if not self.columns:
            self.close()
            raise FormatError(f"{path}: no JSON object found (expected one object per line)")

    def close(self) -> None:
        self.handle.close()

    def total_rows(self) -> int | None:
        return count_lines(self.path)

    @staticmethod
    def _parse(line: str) -> tuple[dict[str, Any], str | None]:
        line, bad_bytes = _clean(line.rstrip("\r\n"))
        if bad_bytes:
            return {}, "undecodable bytes (not UTF-8)"
        if not line.strip():
            return {}, "empty line"
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError as exc:
            return {}, f"invalid JSON ({exc.msg} at column {exc.colno})"
        return (parsed, None) if isinstance(parsed, dict) else ({}, "not a JSON object")

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        for line in itertools.chain(self.pending, self.handle):
            record, error = self._parse(line)
            if error is None:
                error = (f"missing column {self.text_column!r}" if self.text_column not in record
                         else text_error(record[self.text_column]))
            gold = record.get(self.label_column) if self.label_column else None
            yield record, None if error else record[self.text_column], gold, error


class TextReader(Reader):
    """One review per line; a blank line is a bad row (it still gets an output line)."""

    fmt = "text"

    def __init__(self, path: Path, text_column: str, label_column: str | None) -> None:
        super().__init__(path, TEXT_COLUMN, label_column)
        self.columns = [TEXT_COLUMN]

    def total_rows(self) -> int | None:
        return count_lines(self.path)

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        with self.path.open("r", encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
            for line in handle:
                text, bad_bytes = _clean(line.rstrip("\r\n"))
                error = "undecodable bytes (not UTF-8)" if bad_bytes else text_error(text)
                yield {TEXT_COLUMN: text}, None if error else text, None, error


class AclImdbReader(Reader):
    """The aclImdb layout (``{train,test}/{pos,neg}/<id>_<rating>.txt``), folder or archive.

    Archives are streamed member by member (nothing unpacked); folders are read in sorted
    order. The folder name gives the ``sentiment`` column, so evaluation works out of the box.
    """

    fmt = "aclimdb"

    def __init__(self, path: Path, text_column: str, label_column: str | None) -> None:
        super().__init__(path, TEXT_COLUMN, label_column)
        self.columns = list(ACLIMDB_COLUMNS)

    def _files(self) -> Iterator[tuple[str, bytes]]:
        if self.path.is_dir():
            base = self.path / "aclImdb" if (self.path / "aclImdb").is_dir() else self.path
            for split in ("test", "train"):
                for polarity in ("neg", "pos"):
                    for file in sorted((base / split / polarity).glob("*.txt")):
                        yield f"aclImdb/{split}/{polarity}/{file.name}", file.read_bytes()
            return
        try:
            with tarfile.open(self.path, mode="r|*") as archive:  # stream mode: one pass, no seeking
                for member in archive:
                    if member.isfile() and _ACL_MEMBER.search(member.name):
                        handle = archive.extractfile(member)
                        if handle is not None:
                            yield member.name, handle.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FormatError(f"cannot read archive {self.path}: {exc}") from exc

    def total_rows(self) -> int | None:
        if not self.path.is_dir():
            return None  # a compressed archive can only be counted by reading it all
        base = self.path / "aclImdb" if (self.path / "aclImdb").is_dir() else self.path
        return sum(1 for _ in base.glob("t*/[pn][oe][sg]/*.txt"))

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        for name, raw in self._files():
            match = _ACL_MEMBER.search(name.replace("\\", "/"))
            if match is None:
                continue
            split, polarity, review_id, rating = match.groups()
            text, bad_bytes = _clean(raw.decode("utf-8", "surrogateescape"))
            error = "undecodable bytes (not UTF-8)" if bad_bytes else text_error(text)
            sentiment = "positive" if polarity == "pos" else "negative"
            record = {"path": match.group(0).lstrip("/"), "split": split, "id": int(review_id),
                      "rating": int(rating), "sentiment": sentiment, TEXT_COLUMN: text}
            gold = record.get(self.label_column) if self.label_column else None
            yield record, None if error else text, gold, error


class ParquetReader(Reader):
    """Parquet via pyarrow, one record batch at a time; whole row groups are skipped on resume."""

    fmt = "parquet"

    def __init__(self, path: Path, text_column: str, label_column: str | None) -> None:
        import pyarrow.parquet as pq

        super().__init__(path, text_column, label_column)
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet files
            raise FormatError(f"{path}: not a readable Parquet file ({exc})") from exc
        self.columns = list(self.file.schema_arrow.names)
        if text_column not in self.columns:
            raise FormatError(f"{path}: no column {text_column!r} (columns: {self.columns}); pass --text-column")

    def total_rows(self) -> int | None:
        return self.file.metadata.num_rows

    def chunks(self, chunk_rows: int, skip: int = 0) -> Iterator[Chunk]:
        first_group, row = 0, 0
        metadata = self.file.metadata
        while first_group < metadata.num_row_groups and row + metadata.row_group(first_group).num_rows <= skip:
            row += metadata.row_group(first_group).num_rows
            first_group += 1
        groups = list(range(first_group, metadata.num_row_groups))
        if not groups:
            return
        for batch in self.file.iter_batches(batch_size=chunk_rows, row_groups=groups):
            if row + batch.num_rows <= skip:
                row += batch.num_rows
                continue
            if row < skip:
                batch, row = batch.slice(skip - row), skip
            yield self._chunk(row, batch)
            row += batch.num_rows

    def _chunk(self, start: int, batch: Any) -> Chunk:
        return arrow_chunk(start, batch, self.text_column, self.label_column if self.has_labels else None)


def arrow_chunk(start: int, batch: Any, text_column: str, label_column: str | None,
                known_errors: Sequence[str | None] | None = None) -> Chunk:
    """A chunk of an Arrow record batch; ``known_errors`` are per-row reasons found earlier (None: none)."""
    values = batch.column(text_column).to_pylist()
    known = known_errors if known_errors is not None else [None] * len(values)
    errors = [known_error or text_error(v) for v, known_error in zip(values, known, strict=True)]
    texts = [None if e else v for v, e in zip(values, errors, strict=True)]
    gold = batch.column(label_column).to_pylist() if label_column else None
    return Chunk(start, texts, errors, gold, batch=batch)


def open_reader(path: str | Path, fmt: str, text_column: str, label_column: str | None) -> Reader:
    """A reader for ``path`` in format ``fmt`` (see :func:`detect_format`)."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"no input at {path}")
    if fmt in ("csv", "tsv"):
        return DelimitedReader(path, text_column, label_column, "," if fmt == "csv" else "\t")
    readers = {"jsonl": JsonLinesReader, "text": TextReader, "aclimdb": AclImdbReader, "parquet": ParquetReader}
    return readers[fmt](path, text_column, label_column)


# ----------------------------------------------------------------------------- writers


@dataclass
class OutputSpec:
    """What every part of one output has in common: format, input columns, added columns."""

    fmt: str
    columns: list[str]
    text_column: str
    probability_column: str = "probability"
    label_column: str = "label"
    arrow_schema: Any = field(default=None, repr=False)  # pyarrow.Schema of Parquet input
    # Columns added after the label (score --explain): name -> pyarrow type name ("string", "float32").
    extra_columns: tuple[tuple[str, str], ...] = ()

    def check(self) -> None:
        clash = {self.probability_column, self.label_column, *(n for n, _ in self.extra_columns)} & set(self.columns)
        if clash:
            raise FormatError(f"the input already has column(s) {sorted(clash)}: name the added columns "
                              "differently with --probability-column/--prediction-column, or rename the "
                              "input's columns")
        if self.extra_columns and self.fmt == "text":
            raise FormatError("a text output has no room for added columns: write .csv, .tsv, .jsonl or .parquet")

    @property
    def out_columns(self) -> list[str]:
        return [*self.columns, self.probability_column, self.label_column, *(n for n, _ in self.extra_columns)]

    def extra_values(self, extras: dict[str, Any] | None) -> list[Any]:
        """The added columns' values of one row (None where ``extras`` lacks them)."""
        return [None if extras is None else extras.get(name) for name, _ in self.extra_columns]


def format_probability(value: float) -> float:
    """The float32 probability as the shortest decimal that reads back to the same float32."""
    import numpy as np

    return float(str(np.float32(value)))


def write_part(path: Path, spec: OutputSpec, chunk: Chunk, probabilities: Sequence[float | None],
               labels: Sequence[str | None], extras: Sequence[dict[str, Any] | None] | None = None) -> None:
    """Write one chunk's rows, with the added columns, to ``path`` (a part file).

    ``extras``: per row, the values of ``spec.extra_columns`` (None: empty).
    """
    probs = [None if p is None else format_probability(p) for p in probabilities]
    added = [spec.extra_values(e) for e in (extras or [None] * len(probs))]
    if spec.fmt == "parquet":
        _write_parquet_part(path, spec, chunk, probs, labels, added)
        return
    with path.open("w", encoding="utf-8", newline="") as handle:
        if spec.fmt in ("csv", "tsv"):
            writer = csv.writer(handle, delimiter="," if spec.fmt == "csv" else "\t", lineterminator="\n")
            for record, p, label, more in zip(chunk.rows_as_records(), probs, labels, added, strict=True):
                writer.writerow([_csv_value(record.get(c)) for c in spec.columns]
                                + ["" if p is None else repr(p), label or ""] + [_csv_value(v) for v in more])
        elif spec.fmt == "jsonl":
            for record, p, label, more in zip(chunk.rows_as_records(), probs, labels, added, strict=True):
                row = dict(record)
                row[spec.probability_column], row[spec.label_column] = p, label
                row.update(zip((n for n, _ in spec.extra_columns), more, strict=True))
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        else:  # text: label, probability, review; tabs and newlines in the review become spaces
            for record, p, label in zip(chunk.rows_as_records(), probs, labels, strict=True):
                text = _csv_value(record.get(spec.text_column))
                text = text.replace("\t", " ").replace("\r", " ").replace("\n", " ")
                handle.write(f"{label or ''}\t{'' if p is None else repr(p)}\t{text}\n")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _write_parquet_part(path: Path, spec: OutputSpec, chunk: Chunk, probs: list[float | None],
                        labels: Sequence[str | None], added: list[list[Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if chunk.batch is not None:
        table = pa.Table.from_batches([chunk.batch])
    else:
        records = chunk.rows_as_records()
        table = pa.table({c: pa.array([_parquet_value(r.get(c)) for r in records], type=pa.string())
                          for c in spec.columns})
    table = table.append_column(spec.probability_column, pa.array(probs, type=pa.float32()))
    table = table.append_column(spec.label_column, pa.array(list(labels), type=pa.string()))
    for i, (name, kind) in enumerate(spec.extra_columns):
        table = table.append_column(name, pa.array([row[i] for row in added], type=getattr(pa, kind)()))
    pq.write_table(table, path)


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
