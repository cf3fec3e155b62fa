"""What the benchmarks share: paths, a free loopback port, a description of the machine, writing results."""

from __future__ import annotations

import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "aclImdb_v1-labeled.tar.gz"


def machine() -> str:
    """Usable CPUs (affinity, not the host's count), CPU model and kernel, for result files."""
    cpus = len(os.sched_getaffinity(0))
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{cpus} usable CPU(s), {model}, {platform.system()} {platform.release()}"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_results(out: Path, name: str, results: dict[str, Any], table: str) -> None:
    """Print the Markdown ``table`` and write ``out/<name>.json`` (everything) and ``out/<name>.md`` (the table)."""
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
