"""``score --ray``: the same scoring on Ray Data, for inputs one machine cannot score in time.

Ray's readers split the input into blocks; ``map_batches`` sends them through a pool of
actors, each holding one :class:`~client.backends.LocalModel` (one ONNX Runtime session
with as many intra-op threads as CPUs the actor reserves); Ray's writers write the output.
Scores are those of ``--local``: same loader, same tokenization, same graph.

Differences from the single-process path, by design of Ray Data:
- the output is a folder of files (one per write task; sorted by name they hold the rows
  in input order, which is kept with ``preserve_order``), committed by renaming a staging
  folder when the whole dataset is written;
- no ``--resume`` (Ray retries failed tasks itself; an interrupted run leaves only the
  staging folder, which the next run replaces);
- inputs: CSV/TSV, JSON Lines, Parquet and plain text (not aclImdb); every CSV column is
  read as a string, as the local path does. Bad rows (missing or empty text) get empty
  scores and are listed in the side file; undecodable bytes fail the read.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from client.evaluation import Confusion, parse_gold
from client.formats import FormatError, detect_format, open_reader
from client.scoring import ScoreOptions, default_side_paths

log = logging.getLogger("client.ray_scoring")
RAY_INPUTS = ("csv", "tsv", "jsonl", "parquet", "text")
RAY_OUTPUTS = ("csv", "tsv", "jsonl", "parquet")


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

        texts = batch.column(self.text_column).to_pylist()
        good = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        probabilities: list[float | None] = [None] * len(texts)
        labels: list[str | None] = [None] * len(texts)
        if good:
            scored = self.model.probabilities([texts[i] for i in good])
            for i, p, label in zip(good, scored.tolist(), self.model.labels_for(scored), strict=True):
                probabilities[i], labels[i] = p, label
        batch = batch.append_column(self.probability_column,
                                    pa.array(np.array(probabilities, dtype=object), type=pa.float32()))
        return batch.append_column(self.prediction_column, pa.array(labels, type=pa.string()))


def _read(ray: Any, path: Path, fmt: str, text_column: str, label_column: str | None) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if fmt in ("csv", "tsv"):
        header = open_reader(path, fmt, text_column, label_column)  # also checks the text column
        header.close()
        delimiter = "," if fmt == "csv" else "\t"
        return ray.data.read_csv(
            str(path), file_extensions=None,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header.columns},
                                                 strings_can_be_null=False))
    if fmt == "jsonl":
        return ray.data.read_json(str(path), lines=True, file_extensions=None)
    if fmt == "parquet":
        return ray.data.read_parquet(str(path), file_extensions=None)
    return ray.data.read_text(str(path), drop_empty_lines=False, file_extensions=None)


def _write(dataset: Any, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        dataset.write_parquet(str(path))
    elif fmt == "jsonl":
        from ray.data.datasource import FilenameProvider

        # One JSON object per line; Ray names such files .json unless told otherwise.
        dataset.write_json(str(path), filename_provider=FilenameProvider(file_format="jsonl"))
    else:
        import pyarrow.csv as pacsv

        delimiter = "," if fmt == "csv" else "\t"
        dataset.write_csv(str(path), arrow_csv_args_fn=lambda: {"write_options": pacsv.WriteOptions(
            delimiter=delimiter)})


def _read_back(ray: Any, path: Path, fmt: str) -> Any:
    """The written output, through Ray's readers, in input order."""
    if fmt == "parquet":
        return ray.data.read_parquet(str(path))
    if fmt == "jsonl":
        return ray.data.read_json(str(path), lines=True)
    import pyarrow.csv as pacsv

    delimiter = "," if fmt == "csv" else "\t"
    return ray.data.read_csv(str(path), parse_options=pacsv.ParseOptions(delimiter=delimiter,
                                                                         newlines_in_values=True),
                             file_extensions=None)


def score_with_ray(input_path: str | Path, output: str | Path, model_path: str | Path,
                   options: ScoreOptions | None = None, *, address: str | None = None,
                   actors: int | None = None, threads: int = 1, batch_size: int = 64,
                   precision: str = "fp32") -> dict[str, Any]:
    """Score ``input_path`` into the folder ``output`` on Ray Data; returns the summary."""
    import ray

    options = options or ScoreOptions()
    input_path, output = Path(input_path), Path(output)
    in_fmt = detect_format(input_path, options.input_format)
    out_fmt = options.output_format or (detect_format(output) if output.suffix else in_fmt)
    if in_fmt not in RAY_INPUTS or out_fmt not in RAY_OUTPUTS:
        raise FormatError(f"--ray reads {', '.join(RAY_INPUTS)} and writes {', '.join(RAY_OUTPUTS)}; "
                          f"got {in_fmt} -> {out_fmt} (score aclImdb or write text without --ray)")
    text_column = "text" if in_fmt == "text" else options.text_column
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # output rows in input order
        context.enable_progress_bars = options.progress
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # Leave a CPU for the read and write tasks, or they wait behind busy actors.
        pool = actors or max(1, (cpus - 1) // threads)
        dataset = _read(ray, input_path, in_fmt, text_column, options.label_column)
        if text_column not in dataset.schema().names:
            raise FormatError(f"{input_path}: no column {text_column!r} (columns: {dataset.schema().names})")
        scored = dataset.map_batches(
            ScoringActor, batch_format="pyarrow", batch_size=max(batch_size, 1024),  # sorted by length within each call
            compute=ray.data.ActorPoolStrategy(size=pool),
            num_cpus=threads, fn_constructor_args=(str(model_path), threads, batch_size, precision, text_column,
                                                   options.probability_column, options.prediction_column))
        staging = output.with_name(output.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        started = time.monotonic()
        _write(scored, staging, out_fmt)
        elapsed = time.monotonic() - started
        shutil.rmtree(output, ignore_errors=True)
        staging.rename(output)  # the folder appears complete or not at all
        summary = _summarize(ray, output, out_fmt, text_column, options, elapsed)
    finally:
        if started_here:
            ray.shutdown()
    summary.update(input=str(input_path), backend={"backend": "ray", "model": str(model_path), "actors": pool,
                                                   "threads_per_actor": threads, "precision": precision})
    summary_path = options.summary_path or default_side_paths(output)[1]
    summary_path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


def _summarize(ray: Any, output: Path, fmt: str, text_column: str, options: ScoreOptions,
               elapsed: float) -> dict[str, Any]:
    """Count rows, list bad rows and evaluate, streaming over the written output."""
    bad_default, _ = default_side_paths(output)
    bad_path = options.bad_rows_path or bad_default
    dataset = _read_back(ray, output, fmt)
    names = dataset.schema().names
    gold_column = options.label_column if options.label_column in names else None
    id_column = options.id_column if options.id_column in names else None
    columns = [c for c in (text_column, options.probability_column, options.prediction_column, gold_column,
                           id_column) if c]
    confusion, rows, bad, examples = Confusion(), 0, 0, []
    with bad_path.open("w", encoding="utf-8") as handle:
        for batch in dataset.select_columns(list(dict.fromkeys(columns))).iter_batches(batch_format="pyarrow"):
            data = {c: batch.column(c).to_pylist() for c in batch.column_names}
            for i, p in enumerate(data[options.probability_column]):
                rows += 1
                if p is None:
                    text = data[text_column][i]
                    row = {"row": rows, "error": "missing text" if text is None else "empty text"}
                    if id_column:
                        row["id"] = data[id_column][i]
                    handle.write(json.dumps(row, default=str) + "\n")
                    bad += 1
                    examples += [row] if len(examples) < 5 else []
                elif gold_column:
                    predicted = int(data[options.prediction_column][i] == "positive")
                    confusion.add(parse_gold(data[gold_column][i]), predicted)
    if not bad:
        bad_path.unlink()
    return {"output": str(output), "output_format": fmt, "rows": rows, "scored": rows - bad, "bad_rows": bad,
            "bad_rows_file": str(bad_path) if bad else None, "bad_row_examples": examples, "resumed_at_row": 0,
            "rows_this_run": rows, "seconds_this_run": round(elapsed, 3),
            "rows_per_second": round(rows / elapsed, 1) if elapsed > 0 else None,
            "evaluation": confusion.metrics() if gold_column else None}
