"""``score --ray``: the same scoring on Ray Data, for inputs one machine cannot score in time.

Ray's readers split the input into blocks; ``map_batches`` sends them through a pool of
actors, each holding one :class:`~client.backends.LocalModel` (one ONNX Runtime session
with as many intra-op threads as CPUs the actor reserves). Scores are those of ``--local``:
same loader, same tokenization, same graph.

The driver then consumes the scored blocks in input order (``preserve_order``) and commits
them with the same staged, atomic part files as ``--local``/``--server`` (see
:mod:`client.scoring`): one output file in the input's format, every row in input order,
bad rows listed, ``--resume`` without loss or duplicates. Ray's own file writers are not
used on purpose: with Ray 2.60 a write task concatenates its input blocks out of order
(about half the runs on a 2-CPU local cluster put 7-row blocks of a Parquet input out of
place), and a scored copy whose rows moved is wrong output.

Inputs: CSV/TSV, JSON Lines, Parquet and plain text through Ray's readers (every CSV column
is read as a string, as the local path does; undecodable bytes fail Ray's read, where
``--local`` reports them as bad rows), and aclImdb folders or archives, which have no Ray
reader: the driver streams them into Arrow blocks (their undecodable reviews are bad rows,
as with ``--local``). ``--resume`` keeps the committed parts; Ray cannot start a read
in the middle of a file, so the rows before the resume point are read and scored again
but not written twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from client.formats import FormatError, arrow_chunk, detect_format, open_reader, text_error, text_values
from client.scoring import ScoredChunk, ScoreOptions, ScoringRun, already_complete, write_scored

log = logging.getLogger("client.ray_scoring")
RAY_INPUTS = ("csv", "tsv", "jsonl", "parquet", "text", "aclimdb")
# Why a row was not scored: aclImdb rows the reader could not decode, and texts the actors
# refuse as --local does (over the length limit, nothing to read); listed as bad rows, and
# the column is dropped before anything is written.
ERROR_COLUMN = "__score_error"
KNOWN_COLUMN = "__known_word_fraction"  # each row's known-word fraction, written under --known-column's name
ACLIMDB_BLOCK_ROWS = 4096


def known_errors(table: Any) -> list[str | None]:
    """Per-row reasons a reader already found (aclImdb's undecodable reviews), else all None."""
    if ERROR_COLUMN in table.column_names:
        return table.column(ERROR_COLUMN).to_pylist()
    return [None] * table.num_rows


class ScoringActor:
    """One ONNX Runtime session per actor; scores an Arrow batch and appends the two columns."""

    def __init__(self, model_path: str, threads: int, batch_size: int, precision: str, text_column: str,
                 probability_column: str, prediction_column: str) -> None:
        from client.backends import LocalModel

        self.model = LocalModel(model_path, threads, batch_size, precision)
        self.text_column, self.probability_column = text_column, probability_column
        self.prediction_column = prediction_column

    def __call__(self, batch: Any) -> Any:
        import numpy as np
        import pyarrow as pa

        texts, undecodable = text_values(batch.column(self.text_column), self.text_column)
        errors = known_errors(batch)
        # The same rule the driver applies when it lists bad rows (client.formats.arrow_chunk).
        good = [i for i, (t, e, u) in enumerate(zip(texts, errors, undecodable, strict=True))
                if e is None and u is None and text_error(t) is None]
        probabilities: list[float | None] = [None] * len(texts)
        labels: list[str | None] = [None] * len(texts)
        known: list[float | None] = [None] * len(texts)
        if good:
            scored = self.model.score([texts[i] for i in good])  # refuses what the server refuses, as --local
            for i, p, label, error, k in zip(good, scored.probabilities.tolist(),
                                             self.model.labels_for(scored.probabilities), scored.errors,
                                             scored.known_word_fractions.tolist(), strict=True):
                if error is None:
                    probabilities[i], labels[i], known[i] = p, label, k
                else:
                    errors[i] = error
        if ERROR_COLUMN in batch.column_names:
            batch = batch.drop_columns([ERROR_COLUMN])
        batch = batch.append_column(ERROR_COLUMN, pa.array(errors, type=pa.string()))
        batch = batch.append_column(KNOWN_COLUMN, pa.array(np.array(known, dtype=object), type=pa.float32()))
        batch = batch.append_column(self.probability_column,
                                    pa.array(np.array(probabilities, dtype=object), type=pa.float32()))
        return batch.append_column(self.prediction_column, pa.array(labels, type=pa.string()))


def _read_aclimdb(ray: Any, path: Path, label_column: str | None) -> Any:
    """aclImdb has no Ray reader: the driver streams the folder or archive into Arrow blocks.

    The dataset is a fixed 100,000 reviews (about 130 MB of text), so holding it in Ray's
    object store is fine; the scoring still runs on the actor pool.
    """
    import pyarrow as pa

    def block(rows: list[tuple[dict[str, Any], str | None]]) -> Any:
        table = pa.Table.from_pylist([record for record, _ in rows])
        return table.append_column(ERROR_COLUMN, pa.array([error for _, error in rows], pa.string()))

    reader = open_reader(path, "aclimdb", "", label_column)
    blocks, rows = [], []
    try:
        for record, _text, _gold, error in reader.rows():
            rows.append((record, error))
            if len(rows) == ACLIMDB_BLOCK_ROWS:
                blocks.append(block(rows))
                rows = []
        if rows or not blocks:
            blocks.append(block(rows))
    finally:
        reader.close()
    return ray.data.from_arrow(blocks)


def _read(ray: Any, path: Path, fmt: str, header: list[str], label_column: str | None, delimiter: str) -> Any:
    """The input as a Ray dataset; ``header``: the columns our own reader found (CSV/TSV: all read as strings)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if fmt == "aclimdb":
        return _read_aclimdb(ray, path, label_column)
    if fmt in ("csv", "tsv"):
        return ray.data.read_csv(
            str(path), file_extensions=None,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                 strings_can_be_null=False))
    if fmt == "jsonl":
        return ray.data.read_json(str(path), lines=True, file_extensions=None)
    if fmt == "parquet":
        return ray.data.read_parquet(str(path), file_extensions=None)
    return ray.data.read_text(str(path), drop_empty_lines=False, file_extensions=None)


def _check_ray_can_read(path: Path, reader: Any) -> None:
    """Refuse inputs that Ray's Arrow readers would read differently from ``--local`` (lost or merged fields).

    Arrow's readers take UTF-8 only, and keep repeated column names as they are; our reader
    found out which applies, and the message says how to score the file anyway.
    """
    if reader.encoding not in (None, "utf-8", "utf-8, from its byte-order mark"):
        raise FormatError(f"{path} is read as {reader.encoding}; --ray reads UTF-8 only: convert the file "
                          "(e.g. iconv -t UTF-8) or score it without --ray")
    invalid = getattr(reader, "invalid_text_row", None)
    if invalid is not None:
        raise FormatError(f"{path}: row {invalid} holds text that is not valid Unicode (a lone surrogate), which "
                          "fails Ray's JSON reader for the whole file: score without --ray, which lists it as a "
                          "bad row, or fix that row")
    if reader.repeated:
        raise FormatError(f"{path} repeats column name(s) {sorted(reader.repeated)}; --ray would merge them: "
                          "rename them in the header, or score without --ray (which keeps each copy)")


class RayBackend:
    """What the summary and the resume state record about a --ray run (scoring is in the actors)."""

    def __init__(self, model_path: str | Path, precision: str, actors: int, threads: int) -> None:
        from client.backends import split_model_path
        from runtime.repository import load_version

        repository, name, version = split_model_path(model_path)
        self.model = load_version(repository, name, version)  # fail early, in the driver, on a bad model
        self.precision, self.actors, self.threads = precision, actors, threads

    @property
    def labels(self) -> tuple[str, str]:
        return self.model.labels

    def describe(self) -> dict[str, Any]:
        return {"backend": "ray", "model": self.model.name, "version": self.model.version,
                "precision": self.precision, "actors": self.actors, "threads_per_actor": self.threads}


def scored_chunks(scored: Any, chunk_rows: int, skip: int, text_column: str, label_column: str | None,
                  probability_column: str, prediction_column: str) -> Iterator[ScoredChunk]:
    """The scored dataset as ScoredChunks in input order, from row ``skip`` on."""
    import pyarrow as pa

    start = 0
    for table in scored.iter_batches(batch_size=chunk_rows, batch_format="pyarrow"):
        if start + table.num_rows <= skip:
            start += table.num_rows
            continue
        if start < skip:
            table, start = table.slice(skip - start), skip
        probabilities = table.column(probability_column).to_pylist()
        labels = table.column(prediction_column).to_pylist()
        refused = known_errors(table)
        known = table.column(KNOWN_COLUMN).to_pylist()
        table = table.drop_columns([c for c in (probability_column, prediction_column, ERROR_COLUMN, KNOWN_COLUMN)
                                    if c in table.column_names]).combine_chunks()
        batch = table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=table.schema)
        chunk = arrow_chunk(start, batch, text_column, label_column, refused)
        # A row the driver finds bad (say, another column that is not UTF-8) is not scored either.
        probabilities = [None if e else p for p, e in zip(probabilities, chunk.errors, strict=True)]
        labels = [None if e else label for label, e in zip(labels, chunk.errors, strict=True)]
        known = [None if e else k for k, e in zip(known, chunk.errors, strict=True)]
        yield ScoredChunk(chunk, probabilities, labels, chunk.errors, known)
        start += batch.num_rows


def score_with_ray(input_path: str | Path, output: str | Path, model_path: str | Path,
                   options: ScoreOptions | None = None, *, address: str | None = None,
                   actors: int | None = None, threads: int = 1, batch_size: int = 64,
                   precision: str = "fp32") -> dict[str, Any]:
    """Score ``input_path`` into ``output`` on Ray Data; returns the summary (also written as JSON)."""
    import ray

    options = options or ScoreOptions()
    input_path, output = Path(input_path), Path(output)
    in_fmt = detect_format(input_path, options.input_format)
    if in_fmt not in RAY_INPUTS:
        raise FormatError(f"--ray reads {', '.join(RAY_INPUTS)}; got {in_fmt}")
    # Our own reader checks the text column (text and aclImdb inputs name their own) and reads the header.
    reader = open_reader(input_path, in_fmt, options.text_column, options.label_column, options.encoding,
                         options.delimiter)
    text_column, header, total_rows = reader.text_column, reader.columns, reader.total_rows()
    label_column, notes, encoding = reader.label_column, reader.notes, reader.encoding
    delimiter = getattr(reader, "delimiter", ",")
    reader.close()
    _check_ray_can_read(input_path, reader)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # Leave a CPU for the read tasks, or they wait behind busy actors.
        pool = actors or max(1, (cpus - 1) // threads)
        run = ScoringRun(input_path, output, RayBackend(model_path, precision, pool, threads), options)
        done = already_complete(run)
        if done is not None:
            return done
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # blocks reach the driver in input order
        context.enable_progress_bars = False  # the driver's bar counts committed rows
        dataset = _read(ray, input_path, in_fmt, header, label_column, delimiter)
        columns = [c for c in dataset.schema().names if c not in (ERROR_COLUMN, KNOWN_COLUMN)]
        if text_column not in columns:
            raise FormatError(f"{input_path}: no column {text_column!r} (columns: {columns})")
        label_column = label_column if label_column in columns else None
        run.has_labels = label_column is not None
        spec, skip, parts = run.prepare(columns, text_column, label_column, notes, encoding)
        scored = dataset.map_batches(
            ScoringActor, batch_format="pyarrow", batch_size=max(batch_size, 1024),  # sorted by length within each call
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=threads, fn_constructor_args=(str(model_path), threads, batch_size, precision, text_column,
                                                   spec.probability_column, spec.label_column))
        chunks = scored_chunks(scored, options.chunk_rows, skip, text_column, label_column,
                               spec.probability_column, spec.label_column)
        return write_scored(run, spec, skip, parts, chunks, total_rows)
    finally:
        if started_here:
            ray.shutdown()
