"""``score_file``: stream a file of reviews through a backend into a scored copy of it.

How a run survives interruption: the output is built in a staging folder beside it,
``<output>.partial/``, one *part* per chunk of input rows. A part is written under a
temporary name, flushed to disk, then renamed to ``part-<first>-<end>.<ext>``; the rename is
atomic, so a part either exists whole or not at all, whatever kills the process. Each part
has a small JSON twin (its bad rows and confusion counts) that is renamed first. ``--resume``
keeps the committed parts, deletes leftovers, and continues at the first row no part
covers: no row is scored twice, none is lost. When every row is in, the parts are merged
into ``<output>`` (again via a temporary file and a rename), then the bad-rows side file
and the summary are written and the staging folder is removed. So ``<output>`` is never
half-written: it is absent until the run is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from client.backends import Backend
from client.columns import ColumnError, added_columns
from client.encoding import unicode_problem
from client.evaluation import Confusion, format_metrics, parse_gold
from client.explain import EXPLAIN_COLUMNS
from client.formats import Chunk, FormatError, detect_format, open_reader
from client.writers import OUTPUT_FORMATS, OutputSpec, json_line, merge_parts, write_part

log = logging.getLogger("client.scoring")
STATE_FILE = "state.json"
STATE_VERSION = 3  # 2: the input is also identified by a hash of its first and last MiB; 3: encoding, detected columns
SAMPLE_BYTES = 1 << 20
_EXT = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "parquet": "parquet", "text": "txt"}


class ScoringError(RuntimeError):
    """The run cannot start or continue (state mismatch, bad rows with --fail-on-bad-rows)."""


class BadRowsError(ScoringError):
    """A bad row was met and --fail-on-bad-rows asked to stop."""


@dataclass
class ScoreOptions:
    """Everything ``python -m client score`` can set, besides input, output and backend."""

    text_column: str | None = None  # None: detect (client.columns.TEXT_NAMES)
    id_column: str | None = "id"
    label_column: str | None = None  # None: detect (client.columns.LABEL_NAMES); "": no evaluation
    input_format: str | None = None
    output_format: str | None = None
    probability_column: str | None = None  # None: "probability", or "predicted_probability" if the input has it
    prediction_column: str | None = None  # None: "label", or "predicted_label" if the input has it
    # None: "known_word_fraction" (share of each text's words the model knew; not in text output)
    known_column: str | None = None
    encoding: str | None = None  # None: UTF-8, or what a byte-order mark says
    delimiter: str | None = None  # None: the format's own (CSV comma, TSV tab)
    chunk_rows: int = 4096  # rows per committed part: the most a crash can cost
    resume: bool = False
    fail_on_bad_rows: bool = False
    bad_rows_path: Path | None = None  # default: <output>.bad_rows.jsonl
    summary_path: Path | None = None  # default: <output>.summary.json
    progress: bool = True
    explain: bool = False  # add the turning point and most decisive sentence (server backends only)


@dataclass
class ScoredChunk:
    """A chunk with its scores: per row P(positive), label and known-word fraction, or None and why (``errors``)."""

    chunk: Chunk
    probabilities: list[float | None]
    labels: list[str | None]
    errors: list[str | None]
    known: list[float | None] | None = None  # None: no row has one
    extras: list[dict[str, Any] | None] = field(default_factory=list)  # per row, score --explain's columns


@dataclass
class PartStats:
    """What a committed part contributes to the summary (stored as the part's JSON twin)."""

    start: int
    end: int
    bad_rows: list[dict[str, Any]] = field(default_factory=list)
    confusion: dict[str, int] = field(default_factory=dict)


def staging_dir(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def default_side_paths(output: Path) -> tuple[Path, Path]:
    return output.with_name(output.name + ".bad_rows.jsonl"), output.with_name(output.name + ".summary.json")


def _fsync_write(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _part_name(start: int, end: int, ext: str) -> str:
    return f"part-{start:012d}-{end:012d}.{ext}"


def committed_parts(staging: Path, ext: str) -> list[tuple[Path, PartStats]]:
    """The committed parts in row order, checked to tile rows 0..end without gap or overlap.

    Leftovers of an interrupted commit (temporary files, a JSON twin whose part never got
    renamed) are deleted: they hold rows that were never committed and will be redone.
    """
    for leftover in staging.glob(".tmp-*"):
        leftover.unlink()
    parts = []
    for path in sorted(staging.glob(f"part-*.{ext}")):
        twin = path.with_suffix(".json")
        if not twin.is_file():
            raise ScoringError(f"{path} has no {twin.name}: the staging folder was edited by hand; "
                               f"remove {staging} and start again")
        parts.append((path, PartStats(**json.loads(twin.read_text(encoding="utf-8")))))
    for twin in staging.glob("part-*.json"):
        if not twin.with_suffix(f".{ext}").is_file():
            twin.unlink()
    expected = 0
    for path, stats in parts:
        if stats.start != expected:
            raise ScoringError(f"{path}: starts at row {stats.start}, expected {expected}; remove {staging} "
                               "and start again")
        expected = stats.end
    return parts


def _input_fingerprint(path: Path) -> dict[str, Any]:
    """Identifies the input for --resume: path, size, and a hash of its first and last MiB.

    The sample hash catches an input replaced by another of the same size (an edited or
    re-exported file) without reading a large file whole; a FIFO or folder has neither.
    """
    if not path.is_file():
        return {"input": str(path.resolve()), "input_bytes": None, "input_sample_sha256": None}
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if size > SAMPLE_BYTES:
            handle.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
            digest.update(handle.read(SAMPLE_BYTES))
    return {"input": str(path.resolve()), "input_bytes": size, "input_sample_sha256": digest.hexdigest()}


def _check_state(state: dict[str, Any], expected: dict[str, Any], staging: Path) -> None:
    for key, value in expected.items():
        if key in ("input_bytes", "input_sample_sha256") and (value is None or state.get(key) is None):
            continue
        if state.get(key) != value:
            raise ScoringError(f"cannot resume: {staging / STATE_FILE} records {key}={state.get(key)!r}, this run "
                               f"has {value!r}. Use the same input and options, or remove {staging}.")


class ScoringRun:
    """One scoring run (score_file or score_with_ray): its staging folder, output spec and running totals."""

    def __init__(self, input_path: Path, output: Path, backend: Backend, options: ScoreOptions) -> None:
        self.input_path, self.output, self.backend, self.options = input_path, output, backend, options
        self.in_fmt = detect_format(input_path, options.input_format)
        if output.is_dir():
            raise FormatError(f"--output {output} is a folder: name a file (.csv, .tsv, .jsonl, .parquet, .txt); "
                              "remove the folder if an earlier --ray run left it there")
        self.out_fmt = options.output_format or (
            detect_format(output) if output.suffix else self.in_fmt)
        if self.out_fmt not in OUTPUT_FORMATS:
            raise FormatError(f"cannot write {self.out_fmt}: give --output a .csv, .tsv, .jsonl, .parquet or .txt "
                              "name (aclImdb is an input format only)")
        self.ext = _EXT[self.out_fmt]
        self.staging = staging_dir(output)
        labels = getattr(backend, "labels", ("negative", "positive"))
        self.labels: tuple[str, str] = tuple(labels)  # type: ignore[assignment]
        self.has_labels = False
        self.columns_used: dict[str, Any] = {}

    def prepare(self, columns: list[str], text_column: str, label_column: str | None = None,
                notes: Sequence[str] = (), encoding: str | None = None,
                ) -> tuple[OutputSpec, int, list[tuple[Path, PartStats]]]:
        """Create or reopen the staging folder; returns the spec, first row to score, and parts.

        ``label_column`` is the gold-label column chosen (None: no evaluation), ``notes`` what
        the reader found about the columns, ``encoding`` how the input was decoded; all three
        go into the summary (and ``columns_used``) so the user is told what was read.
        """
        try:
            added = added_columns(columns, self.options.probability_column, self.options.prediction_column,
                                  self.options.known_column)
        except ColumnError as exc:
            raise FormatError(str(exc)) from exc
        spec = OutputSpec(self.out_fmt, columns, text_column, added[0], added[1], known_column=added[2],
                          extra_columns=EXPLAIN_COLUMNS if self.options.explain else ())
        spec.check()
        if self.options.explain and not hasattr(self.backend, "explain"):
            raise ScoringError("--explain needs the server (its model's step graph): score with --server")
        self.columns_used = {"text": text_column, "label": label_column, "added": list(added),
                             "encoding": encoding, "notes": list(notes)}
        model = self.backend.describe()
        expected = {"version": STATE_VERSION, **_input_fingerprint(self.input_path), "input_format": self.in_fmt,
                    "output_format": self.out_fmt, "columns": columns, "text_column": text_column,
                    "label_column": label_column, "encoding": encoding,
                    "added_columns": [spec.probability_column, spec.label_column, spec.known_column,
                                      *(name for name, _ in spec.extra_columns)],
                    "model": {"name": model.get("model"), "version": model.get("version")}}
        state_path = self.staging / STATE_FILE
        if state_path.is_file():
            if not self.options.resume:
                raise ScoringError(f"{self.staging} holds an interrupted run: pass --resume to continue it, "
                                   "or remove that folder to start over")
            _check_state(json.loads(state_path.read_text(encoding="utf-8")), expected, self.staging)
            parts = committed_parts(self.staging, self.ext)
            return spec, (parts[-1][1].end if parts else 0), parts
        shutil.rmtree(self.staging, ignore_errors=True)  # no state file: nothing was committed
        self.staging.mkdir(parents=True)
        _fsync_write(self.staging / STATE_FILE, json.dumps(expected, indent=2))
        return spec, 0, []

    def score_chunk(self, chunk: Chunk) -> ScoredChunk:
        """Score the good rows of a chunk with the backend; bad rows get no probability and no label."""
        good = [i for i, text in enumerate(chunk.texts) if text is not None]
        probabilities: list[float | None] = [None] * len(chunk)
        labels: list[str | None] = [None] * len(chunk)
        known: list[float | None] = [None] * len(chunk)
        errors = list(chunk.errors)
        for i in good:  # readers catch these already; a request must never carry them
            problem = unicode_problem(chunk.texts[i])
            if problem is not None:
                errors[i], chunk.texts[i] = f"text is {problem}", None
        good = [i for i in good if errors[i] is None]
        if good:
            probs, predicted, refused, fractions = self.backend.score([chunk.texts[i] for i in good])  # type: ignore[misc]
            for i, p, label, error, k in zip(good, np.asarray(probs, dtype=np.float32).tolist(), predicted, refused,
                                             fractions, strict=True):
                if error is None:
                    probabilities[i], labels[i], known[i] = p, label, k
                else:  # the backend could not score it: a bad row like any other
                    errors[i] = error
        extras: list[dict[str, Any] | None] = []
        if self.options.explain:
            extras = [None] * len(chunk)
            scored = [i for i in good if errors[i] is None]
            for i, explained in zip(scored, self.backend.explain([chunk.texts[i] for i in scored]),  # type: ignore[attr-defined]
                                    strict=True):
                extras[i] = explained
        return ScoredChunk(chunk, probabilities, labels, errors, known, extras)

    def account(self, scored: ScoredChunk) -> PartStats:
        """The part's bad rows (with row numbers and ids) and confusion counts."""
        chunk, labels, errors = scored.chunk, scored.labels, scored.errors
        good = [i for i, error in enumerate(errors) if error is None]
        stats = PartStats(chunk.start, chunk.start + len(chunk))
        id_column = self.options.id_column
        for i, error in enumerate(errors):
            if error is not None:
                row: dict[str, Any] = {"row": chunk.start + i + 1, "error": error}
                if id_column and chunk.value(i, id_column) is not None:
                    row["id"] = chunk.value(i, id_column)
                stats.bad_rows.append(row)
        confusion = Confusion()
        if chunk.gold is not None:
            for i in good:
                confusion.add(parse_gold(chunk.gold[i], self.labels), int(labels[i] == self.labels[1]))
        stats.confusion = asdict(confusion)
        return stats

    def commit(self, spec: OutputSpec, scored: ScoredChunk, stats: PartStats) -> Path:
        """Write the part and its twin under temporary names, then rename: twin first, part last."""
        name = _part_name(stats.start, stats.end, self.ext)
        part, twin = self.staging / name, (self.staging / name).with_suffix(".json")
        tmp_part, tmp_twin = self.staging / f".tmp-{name}", self.staging / f".tmp-{twin.name}"
        write_part(tmp_part, spec, scored.chunk, scored.probabilities, scored.labels, scored.known,
                   scored.extras or None)
        with tmp_part.open("rb+") as handle:
            os.fsync(handle.fileno())
        _fsync_write(tmp_twin, json.dumps(asdict(stats)))
        os.replace(tmp_twin, twin)
        os.replace(tmp_part, part)  # the commit point
        return part


def _progress(total: int | None, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    # rows/s comes from tqdm's rate; ETA appears whenever the total is known.
    return tqdm(total=total, initial=initial, unit="rows", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1)


def score_file(input_path: str | Path, output: str | Path, backend: Backend,
               options: ScoreOptions | None = None) -> dict[str, Any]:
    """Score every row of ``input_path`` into ``output``; returns the summary (also written as JSON).

    Raises :class:`ScoringError` or :class:`~client.formats.FormatError` for problems with
    the run as a whole; per-row problems go to the bad-rows file instead.
    """
    options = options or ScoreOptions()
    input_path, output = Path(input_path), Path(output)
    run = ScoringRun(input_path, output, backend, options)
    done = already_complete(run)
    if done is not None:
        return done
    reader = open_reader(input_path, run.in_fmt, options.text_column, options.label_column, options.encoding,
                         options.delimiter)
    run.has_labels = reader.has_labels
    try:
        spec, skip, parts = run.prepare(reader.columns, reader.text_column, reader.label_column, reader.notes,
                                        reader.encoding)
        scored = (run.score_chunk(chunk) for chunk in reader.chunks(options.chunk_rows, skip))
        return write_scored(run, spec, skip, parts, scored, reader.total_rows())
    finally:
        reader.close()


def already_complete(run: ScoringRun) -> dict[str, Any] | None:
    """The summary of a finished run when ``--resume`` is asked again, else None."""
    summary_path = run.options.summary_path or default_side_paths(run.output)[1]
    if run.options.resume and run.output.exists() and not run.staging.exists() and summary_path.is_file():
        log.info("%s is already complete; nothing to resume", run.output)
        return json.loads(summary_path.read_text(encoding="utf-8"))
    return None


def write_scored(run: ScoringRun, spec: OutputSpec, skip: int, parts: list[tuple[Path, PartStats]],
                 scored: Iterator[ScoredChunk], total_rows: int | None) -> dict[str, Any]:
    """Commit each scored chunk as a part (in row order), then merge them into the output."""
    started, scored_now = time.monotonic(), 0
    if run.options.progress:  # what is read and added, before a long run rather than after it
        print(describe_columns(run.columns_used), file=sys.stderr)
    with _progress(total_rows, skip, run.options.progress) as bar:
        for item in scored:
            stats = run.account(item)
            if stats.bad_rows and run.options.fail_on_bad_rows:
                first = stats.bad_rows[0]
                raise BadRowsError(f"stopped at row {first['row']}: {first['error']} (--fail-on-bad-rows). "
                                   f"The rows before its chunk are kept in {run.staging}: --resume without "
                                   "--fail-on-bad-rows continues there; a changed input needs a fresh start")
            parts.append((run.commit(spec, item, stats), stats))
            scored_now += len(item.chunk)
            bar.update(len(item.chunk))
        if bar.total != bar.n:  # the total was an estimate (physical lines): end at the record count
            bar.total = bar.n
            bar.refresh()
    return finish(run, spec, parts, skip, scored_now, time.monotonic() - started)


def finish(run: ScoringRun, spec: OutputSpec, parts: list[tuple[Path, PartStats]], skip: int, scored_now: int,
           elapsed: float) -> dict[str, Any]:
    """Merge the parts into the output, write the bad-rows file and summary, drop the staging folder."""
    options, output = run.options, run.output
    bad_path, summary_path = default_side_paths(output)
    bad_path, summary_path = options.bad_rows_path or bad_path, options.summary_path or summary_path
    merge_parts([p for p, _ in parts], spec, output)
    confusion, bad_count, examples = Confusion(), 0, []
    tmp_bad = bad_path.with_name(f".{bad_path.name}.tmp")
    with tmp_bad.open("w", encoding="utf-8") as handle:
        for _, stats in parts:
            confusion.merge(Confusion(**stats.confusion))
            for row in stats.bad_rows:
                handle.write(json_line(row))
                bad_count += 1
                if len(examples) < 5:
                    examples.append(row)
    if bad_count:
        os.replace(tmp_bad, bad_path)
    else:
        tmp_bad.unlink()
        bad_path.unlink(missing_ok=True)  # a stale file from an earlier run would mislead
    rows = parts[-1][1].end if parts else 0
    summary = {
        "input": str(run.input_path), "output": str(output), "output_format": run.out_fmt,
        "rows": rows, "scored": rows - bad_count, "bad_rows": bad_count,
        "bad_rows_file": str(bad_path) if bad_count else None, "bad_row_examples": examples,
        "backend": run.backend.describe(), "resumed_at_row": skip,
        "rows_this_run": scored_now, "seconds_this_run": round(elapsed, 3),
        "rows_per_second": round(scored_now / elapsed, 1) if elapsed > 0 else None,
        "evaluation": confusion.metrics(run.labels) if run.has_labels else None,
        "columns_used": run.columns_used,
    }
    _fsync_write(summary_path, json.dumps(summary, indent=2, default=str) + "\n")
    shutil.rmtree(run.staging)
    return summary


def describe_columns(used: dict[str, Any]) -> str:
    """One line (or a few) saying which columns a run reads and adds, and what was found about them."""
    if not used:
        return ""
    label = f"gold labels from {used['label']!r}" if used.get("label") else "no gold-label column (not evaluated)"
    encoding = f" ({used['encoding']})" if used.get("encoding") not in (None, "utf-8") else ""
    added = used["added"]
    known = f", {added[2]!r} (share of its words the model knew whole)" if len(added) > 2 and added[2] else ""
    lines = [f"text from column {used['text']!r}{encoding}, {label}; added columns "
             f"{added[0]!r} (P(positive)), {added[1]!r} (predicted label){known}"]
    lines += [f"note: {note}" for note in used.get("notes", [])]
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few lines for the terminal."""
    lines = [f"scored {summary['scored']} of {summary['rows']} rows into {summary['output']} "
             f"({summary['rows_per_second']} rows/s this run)"]
    if summary.get("columns_used"):
        lines.append(describe_columns(summary["columns_used"]))
    if summary["bad_rows"]:
        lines.append(f"{summary['bad_rows']} bad row(s), listed in {summary['bad_rows_file']}; first: "
                     + "; ".join(f"row {r['row']}: {r['error']}" for r in summary["bad_row_examples"][:3]))
    if summary["evaluation"]:
        lines.append(format_metrics(summary["evaluation"]))
    return "\n".join(lines)
