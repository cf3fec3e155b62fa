"""PyTorch -> ONNX: the graph serving runs, with dynamic batch and sequence axes."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from train.model import ProbabilityModel, SentimentLSTM

OPSET = 17
INPUT_NAMES = ("input_ids", "lengths")
OUTPUT_NAME = "probability"


def export_onnx(model: SentimentLSTM, path: Path, opset: int = OPSET) -> None:
    """Write ``model`` as ONNX: ``input_ids [batch, sequence]``, ``lengths [batch]`` -> ``probability [batch]``.

    The TorchScript-based exporter maps ``nn.LSTM`` onto ONNX's fused ``LSTM`` operator and
    takes plain dynamic axes, so any batch size and sequence length runs without re-export.
    The graph is checked with ``onnx.checker`` (full check) before returning.
    """
    wrapped = ProbabilityModel(model).eval()
    example_ids = torch.ones((2, 8), dtype=torch.int64)
    example_lengths = torch.tensor([8, 5], dtype=torch.int64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter; the graph is checked below
        torch.onnx.export(
            wrapped, (example_ids, example_lengths), str(path),
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "lengths": {0: "batch"},
                          OUTPUT_NAME: {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    ops = {node.op_type for node in graph.graph.node}
    if "LSTM" not in ops or ops & {"Loop", "Scan"}:
        raise RuntimeError(f"{path}: expected a fused LSTM node and no Loop/Scan, got ops {sorted(ops)}")
