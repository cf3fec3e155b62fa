"""``python -m export``: turn a training checkpoint into a new model-repository version."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("--checkpoint", required=True, type=Path, help="training checkpoint (best.pt)")
    parser.add_argument("--repository", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument("--name", default="imdb-lstm", help="model name (folder in the repository)")
    parser.add_argument("--version", type=int, help="version number (default: next free integer)")
    parser.add_argument("--data", type=Path, default=os.environ.get("IMDB_DATA"),
                        help="aclImdb folder or .tar.gz for the test-split evaluation (env IMDB_DATA); "
                             "without it, accuracy and throughput are not recorded")
    parser.add_argument("--eval-limit", type=int, default=0, help="evaluate on N test reviews (0: all 25,000)")
    parser.add_argument("--parity-limit", type=int, default=1000, help="reviews compared with PyTorch")
    parser.add_argument("--bench-texts", type=int, default=1000, help="reviews timed for throughput")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime / PyTorch threads (0: usable CPUs)")
    parser.add_argument("--max-batch-size", type=int, default=256, help="max_batch_size in config.pbtxt")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from export.pipeline import ExportOptions, export_version
    from runtime.repository import RepositoryError

    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    options = ExportOptions(args.checkpoint, args.repository, args.name, args.version,
                            Path(args.data) if args.data else None, args.eval_limit, args.parity_limit,
                            args.bench_texts, threads, args.max_batch_size)
    try:
        path = export_version(options)
    except (FileNotFoundError, FileExistsError, ValueError, RepositoryError, RuntimeError) as exc:
        sys.exit(f"error: {exc}")
    metadata = json.loads((path / "metadata.json").read_text())
    print(json.dumps({"version": str(path), "evaluation": metadata["evaluation"],
                      "files": {f: r["bytes"] for f, r in metadata["files"].items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
