"""What one ONNX Runtime run costs by shape (not a test): the facts behind serve/engine/grouping.py.

    python bench/run_cost.py [--model-repository models] [--threads 1]

Prints milliseconds per row for runs of 1..32 rows at several lengths (every row as long as
the run: no padding), then what padding costs (a short and a long review in one run against
each alone), then the :class:`~runtime.run_cost.RunCost` the server would fit at warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.repository import load_version  # noqa: E402
from runtime.session import load_runner  # noqa: E402
from serve.ops.settings import Settings  # noqa: E402

ROWS = (1, 2, 4, 8, 12, 16, 32)


def run_ms(runner, rows: int, lengths: list[int], repeats: int) -> float:
    """Best-of-``repeats`` milliseconds of one run of ``rows`` rows padded to max(lengths)."""
    ids = np.full((rows, max(lengths)), runner.model.unk_id, dtype=np.int64)
    lengths_array = np.array(lengths, dtype=np.int64)
    runner.run(ids, lengths_array)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        runner.run(ids, lengths_array)
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="imdb-lstm")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (the server uses 1)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = load_version(args.model_repository, args.model)
    runner = load_runner(model, Settings(model_repository=args.model_repository, model=args.model, workers=1,
                                         intra_op_threads=args.threads))
    runner.warm_up(8)
    lengths = [n for n in (32, 128, 256, model.max_tokens) if n <= model.max_tokens]
    print(f"{model.name} version {model.version}, {args.threads} thread(s): ms per row, best of {args.repeats}\n")
    print("| tokens | " + " | ".join(f"{r} rows" for r in ROWS) + " |")
    print("|---:|" + "---:|" * len(ROWS))
    for length in lengths:
        cells = [f"{run_ms(runner, rows, [length] * rows, args.repeats) / rows:.3f}" for rows in ROWS]
        print(f"| {length} | " + " | ".join(cells) + " |")
    short, long_ = min(50, model.max_tokens), model.max_tokens
    mixed = run_ms(runner, 2, [short, long_], 20)
    print(f"\nPadding: one run of a {short}- and a {long_}-token review {mixed:.2f} ms; "
          f"two {long_}-token reviews {run_ms(runner, 2, [long_, long_], 20):.2f} ms; "
          f"the {short}-token one alone {run_ms(runner, 1, [short], 20):.2f} ms, "
          f"the {long_}-token one alone {run_ms(runner, 1, [long_], 20):.2f} ms")
    cost = runner.measure_run_cost(8)
    print(f"Fitted at warm-up (8 rows): per_run {cost.per_run * 1e6:.1f} us, per_step {cost.per_step * 1e6:.2f} us, "
          f"per_row_step {cost.per_row_step * 1e6:.2f} us")


if __name__ == "__main__":
    main()
