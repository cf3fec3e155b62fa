#!/usr/bin/env bash
# Download every Python package the images install into a wheelhouse, so that image builds
# need no network at all (edge sites are often air-gapped: run this where PyPI is reachable,
# carry docker/.build/wheelhouse/ across, build there).
#
#   docker/wheelhouse.sh [GROUP ...]          groups: serve client train gpu (default: serve client train)
#   LOCK=1 docker/wheelhouse.sh [GROUP ...]   rewrite docker/locks/GROUP.txt instead (serve client gpu)
#
# Each group gets its own folder, docker/.build/wheelhouse/GROUP/, holding requirements.txt
# and its wheels; the Dockerfiles install from exactly one folder. The requirement lists come
# from pyproject.toml's optional-dependency groups, so images get the pinned versions the
# project tests with. Wheels are for the images' Python, whatever Python runs this script:
# CPython 3.11 (Debian bookworm), or 3.12 for the gpu group (Ubuntu 24.04 CUDA images).
#
# Hashes: the serve, client and gpu groups are locked. docker/locks/GROUP.txt pins every
# package, dependencies included, to one version and the sha256 of the one wheel the image
# uses; downloads here and the install in the image both run pip with --require-hashes, so a
# wheel that differs from the reviewed one stops the build. LOCK=1 resolves the pyproject.toml
# pins for the image's platform again (pip's --dry-run --report: no wheel is installed) and
# rewrites the lock: review its diff like code. The train group (PyTorch's own index) is not locked.
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
locks = pathlib.Path(pyproject).parent / "docker" / "locks"
for group in groups:
    if group not in lists:
        sys.exit(f"wheelhouse.sh: unknown group {group!r} (known: {', '.join(lists)})")
    folder = pathlib.Path(out) / group
    folder.mkdir(parents=True, exist_ok=True)
    # The pyproject pins (the input of LOCK=1); a locked group downloads from its lock instead.
    (folder / "pins.txt").write_text("\n".join(sorted(set(lists[group]))) + "\n")
    lock = locks / f"{group}.txt"
    source = lock if lock.exists() and not os.environ.get("LOCK") else folder / "pins.txt"
    (folder / "requirements.txt").write_text(source.read_text())
PY

# manylinux tags up to glibc 2.35, which Debian bookworm (2.36) and Ubuntu 24.04 (2.39) both run;
# pip does not widen a single --platform tag to the older ones.
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 35); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done

for group in "${groups[@]}"; do
    version=3.11
    [[ $group == gpu ]] && version="${GPU_PYTHON:-3.12}"
    abi="cp${version/./}"
    target=(--only-binary=:all: "${platforms[@]}" --python-version "$version" --implementation cp
            --abi "$abi" --abi abi3 --abi none)
    if [[ -n "${LOCK:-}" ]]; then
        echo "wheelhouse.sh: locking $group (CPython $version) -> docker/locks/$group.txt"
        report="$out/$group/report.json"
        "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --target "$out/$group/dry-run" \
            "${target[@]}" --report "$report" -r "$out/$group/pins.txt"
        "$PYTHON" - "$report" "$root/docker/locks/$group.txt" "$group" "$version" <<'PY'
import json
import pathlib
import sys

report, lock, group, version = sys.argv[1:]
lines = [f"# {group} wheels for CPython {version} on manylinux x86_64: every package pinned to one wheel.",
         f"# Written by `LOCK=1 docker/wheelhouse.sh {group}` from pyproject.toml's pins; do not edit by hand.",
         "# Installed with pip --require-hashes (docker/serve.Dockerfile)."]
for item in sorted(json.loads(pathlib.Path(report).read_text())["install"],
                   key=lambda i: i["metadata"]["name"].lower()):
    name, pinned = item["metadata"]["name"], item["metadata"]["version"]
    digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
    wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
    lines += [f"# {wheel}", f"{name}=={pinned} \\", f"    --hash=sha256:{digest}"]
pathlib.Path(lock).parent.mkdir(parents=True, exist_ok=True)
pathlib.Path(lock).write_text("\n".join(lines) + "\n")
PY
        continue
    fi
    hashes=()
    [[ -f "$root/docker/locks/$group.txt" ]] && hashes=(--require-hashes)
    echo "wheelhouse.sh: $group (CPython $version${hashes:+, hashes checked}) -> $out/$group"
    "$PYTHON" -m pip download --quiet --dest "$out/$group" "${target[@]}" "${hashes[@]}" \
        -r "$out/$group/requirements.txt"
done
[[ -n "${LOCK:-}" ]] || du -sh "$out"/*
