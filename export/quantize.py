"""The int8 variant: ONNX Runtime dynamic quantization (weights int8, activations at run time)."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

# LSTM becomes ONNX Runtime's DynamicQuantizeLSTM; Gemm/MatMul the head; Gather the embedding table.
QUANTIZED_OPS = ["LSTM", "Gemm", "MatMul", "Gather"]


def quantize_int8(source: Path, destination: Path) -> list[str]:
    """Write a dynamically quantized copy of ``source``; returns the op types in the result."""
    logging.getLogger("root").setLevel(logging.ERROR)  # quantizer logs every skipped node at INFO
    quantize_dynamic(str(source), str(destination), op_types_to_quantize=QUANTIZED_OPS,
                     weight_type=QuantType.QInt8, per_channel=False)
    return sorted({node.op_type for node in onnx.load(str(destination)).graph.node})
