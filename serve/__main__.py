"""``python -m serve``: parse settings, log them, serve until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys

from serve.ops.errors import ConfigurationError
from serve.ops.logs import configure_logging
from serve.ops.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        settings = load_settings(argv)
    except ConfigurationError as exc:
        print(f"python -m serve: {exc}", file=sys.stderr)
        return 2
    # The worker threads are the server's parallelism; the tokenizer's own thread pool on top
    # of them oversubscribes the CPUs (measured: docs/serving.md). A user's setting wins.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log = configure_logging(settings.log_level)
    log.info("starting", extra={"settings": settings.as_dict(),
                                "tokenizers_parallelism": os.environ["TOKENIZERS_PARALLELISM"]})
    from serve.server import serve  # after logging is set up: imports onnxruntime and grpc

    try:
        return asyncio.run(serve(settings))
    except ConfigurationError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 2


if __name__ == "__main__":
    sys.exit(main())
