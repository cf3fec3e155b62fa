"""The package layering holds: ``lint-imports`` with the contracts in pyproject.toml.

runtime/ (the model contract) imports nothing of ours; train/, export/, serve/, client/ and
bench/ build on it; client/ never imports serve/; serve/ reads entry point -> server -> grpc
-> lifecycle -> engine -> ops. The second test proves the check is not vacuous: on a copy of
the tree, one upward import must break the contract it violates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "serve", "client", "train", "export", "bench", "protos")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
TIMEOUT = 120


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` in ``root`` (it reads root/pyproject.toml and imports root's packages)."""
    env = dict(os.environ, COLUMNS="200")  # rich wraps its report at the terminal width otherwise
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


def test_the_layering_holds() -> None:
    done = lint_imports(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "upward", "violation"), [
    ("client/backends.py", "from serve.ops.settings import Settings", "client.backends -> serve.ops.settings"),
    ("runtime/session.py", "import grpc", "runtime.session -> grpc"),
    ("runtime/preprocessing.py", "from train import tokenizer", "runtime.preprocessing -> train"),
    ("serve/engine/core.py", "from serve.grpc import kserve_codec", "serve.engine.core -> serve.grpc.kserve_codec"),
    ("serve/ops/metrics.py", "from serve.engine import core", "serve.ops.metrics -> serve.engine.core"),
    ("train/loop.py", "from export import measure", "train.loop -> export.measure"),
])
def test_an_upward_import_breaks_the_layering(tmp_path: Path, module: str, upward: str, violation: str) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "results", "node_modules"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{upward}\n", encoding="utf-8")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "BROKEN" in done.stdout and violation in done.stdout, done.stdout
