"""Regenerate the Python code for every .proto under protos/ (the only way it is made).

    python -m protos.generate      (or: python protos/generate.py)

The include root is the repository root, so generated modules import each other as
``protos.sentiment.v1.sentiment_pb2`` and are themselves imported that way. The output is
committed; never edit it by hand, edit the .proto and run this again.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTOS = Path(__file__).resolve().parent


def main() -> int:
    """Run protoc (from grpcio-tools) on every .proto file; return its exit status."""
    sources = sorted(str(p.relative_to(ROOT)) for p in PROTOS.rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")  # well-known types
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={ROOT}",
            f"--grpc_python_out={ROOT}", *sources]
    status = protoc.main(args)
    if status != 0:
        print(f"protoc failed ({status}) on {sources}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
