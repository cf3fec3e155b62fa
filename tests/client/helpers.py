"""Writing inputs and reading outputs of every format, for the client tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` in the format named by ``path``'s extension (csv, tsv, jsonl, parquet, txt)."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, list(rows[0]), delimiter="," if suffix == ".csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)  # many row groups
    elif suffix == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows), encoding="utf-8")
    else:
        raise ValueError(suffix)
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Read an output file back as dicts (text output: label, probability, text)."""
    suffix = path.suffix
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="," if suffix == ".csv" else "\t"))
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".txt":
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            label, probability, text = line.split("\t", 2)
            rows.append({"label": label, "probability": probability, "text": text})
        return rows
    raise ValueError(suffix)


def probability(value: Any) -> float | None:
    """A probability cell of any output format as a float (None when empty)."""
    return None if value in (None, "") else float(value)
