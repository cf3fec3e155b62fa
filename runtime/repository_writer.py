"""Writing a new model version into a Triton-layout model repository, atomically."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from runtime.repository import CONFIG_FILE, METADATA_FILE, check_name, list_versions, sha256_of

FORMAT = "imdb-lstm-repository/1"
SIGNATURE_INPUTS = [
    {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
    {"name": "lengths", "datatype": "INT64", "shape": [-1]},
]
SIGNATURE_OUTPUTS = [{"name": "probability", "datatype": "FP32", "shape": [-1]}]


def triton_config(name: str, max_batch_size: int) -> str:
    """config.pbtxt for Triton's onnxruntime backend (the batch axis is implicit there)."""
    return f"""# Triton model configuration: a Triton server with the onnxruntime backend can serve the
# ONNX graph of this repository as is (token ids in, probability out; no tokenizer).
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
version_policy: {{ latest: {{ num_versions: 1 }} }}
input [
  {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }},
  {{ name: "lengths" data_type: TYPE_INT64 dims: [ 1 ] reshape: {{ shape: [ ] }} }}
]
output [
  {{ name: "probability" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
"""


def next_version(repository: Path, name: str) -> int:
    model_dir = repository / check_name(name)
    return (list_versions(repository, name)[-1] + 1) if model_dir.is_dir() and list_versions(repository, name) else 1


def staging_dir(repository: Path, name: str, version: int) -> Path:
    """A scratch folder beside the versions; its non-numeric name keeps loaders away from it."""
    path = repository / check_name(name) / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def publish(staging: Path, repository: Path, name: str, version: int, metadata: dict[str, Any],
            max_batch_size: int) -> Path:
    """Record checksums, write metadata.json and config.pbtxt, then rename into place.

    The rename is atomic, so a server watching the repository never sees half a version.
    """
    metadata = dict(metadata, format=FORMAT, name=name, version=version,
                    inputs=SIGNATURE_INPUTS, outputs=SIGNATURE_OUTPUTS)
    metadata["files"] = {
        p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size}
        for p in sorted(staging.iterdir()) if p.is_file() and p.name != METADATA_FILE
    }
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    final = repository / name / str(version)
    if final.exists():
        shutil.rmtree(staging)
        raise FileExistsError(f"{final} already exists; choose another --version or omit it for the next free one")
    os.rename(staging, final)
    (repository / name / CONFIG_FILE).write_text(triton_config(name, max_batch_size), encoding="utf-8")
    return final
