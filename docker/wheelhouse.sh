#!/usr/bin/env bash
# Download every Python package the images install into a wheelhouse, so that image builds
# need no network at all (edge sites are often air-gapped: run this where PyPI is reachable,
# carry docker/.build/wheelhouse/ across, build there).
#
#   docker/wheelhouse.sh [GROUP ...]     groups: serve client train gpu (default: serve client train)
#
# Each group gets its own folder, docker/.build/wheelhouse/GROUP/, holding requirements.txt
# and its wheels; the Dockerfiles install from exactly one folder. The requirement lists come
# from pyproject.toml's optional-dependency groups, so images get the pinned versions the
# project tests with. Wheels are for the images' Python, whatever Python runs this script:
# CPython 3.11 (Debian bookworm), or 3.12 for the gpu group (Ubuntu 24.04 CUDA images).
#   TORCH_SPEC      PyTorch for the training image (default torch==2.13.0+cpu, the CPU build; pip
#                   finds it through its find-links/index configuration, e.g.
#                   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu)
#   ORT_GPU_SPEC    onnxruntime for the gpu group (default onnxruntime-gpu==1.31.1, the newest on
#                   PyPI, built for CUDA 13 + cuDNN 9; there is no onnxruntime-gpu 1.32.0)
#   GPU_PYTHON      Python version of the GPU base image (default 3.12)
#   PYTHON          the interpreter whose pip downloads (default python3)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${WHEELHOUSE:-$here/.build/wheelhouse}"
PYTHON="${PYTHON:-python3}"
groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=(serve client train)

"$PYTHON" - "$root/pyproject.toml" "$out" "${groups[@]}" <<'PY'
import os
import pathlib
import re
import sys
import tomllib

pyproject, out, *groups = sys.argv[1:]
extras = tomllib.loads(pathlib.Path(pyproject).read_text())["project"]["optional-dependencies"]
torch = os.environ.get("TORCH_SPEC", "torch==2.13.0+cpu")
ort_gpu = os.environ.get("ORT_GPU_SPEC", "onnxruntime-gpu==1.31.1")
lists = {
    "serve": extras["serve"],
    "client": extras["serve"] + extras["client"],
    # The default "torch" wheel from PyPI pulls several GB of CUDA libraries; the CPU build does not.
    "train": [torch if re.match(r"torch\b", r) else r for r in extras["train"]],
    "gpu": [ort_gpu if r.startswith("onnxruntime==") else r for r in extras["serve"]],
}
for group in groups:
    if group not in lists:
        sys.exit(f"wheelhouse.sh: unknown group {group!r} (known: {', '.join(lists)})")
    folder = pathlib.Path(out) / group
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text("\n".join(sorted(set(lists[group]))) + "\n")
PY

# manylinux tags up to glibc 2.35, which Debian bookworm (2.36) and Ubuntu 24.04 (2.39) both run;
# pip does not widen a single --platform tag to the older ones.
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 35); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done

for group in "${groups[@]}"; do
    version=3.11
    [[ $group == gpu ]] && version="${GPU_PYTHON:-3.12}"
    abi="cp${version/./}"
    echo "wheelhouse.sh: $group (CPython $version) -> $out/$group"
    "$PYTHON" -m pip download --quiet --dest "$out/$group" \
        --only-binary=:all: "${platforms[@]}" \
        --python-version "$version" --implementation cp --abi "$abi" --abi abi3 --abi none \
        -r "$out/$group/requirements.txt"
done
du -sh "$out"/*
