"""Checkpoint -> verified model version: ONNX fp32 + int8, tokenizer, metadata, measurements."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from export import measure
from export.onnx_export import OPSET, export_onnx
from export.quantize import quantize_int8
from export.step_graph import export_step_graphs, step_parity
from runtime.preprocessing import encode_texts
from runtime.repository import PRECISION_FILES, TOKENIZER_FILE, load_version
from runtime.repository_writer import next_version, publish, staging_dir
from train.checkpoint import load_checkpoint, restore_model
from train.data import read_reviews, stratified_subset
from train.model import SentimentLSTM
from train.tokenizer import UNK_TOKEN

PARITY_TOLERANCE = 1e-4  # export refuses a graph further than this from PyTorch (tests demand 1e-5)
STEP_PARITY_TOLERANCE = 1e-5  # steps vs whole graph: the serving promise (one text, one answer)


@dataclass(frozen=True)
class ExportOptions:
    """What ``python -m export`` was asked to do."""

    checkpoint: Path
    repository: Path
    name: str
    version: int | None
    data: Path | None
    eval_limit: int  # 0: the whole test split
    parity_limit: int
    bench_texts: int
    threads: int
    max_batch_size: int



def step_section(model: SentimentLSTM, staging: Path, pad_id: int, max_tokens: int) -> dict[str, Any] | None:
    """Write the step graph and head beside model.onnx and return metadata's ``steps`` section,
    or None (printed) for a model the step graph cannot express: that version serves the
    whole-sequence path only (docs/model-repository.md, 'steps').

    Raises ``RuntimeError`` when steps and the whole graph disagree beyond the tolerance.
    """
    try:
        steps = export_step_graphs(model, staging)
    except ValueError as exc:
        print(f"no step graph for this version ({exc}): it serves the whole-sequence path only")
        return None
    steps["parity"] = step_parity(staging, steps, pad_id, model.config.vocab_size, max_tokens)
    step_gap = steps["parity"]["max_abs_diff_vs_whole"]
    if step_gap > STEP_PARITY_TOLERANCE:
        raise RuntimeError(f"the step graph and model.onnx disagree by {step_gap:.2e} on P(positive)"
                           f" (tolerance {STEP_PARITY_TOLERANCE}); refusing to publish this version")
    return steps

def source_commit() -> str:
    """The git commit of the code doing the export ('-dirty' when uncommitted changes exist)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def training_summary(checkpoint: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Training config and curves from the checkpoint, plus the run's metrics.json if beside it."""
    summary: dict[str, Any] = {"checkpoint": checkpoint.name, "config": payload.get("train_config"),
                               "history": payload.get("history")}
    metrics_file = checkpoint.parent / "metrics.json"
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        for key in ("validation", "test", "best_epoch", "train_wall_time_s", "hardware"):
            summary[key] = metrics.get(key)
    return summary


def evaluate(staging: Path, model: Any, tokenizer: Any, payload: dict[str, Any], options: ExportOptions,
             pad_id: int) -> dict[str, Any]:
    """Accuracy of fp32 and int8 on the test split, PyTorch parity, and in-process throughput."""
    pre = payload["preprocessing"]
    reviews = read_reviews(options.data, ("test",))["test"]
    if options.eval_limit:
        reviews = stratified_subset(reviews, options.eval_limit, seed=0)
    ids = encode_texts(tokenizer, [r.text for r in reviews], pre["max_tokens"], pre["head_tokens"],
                       tokenizer.token_to_id(UNK_TOKEN))
    labels = np.array([r.label for r in reviews])
    sessions = {p: measure.cpu_session(str(staging / f), options.threads) for p, f in PRECISION_FILES.items()}
    probabilities = {p: measure.score_onnx(s, ids, pad_id) for p, s in
                     tqdm(sessions.items(), desc=f"scoring {len(ids)} test reviews", unit="model")}
    # Parity on a spread of lengths: every k-th review in length order.
    order = np.argsort([len(s) for s in ids])
    parity_idx = order[np.linspace(0, len(order) - 1, min(options.parity_limit, len(order))).astype(int)]
    reference = measure.score_torch(model, [ids[i] for i in parity_idx], pad_id)
    parity = float(np.abs(reference - probabilities["fp32"][parity_idx]).max())
    if parity > PARITY_TOLERANCE:
        raise RuntimeError(f"ONNX Runtime and PyTorch disagree by {parity:.2e} on P(positive) "
                           f"(tolerance {PARITY_TOLERANCE}); refusing to publish this version")
    bench_ids = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))[:options.bench_texts]]
    speed = measure.throughput(sessions, bench_ids, pad_id)
    return {
        "split": "test", "reviews": len(ids),
        "fp32": {"accuracy": measure.accuracy(probabilities["fp32"], labels)},
        "int8": {"accuracy": measure.accuracy(probabilities["int8"], labels)},
        "int8_label_agreement": float(((probabilities["fp32"] >= 0.5) == (probabilities["int8"] >= 0.5)).mean()),
        "int8_max_abs_diff": float(np.abs(probabilities["fp32"] - probabilities["int8"]).max()),
        "parity": {"reviews": len(parity_idx), "max_abs_diff_vs_pytorch": parity},
        "throughput": {"texts": len(bench_ids), "threads": options.threads, "batch_size": 64,
                       "fp32_texts_per_s": speed["fp32"], "int8_texts_per_s": speed["int8"],
                       "int8_speedup": speed["int8"] / speed["fp32"]},
    }


def export_version(options: ExportOptions) -> Path:
    """Export ``options.checkpoint`` as a new, verified version; returns its folder."""
    payload = load_checkpoint(options.checkpoint)
    model, tokenizer = restore_model(payload)
    version = options.version or next_version(options.repository, options.name)
    staging = staging_dir(options.repository, options.name, version)
    try:
        fp32_path = staging / PRECISION_FILES["fp32"]
        export_onnx(model, fp32_path)
        int8_ops = quantize_int8(fp32_path, staging / PRECISION_FILES["int8"])
        tokenizer.save(str(staging / TOKENIZER_FILE))
        pad_id = model.config.pad_id
        steps = step_section(model, staging, pad_id, payload["preprocessing"]["max_tokens"])
        metadata: dict[str, Any] = {
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "labels": ["negative", "positive"], "threshold": 0.5,
            "max_tokens": payload["preprocessing"]["max_tokens"],
            "head_tokens": payload["preprocessing"]["head_tokens"],
            "pad_id": pad_id, "unk_id": tokenizer.token_to_id(UNK_TOKEN),
            "precisions": PRECISION_FILES,
            "preprocessing": {
                "tokenizer": TOKENIZER_FILE,
                "cleaning": "runtime.preprocessing.clean_text (invisible, format and control characters "
                            "removed), then the tokenizer.json normalizer: <br /> and short HTML tags -> space, "
                            "NFKC, lower case",
                "truncation": "head+tail: first head_tokens and last max_tokens-head_tokens ids",
                "empty": "a text with nothing to read after cleaning is refused (INVALID_ARGUMENT; a bad row "
                         "in scored files)",
            },
            "model": {"architecture": model.architecture,
                      "config": payload["model_config"], "opset": OPSET,
                      "fp32_ops": sorted({n.op_type for n in onnx.load(str(fp32_path)).graph.node}),
                      "int8_ops": int8_ops},
            **({"steps": steps} if steps is not None else {}),
            "training": training_summary(options.checkpoint, payload),
            "evaluation": (evaluate(staging, model, tokenizer, payload, options, pad_id) if options.data
                           else {"skipped": "no --data given"}),
            "source": {"commit": source_commit(), "command": "python -m export " + " ".join(sys.argv[1:])},
        }
        final = publish(staging, options.repository, options.name, version, metadata, options.max_batch_size)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    load_version(options.repository, options.name, version)  # the serving loader must accept it
    return final
