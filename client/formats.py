"""Reading reviews from, and writing scored rows to, every supported file format.

Readers stream: they yield :class:`Chunk` objects of at most ``chunk_rows`` rows and never
hold the whole input. A row that cannot be scored (empty text, missing column, bytes that
are not UTF-8, text that is not valid Unicode) still comes through, with its ``error`` set,
so the output keeps every input row in input order and the side file can name it. Which
columns are read is decided by :mod:`client.columns`, how bytes become text by
:mod:`client.encoding`; writing the scored rows is :mod:`client.writers`.

Formats (by extension, or ``--input-format``): ``csv``, ``tsv``, ``jsonl`` (JSON Lines),
``parquet``, ``text`` (one review per line) and ``aclimdb`` (the aclImdb folder or its
``.tar.gz``; read only, one row per review file).
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import stat
import sys
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.columns import ColumnError, choose_columns, unique_names, without_marks
from client.encoding import BOM, ENCODING_HINT, EncodingError, open_text, repair, row_problem, unicode_problem

FORMATS = ("csv", "tsv", "jsonl", "parquet", "text", "aclimdb")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
               ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".txt": "text", ".text": "text"}
# Plain-text and aclImdb inputs have no header: their review column is always called this.
TEXT_COLUMN = "text"
ACLIMDB_COLUMNS = ["path", "split", "id", "rating", "sentiment", TEXT_COLUMN]
_ACL_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
# Delimiters csv.Sniffer may find in a header (see check_delimiter), and their --delimiter names.
SNIFFED_DELIMITERS = ",\t;|"
_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
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
    Lines, Python values of Arrow types, with text that is not UTF-8 repaired); Parquet
    chunks also carry the Arrow ``batch``, which a Parquet output writes untouched.
    ``texts[i]`` is None exactly when ``errors[i]`` says why row ``start+i`` is bad.
    """

    start: int
    texts: list[str | None]
    errors: list[str | None]
    gold: list[Any] | None
    records: list[dict[str, Any]]
    batch: Any = None  # pyarrow.RecordBatch for Parquet input

    def __len__(self) -> int:
        return len(self.texts)

    def value(self, index: int, column: str) -> Any:
        """One field of row ``start + index`` (None when the row lacks it)."""
        return self.records[index].get(column)

    def rows_as_records(self) -> list[dict[str, Any]]:
        """Each row's input fields as a dict."""
        return self.records


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


def text_error(value: Any) -> str | None:
    """Why ``value`` cannot be scored as a review (missing, not a string, blank, not Unicode), else None."""
    if value is None:
        return "missing text"
    if not isinstance(value, str):
        return f"text is not a string ({type(value).__name__})"
    if not value.strip():
        return "empty text"
    return unicode_problem(value)


def record_error(record: dict[str, Any]) -> str | None:
    """The first field of ``record`` that is not valid Unicode, phrased for the bad-rows file."""
    for column, value in record.items():
        if isinstance(value, str):
            problem = row_problem(column, value)
            if problem is not None:
                return problem
    return None


def parse_delimiter(value: str) -> str:
    """A ``--delimiter`` value: one character, or tab/comma/semicolon/pipe/``\\t`` by name."""
    value = _DELIMITER_NAMES.get(value.lower(), value)
    if len(value) != 1 or value in "\r\n\"":
        raise FormatError(f"--delimiter must be one character (or tab, comma, semicolon, pipe), got {value!r}")
    return value


def check_delimiter(path: Path, first_line: str, header: list[str], delimiter: str) -> None:
    """Refuse a header that another delimiter splits into more columns (csv.Sniffer's guess).

    A semicolon-separated ``.csv`` (spreadsheets in many locales) or a comma-separated
    ``.tsv`` read with the format's delimiter is one wide column; its rows would not match.
    """
    try:
        sniffed = csv.Sniffer().sniff(first_line, delimiters=SNIFFED_DELIMITERS).delimiter
    except csv.Error:
        return  # one column, or nothing that looks like a delimiter
    if sniffed != delimiter and len(next(csv.reader([first_line], delimiter=sniffed))) > len(header):
        name = {v: k for k, v in _DELIMITER_NAMES.items() if len(k) > 2}.get(sniffed, sniffed)
        raise FormatError(f"{path}: the header {first_line.rstrip(chr(13) + chr(10))[:200]!r} looks separated by "
                          f"{name!r}, not by the {_describe(delimiter)} this format is read with: pass "
                          f"--delimiter {name} (or --input-format to read it as another format)")


def _describe(delimiter: str) -> str:
    return {",": "comma", "\t": "tab"}.get(delimiter, repr(delimiter))


class Reader:
    """Base class: subclasses set ``columns`` (distinct names) and yield ``(record, text_or_None, gold, error)``.

    ``text_column``/``label_column`` are the columns chosen (see :func:`client.columns.choose_columns`),
    ``notes`` what the user should be told about the columns, ``encoding`` how the file was decoded.
    """

    fmt: str = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.text_column = TEXT_COLUMN
        self.label_column: str | None = None
        self.columns: list[str] = []
        self.repeated: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.encoding: str | None = None

    def choose(self, text_column: str | None, label_column: str | None) -> None:
        """Pick the text and gold-label columns among ``self.columns`` (FormatError when it cannot)."""
        try:
            choice = choose_columns(str(self.path), self.columns, self.repeated, text_column, label_column)
        except ColumnError as exc:
            self.close()
            raise FormatError(str(exc)) from exc
        self.text_column, self.label_column, self.notes = choice.text, choice.label, choice.notes + self.notes

    @property
    def has_labels(self) -> bool:
        return self.label_column is not None and self.label_column in self.columns

    def close(self) -> None:
        """Release the input file (readers that keep one open override this)."""

    def total_rows(self) -> int | None:
        """Row count if cheap to know (used for the progress bar's ETA), else None; may be an upper bound."""
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


def _open_text(path: Path, encoding: str | None, newline: str | None) -> tuple[Any, str]:
    try:
        return open_text(path, encoding, newline)
    except EncodingError as exc:
        raise FormatError(str(exc)) from exc


class DelimitedReader(Reader):
    """CSV or TSV with a header row; every field is kept as the exact string read.

    The file is opened once and read in one pass, so the input may be a pipe or FIFO. A
    byte-order mark is consumed (see :func:`client.encoding.open_text`); repeated column
    names get distinct names; a header that another delimiter would split is refused.
    """

    def __init__(self, path: Path, text_column: str | None, label_column: str | None, delimiter: str,
                 encoding: str | None = None, delimiter_given: bool = False) -> None:
        super().__init__(path)
        self.fmt = "tsv" if delimiter == "\t" else "csv"
        self.delimiter = delimiter
        self.handle, self.encoding = _open_text(path, encoding, newline="")
        first_line = self.handle.readline()  # one physical line: a FIFO may hold no more yet
        self.reader = csv.reader(itertools.chain([first_line], self.handle), delimiter=delimiter)
        header = next(self.reader, None)
        if not header:
            self.close()
            raise FormatError(f"{path}: empty file, expected a header row naming the columns")
        problem = next((p for p in map(unicode_problem, header) if p), None)
        if problem is not None:
            self.close()
            raise FormatError(f"{path}: the header row is {problem}; {ENCODING_HINT}")
        if not delimiter_given:
            try:
                check_delimiter(path, first_line, header, delimiter)
            except FormatError:
                self.close()
                raise
        header, self.notes = without_marks(header)
        self.columns, self.repeated = unique_names(header)
        self.choose(text_column, label_column)

    def close(self) -> None:
        self.handle.close()

    def total_rows(self) -> int | None:
        lines = count_lines(self.path)  # an upper bound when quoted fields span lines
        return None if lines is None else max(lines - 1, 0)

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        width = len(self.columns)
        for fields in self.reader:
            raw = dict(zip(self.columns, fields, strict=False))
            error = record_error(raw)
            record = {column: repair(value) for column, value in raw.items()} if error else raw
            text = record.get(self.text_column)
            if error is None:
                error = f"row has {len(fields)} fields, the header has {width}" if len(fields) != width \
                    else text_error(text)
            gold = record.get(self.label_column) if self.label_column else None
            yield record, None if error else text, gold, error


class JsonLinesReader(Reader):
    """One JSON object per line; the columns are the union of all objects' keys in first-seen order.

    A regular file is read twice (once for the keys, once to score); from a pipe the
    columns are the first object's keys, and a writer with fixed columns refuses a later
    key it would have to drop (:func:`write_part`). A key repeated inside one object keeps
    every value (``key``, ``key.1`` ...); a byte-order mark starting any line is skipped.
    """

    fmt = "jsonl"

    def __init__(self, path: Path, text_column: str | None, label_column: str | None,
                 encoding: str | None = None) -> None:
        super().__init__(path)
        self.encoding_flag = encoding
        self.handle, self.encoding = _open_text(path, encoding, newline="\n")
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
        self.invalid_text_row: int | None = None  # first row with a lone surrogate (regular files)
        self.complete_columns = _is_regular(path)
        if self.complete_columns:
            self._collect_keys()
        self.choose(text_column, label_column)

    def _collect_keys(self) -> None:
        keys = dict.fromkeys(self.columns)
        repeated: dict[str, int] = {}
        handle, _ = _open_text(self.path, self.encoding_flag, newline="\n")
        with handle:
            for number, line in enumerate(handle, 1):
                record, error, copies = self._parse(line)
                keys.update(dict.fromkeys(record))
                if self.invalid_text_row is None and error is not None and "not valid Unicode" in error:
                    self.invalid_text_row = number
                for key in copies:
                    repeated.setdefault(key, number)
        if len(keys) > len(self.columns):
            self.notes.append(f"records have different keys: all {len(keys)} kept as columns (the first record "
                              f"has {len(self.columns)}; missing values are empty)")
        self.columns = list(keys)
        self.notes += [f"key {key!r} repeated within an object (first at row {row}): each copy kept, the later "
                       f"as {key + '.1'!r} ..." for key, row in repeated.items()]

    def close(self) -> None:
        self.handle.close()

    def total_rows(self) -> int | None:
        return count_lines(self.path)

    @staticmethod
    def _parse(line: str) -> tuple[dict[str, Any], str | None, dict[str, list[str]]]:
        """The object on ``line`` (repaired when not valid Unicode), the row's error, and its repeated keys."""
        line = line.rstrip("\r\n").removeprefix(BOM)
        problem = unicode_problem(line)
        if problem is not None:
            line = repair(line)
            problem = f"line is {problem}; {ENCODING_HINT}" if problem.startswith("not valid UTF-8") else None
        if not line.strip():
            return {}, "empty line", {}
        repeated: dict[str, list[str]] = {}

        def distinct_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            names, copies = unique_names(without_marks([key for key, _ in pairs])[0])
            repeated.update(copies)
            return dict(zip(names, (value for _, value in pairs), strict=True))

        try:
            parsed = json.loads(line, object_pairs_hook=distinct_keys)
        except json.JSONDecodeError as exc:
            return {}, problem or f"invalid JSON ({exc.msg} at column {exc.colno})", {}
        if not isinstance(parsed, dict):
            return {}, problem or "not a JSON object", {}
        return parsed, problem or record_error(parsed), repeated

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        for line in itertools.chain(self.pending, self.handle):
            record, error, repeated = self._parse(line)
            if error is None and self.text_column in repeated:
                copies = repeated[self.text_column]
                error = (f"key {self.text_column!r} appears {len(copies)} times in the object (kept as {copies}): "
                         "which one to score is not known; fix the record")
            if error is None:
                error = (f"missing column {self.text_column!r}" if self.text_column not in record
                         else text_error(record[self.text_column]))
            gold = record.get(self.label_column) if self.label_column else None
            yield record, None if error else record[self.text_column], gold, error


class TextReader(Reader):
    """One review per line; a blank line is a bad row (it still gets an output line). One pass: pipes work."""

    fmt = "text"

    def __init__(self, path: Path, text_column: str | None, label_column: str | None,
                 encoding: str | None = None) -> None:
        super().__init__(path)
        self.columns = [TEXT_COLUMN]
        self.handle, self.encoding = _open_text(path, encoding, newline="\n")
        self.choose(TEXT_COLUMN, label_column)

    def close(self) -> None:
        self.handle.close()

    def total_rows(self) -> int | None:
        return count_lines(self.path)

    def rows(self) -> Iterator[tuple[dict[str, Any], str | None, Any, str | None]]:
        for line in self.handle:
            text = line.rstrip("\r\n")
            error = row_problem(TEXT_COLUMN, text) or text_error(text)
            yield {TEXT_COLUMN: repair(text)}, None if error else text, None, error


class AclImdbReader(Reader):
    """The aclImdb layout (``{train,test}/{pos,neg}/<id>_<rating>.txt``), folder or archive.

    Archives are streamed member by member (nothing unpacked); folders are read in sorted
    order. The folder name gives the ``sentiment`` column, so evaluation works out of the box.
    """

    fmt = "aclimdb"

    def __init__(self, path: Path, text_column: str | None, label_column: str | None) -> None:
        super().__init__(path)
        self.columns = list(ACLIMDB_COLUMNS)
        self.choose(TEXT_COLUMN, label_column)

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
            text = raw.decode("utf-8", "surrogateescape").removeprefix(BOM)
            error = row_problem(TEXT_COLUMN, text) or text_error(text)
            sentiment = "positive" if polarity == "pos" else "negative"
            record = {"path": match.group(0).lstrip("/"), "split": split, "id": int(review_id),
                      "rating": int(rating), "sentiment": sentiment, TEXT_COLUMN: repair(text)}
            gold = record.get(self.label_column) if self.label_column else None
            yield record, None if error else text, gold, error


class ParquetReader(Reader):
    """Parquet via pyarrow, one record batch at a time; whole row groups are skipped on resume.

    Repeated column names get distinct names (the batches are renamed); a text column of
    string or binary type is decoded row by row, so one value that is not UTF-8 is one bad row.
    """

    fmt = "parquet"

    def __init__(self, path: Path, text_column: str | None, label_column: str | None) -> None:
        import pyarrow.parquet as pq

        super().__init__(path)
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for non-Parquet files
            raise FormatError(f"{path}: not a readable Parquet file ({exc})") from exc
        names = list(self.file.schema_arrow.names)
        cleaned, self.notes = without_marks(names)
        self.columns, self.repeated = unique_names(cleaned)
        self.renamed = self.columns != names
        self.choose(text_column, label_column)

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
            if self.renamed:
                batch = batch.rename_columns(self.columns)
            yield arrow_chunk(row, batch, self.text_column, self.label_column if self.has_labels else None)
            row += batch.num_rows


def is_text_like(arrow_type: Any) -> bool:
    import pyarrow as pa

    return (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_binary(arrow_type)
            or pa.types.is_large_binary(arrow_type) or pa.types.is_string_view(arrow_type)
            or pa.types.is_binary_view(arrow_type))


def text_values(array: Any, column: str) -> tuple[list[Any], list[str | None]]:
    """Values of an Arrow (chunked) array as Python objects, strings and binary decoded as UTF-8 row by row.

    Returns ``(values, errors)``: a value that is not UTF-8 comes back with U+FFFD in
    place of its bad bytes and an error naming the column and the byte; other rows never
    fail because of it (pyarrow's own conversion raises for the whole batch).
    """
    import pyarrow as pa

    if not is_text_like(array.type):
        return array.to_pylist(), [None] * len(array)
    values: list[Any] = []
    errors: list[str | None] = []
    for raw in array.cast(pa.large_binary()).to_pylist():
        if raw is None:
            values.append(None)
            errors.append(None)
            continue
        try:
            values.append(raw.decode("utf-8"))
            errors.append(None)
        except UnicodeDecodeError as exc:
            values.append(raw.decode("utf-8", "replace"))
            errors.append(f"column {column!r} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte "
                          f"{exc.start + 1}); fix the file where it was written: Parquet text must be UTF-8")
    return values, errors


def invalid_columns(batch: Any) -> list[str]:
    """Columns of an Arrow batch or table whose values fail full validation (strings that are not UTF-8)."""
    import pyarrow as pa

    try:
        batch.validate(full=True)
        return []
    except pa.ArrowInvalid:
        pass
    invalid = []
    for name, array in zip(batch.schema.names, batch.columns, strict=True):
        try:
            array.validate(full=True)
        except pa.ArrowInvalid:
            invalid.append(name)
    return invalid


def arrow_records(batch: Any) -> tuple[list[dict[str, Any]], list[str | None]]:
    """Rows of an Arrow batch as dicts (binary text decoded, bad UTF-8 repaired) and each row's first problem."""
    import pyarrow as pa

    names = batch.schema.names
    invalid = set(invalid_columns(batch))
    problems: list[str | None] = [None] * batch.num_rows
    columns = []
    for name, array in zip(names, batch.columns, strict=True):
        if name in invalid and is_text_like(array.type) and not pa.types.is_binary(array.type) \
                and not pa.types.is_large_binary(array.type):
            values, errors = text_values(array, name)
            problems = [p or e for p, e in zip(problems, errors, strict=True)]
        elif name in invalid:  # nested values holding bad strings: keep what converts, row by row
            values = []
            for index in range(len(array)):
                try:
                    values.append(array.slice(index, 1).to_pylist()[0])
                except (UnicodeDecodeError, pa.ArrowInvalid):
                    values.append(None)
                    problems[index] = problems[index] or f"column {name!r} holds text that is not valid UTF-8"
        else:
            values = array.to_pylist()
        columns.append(values)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)], problems


def arrow_chunk(start: int, batch: Any, text_column: str, label_column: str | None,
                known_errors: Sequence[str | None] | None = None) -> Chunk:
    """A chunk of an Arrow record batch; ``known_errors`` are per-row reasons found earlier (None: none).

    The text column may be of string or binary type; a row whose text (or any other string
    field) is not UTF-8 is a bad row, the others are scored.
    """
    values, text_errors = text_values(batch.column(text_column), text_column)
    records, problems = arrow_records(batch)
    for record, value in zip(records, values, strict=True):
        record[text_column] = value  # decoded, also when the column is binary
    known = known_errors if known_errors is not None else [None] * len(values)
    errors = [k or t or p or text_error(v)
              for v, k, t, p in zip(values, known, text_errors, problems, strict=True)]
    texts = [None if e else v for v, e in zip(values, errors, strict=True)]
    gold = [r.get(label_column) for r in records] if label_column else None
    return Chunk(start, texts, errors, gold, records=records, batch=batch)


def open_reader(path: str | Path, fmt: str, text_column: str | None, label_column: str | None,
                encoding: str | None = None, delimiter: str | None = None) -> Reader:
    """A reader for ``path`` in format ``fmt`` (see :func:`detect_format`).

    ``text_column``/``label_column`` None: detect them (:mod:`client.columns`);
    ``encoding`` None: UTF-8 or what a byte-order mark says; ``delimiter`` None: the
    format's own (comma, tab), refused when the header looks separated by another.
    """
    path = Path(path)
    if not path.exists():
        raise FormatError(f"no input at {path}")
    if fmt in ("csv", "tsv"):
        given = delimiter is not None
        return DelimitedReader(path, text_column, label_column,
                               parse_delimiter(delimiter) if given else ("," if fmt == "csv" else "\t"),
                               encoding, given)
    if delimiter is not None:
        raise FormatError(f"--delimiter applies to CSV and TSV input, not {fmt}")
    if fmt in ("jsonl", "text"):
        return (JsonLinesReader if fmt == "jsonl" else TextReader)(path, text_column, label_column, encoding)
    if encoding is not None:
        raise FormatError(f"--encoding applies to CSV, TSV, JSON Lines and text input; {fmt} text is UTF-8 "
                          "by definition")
    return (AclImdbReader if fmt == "aclimdb" else ParquetReader)(path, text_column, label_column)
