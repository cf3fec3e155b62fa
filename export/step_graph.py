"""A :class:`~train.model.SentimentLSTM` cut into a step graph and a head, for step-level batching.

The whole-sequence graph (``model.onnx``) reads a review at once. Everything it computes is
streamable: the LSTM carries ``(h, c)``, and the pooling it feeds the head only needs running
accumulators. So the same weights are written as two more ONNX graphs (opset 17):

``step.onnx``: ``(input_ids [B,K] int64, step_lengths [B] int64, h [B,H], c [B,H], max [B,H],
sum_out [B,H], sum_emb [B,E]) -> (h_next, c_next, max_next, sum_out_next, sum_emb_next)``
    reads up to ``K`` more tokens of each row (``step_lengths[b]`` of them, 1..K) through ONNX's
    fused ``LSTM`` operator with ``initial_h``/``initial_c`` and ``sequence_lens``, so ``h``/``c``
    come out at each row's own last token, and adds the real positions to the running max, the
    running sum of LSTM outputs and the running sum of embeddings.
``head.onnx``: ``(max [B,H], sum_out [B,H], sum_emb [B,E], lengths [B] int64) -> probability [B]``
    the same linear layer and sigmoid as the whole graph, on (max, sum_out / length,
    sum_emb / length).

That is v1's ``max_mean`` pooling. For the ``streaming`` pooling (train/model.py) the state is
``(h, c, max, score_max [B,1], weight_sum [B,1], weighted [B,H])``: the attention pooling kept
as running log-sum-exp accumulators (running maximum score, sum of ``exp(score - score_max)``,
weighted sum of outputs, rescaled whenever the maximum grows), and the head reads
``(h, max, weight_sum, weighted) -> linear([h, max, weighted / weight_sum])``; ``h`` is the
last state, which the LSTM carries anyway.

Starting from the initial state (zeros; ``max`` and ``score_max`` at -1e4, the whole graph's
mask value) and feeding a review in steps of any sizes gives the whole graph's probability
(tests: within 1e-5 in fp32). The graphs are built from the module's weights with ``onnx.helper`` rather than
traced, because the tracer cannot express ``sequence_lens``; this module only reads
``model.embedding``, ``model.lstm`` and ``model.head``, never changes :mod:`train.model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from train.model import SentimentLSTM

OPSET = 17
STEP_FILE, HEAD_FILE = "step.onnx", "head.onnx"
MASK_VALUE = -1e4  # what train.model puts at padded positions before the max: the running max starts there


def pooling_of(model: SentimentLSTM) -> str:
    """The model's pooling (v1 checkpoints predate the field: ``max_mean``)."""
    return getattr(model.config, "pooling", "max_mean")


def state_spec(model: SentimentLSTM) -> list[dict[str, Any]]:
    """The carried state, in the order of the step graph's inputs: name, output name, width, initial value."""
    hidden, embed = model.config.hidden_size, model.config.embedding_dim
    if pooling_of(model) == "streaming":
        tensors = (("h", hidden, 0.0), ("c", hidden, 0.0), ("max", hidden, MASK_VALUE), ("score_max", 1, MASK_VALUE),
                   ("weight_sum", 1, 0.0), ("weighted", hidden, 0.0))
    else:
        tensors = (("h", hidden, 0.0), ("c", hidden, 0.0), ("max", hidden, MASK_VALUE), ("sum_out", hidden, 0.0),
                   ("sum_emb", embed, 0.0))
    return [{"name": name, "output": f"{name}_next", "width": width, "initial": initial}
            for name, width, initial in tensors]


def onnx_lstm_weights(lstm: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyTorch ``nn.LSTM`` (one layer) weights as ONNX ``LSTM``'s ``W [1,4H,E]``, ``R [1,4H,H]``, ``B [1,8H]``.

    PyTorch stacks the gates as (input, forget, cell, output); ONNX as (input, output, forget, cell).
    """
    if lstm.num_layers != 1 or lstm.bidirectional or not lstm.batch_first or lstm.proj_size:
        raise ValueError(f"step export supports a one-layer unidirectional batch-first LSTM, got {lstm}")
    order = (0, 3, 1, 2)  # ONNX gate g takes PyTorch gate order[g]

    def reorder(tensor: Any) -> np.ndarray:
        gates = np.split(tensor.detach().cpu().numpy().astype(np.float32), 4, axis=0)
        return np.concatenate([gates[g] for g in order], axis=0)

    w = reorder(lstm.weight_ih_l0)[None]
    r = reorder(lstm.weight_hh_l0)[None]
    b = np.concatenate([reorder(lstm.bias_ih_l0), reorder(lstm.bias_hh_l0)])[None]
    return w, r, b


def _const(name: str, values: Any, dtype: Any = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def step_graph(model: SentimentLSTM) -> onnx.ModelProto:
    """The step graph of ``model`` (see the module docstring); checked with ``onnx.checker``."""
    hidden = model.config.hidden_size
    w, r, b = onnx_lstm_weights(model.lstm)
    table = model.embedding.weight.detach().cpu().numpy().astype(np.float32)
    initializers = [numpy_helper.from_array(table, "embedding"), numpy_helper.from_array(w, "W"),
                    numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B"),
                    _const("axis0", [0]), _const("axis1", [1]), _const("axis2", [2]), _const("zero", 0),
                    _const("one", 1), _const("mask_value", MASK_VALUE, np.float32)]
    n = helper.make_node
    nodes = [
        n("Gather", ["embedding", "input_ids"], ["embedded"], axis=0),  # [B,K,E]
        n("Transpose", ["embedded"], ["time_major"], perm=[1, 0, 2]),  # [K,B,E]
        n("Cast", ["step_lengths"], ["sequence_lens"], to=TensorProto.INT32),
        n("Unsqueeze", ["h", "axis0"], ["initial_h"]),
        n("Unsqueeze", ["c", "axis0"], ["initial_c"]),
        n("LSTM", ["time_major", "W", "R", "B", "sequence_lens", "initial_h", "initial_c"], ["Y", "Y_h", "Y_c"],
          hidden_size=hidden),
        n("Squeeze", ["Y_h", "axis0"], ["h_next"]),
        n("Squeeze", ["Y_c", "axis0"], ["c_next"]),
        n("Squeeze", ["Y", "axis1"], ["outputs_tm"]),  # [K,B,H]
        n("Transpose", ["outputs_tm"], ["outputs"], perm=[1, 0, 2]),  # [B,K,H]
        # mask [B,K,1]: position < step_lengths
        n("Shape", ["input_ids"], ["ids_shape"]),
        n("Gather", ["ids_shape", "one"], ["k"], axis=0),
        n("Range", ["zero", "k", "one"], ["positions"]),
        n("Unsqueeze", ["positions", "axis0"], ["positions_row"]),  # [1,K]
        n("Unsqueeze", ["step_lengths", "axis1"], ["lengths_col"]),  # [B,1]
        n("Less", ["positions_row", "lengths_col"], ["mask2"]),
        n("Unsqueeze", ["mask2", "axis2"], ["mask"]),  # [B,K,1] bool
        n("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        n("Where", ["mask", "outputs", "mask_value"], ["masked_outputs"]),
        n("ReduceMax", ["masked_outputs"], ["step_max"], axes=[1], keepdims=0),
        n("Max", ["max", "step_max"], ["max_next"]),
    ]
    if pooling_of(model) == "streaming":
        nodes += _attention_nodes(model, initializers)
    else:
        nodes += [
            n("Mul", ["outputs", "maskf"], ["real_outputs"]),
            n("ReduceSum", ["real_outputs", "axis1"], ["step_sum_out"], keepdims=0),
            n("Add", ["sum_out", "step_sum_out"], ["sum_out_next"]),
            n("Mul", ["embedded", "maskf"], ["real_embedded"]),
            n("ReduceSum", ["real_embedded", "axis1"], ["step_sum_emb"], keepdims=0),
            n("Add", ["sum_emb", "step_sum_emb"], ["sum_emb_next"]),
        ]
    spec = state_spec(model)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "step"]),
              helper.make_tensor_value_info("step_lengths", TensorProto.INT64, ["batch"])]
    inputs += [helper.make_tensor_value_info(s["name"], TensorProto.FLOAT, ["batch", s["width"]]) for s in spec]
    outputs = [helper.make_tensor_value_info(s["output"], TensorProto.FLOAT, ["batch", s["width"]]) for s in spec]
    return _checked(helper.make_graph(nodes, "sentiment_lstm_step", inputs, outputs, initializers))


def _attention_nodes(model: SentimentLSTM, initializers: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Step nodes folding this step's outputs into the attention accumulators (log-sum-exp rescaling)."""
    weight = model.attention.weight.detach().cpu().numpy().astype(np.float32)  # [1, H]
    bias = model.attention.bias.detach().cpu().numpy().astype(np.float32)  # [1]
    initializers += [numpy_helper.from_array(weight.T.copy(), "attention_weight"),  # [H, 1]
                     numpy_helper.from_array(bias, "attention_bias")]
    n = helper.make_node
    return [
        n("MatMul", ["outputs", "attention_weight"], ["raw_scores"]),  # [B,K,1]
        n("Add", ["raw_scores", "attention_bias"], ["scores"]),
        n("Where", ["mask", "scores", "mask_value"], ["masked_scores"]),
        n("ReduceMax", ["masked_scores"], ["step_score_max"], axes=[1], keepdims=0),  # [B,1]
        n("Max", ["score_max", "step_score_max"], ["score_max_next"]),
        n("Sub", ["score_max", "score_max_next"], ["old_shift"]),
        n("Exp", ["old_shift"], ["decay"]),  # [B,1]: rescales what was accumulated so far
        n("Unsqueeze", ["score_max_next", "axis1"], ["new_max_col"]),  # [B,1,1]
        n("Sub", ["masked_scores", "new_max_col"], ["shifted"]),
        n("Exp", ["shifted"], ["step_weights_all"]),
        n("Mul", ["step_weights_all", "maskf"], ["step_weights"]),  # [B,K,1], 0 at padding
        n("ReduceSum", ["step_weights", "axis1"], ["step_weight_sum"], keepdims=0),  # [B,1]
        n("Mul", ["weight_sum", "decay"], ["kept_weight_sum"]),
        n("Add", ["kept_weight_sum", "step_weight_sum"], ["weight_sum_next"]),
        n("Mul", ["outputs", "step_weights"], ["weighted_outputs"]),
        n("ReduceSum", ["weighted_outputs", "axis1"], ["step_weighted"], keepdims=0),  # [B,H]
        n("Mul", ["weighted", "decay"], ["kept_weighted"]),
        n("Add", ["kept_weighted", "step_weighted"], ["weighted_next"]),
    ]


def head_graph(model: SentimentLSTM) -> onnx.ModelProto:
    """The head of ``model``: (max, sum_out, sum_emb, lengths) -> P(positive) [B] for ``max_mean`` pooling,
    (h, max, weight_sum, weighted) -> P(positive) [B] for ``streaming``; checked with ``onnx.checker``."""
    if pooling_of(model) == "streaming":
        return _streaming_head_graph(model)
    hidden, embed = model.config.hidden_size, model.config.embedding_dim
    weight = model.head.weight.detach().cpu().numpy().astype(np.float32)  # [1, 2H+E]
    bias = model.head.bias.detach().cpu().numpy().astype(np.float32)  # [1]
    initializers = [numpy_helper.from_array(weight, "head_weight"), numpy_helper.from_array(bias, "head_bias"),
                    _const("axis1", [1]), _const("flat", [-1])]
    n = helper.make_node
    nodes = [
        n("Cast", ["lengths"], ["lengths_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["lengths_f", "axis1"], ["denominator"]),  # [B,1]
        n("Div", ["sum_out", "denominator"], ["mean_out"]),
        n("Div", ["sum_emb", "denominator"], ["mean_emb"]),
        n("Concat", ["max", "mean_out", "mean_emb"], ["features"], axis=1),
        n("Gemm", ["features", "head_weight", "head_bias"], ["logit2d"], transB=1),
        n("Reshape", ["logit2d", "flat"], ["logit"]),
        n("Sigmoid", ["logit"], ["probability"]),
    ]
    inputs = [helper.make_tensor_value_info("max", TensorProto.FLOAT, ["batch", hidden]),
              helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, ["batch", hidden]),
              helper.make_tensor_value_info("sum_emb", TensorProto.FLOAT, ["batch", embed]),
              helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])]
    outputs = [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])]
    return _checked(helper.make_graph(nodes, "sentiment_lstm_head", inputs, outputs, initializers))


def _streaming_head_graph(model: SentimentLSTM) -> onnx.ModelProto:
    hidden = model.config.hidden_size
    weight = model.head.weight.detach().cpu().numpy().astype(np.float32)  # [1, 3H]
    bias = model.head.bias.detach().cpu().numpy().astype(np.float32)  # [1]
    initializers = [numpy_helper.from_array(weight, "head_weight"), numpy_helper.from_array(bias, "head_bias"),
                    _const("flat", [-1])]
    n = helper.make_node
    nodes = [
        n("Div", ["weighted", "weight_sum"], ["attended"]),
        n("Concat", ["h", "max", "attended"], ["features"], axis=1),
        n("Gemm", ["features", "head_weight", "head_bias"], ["logit2d"], transB=1),
        n("Reshape", ["logit2d", "flat"], ["logit"]),
        n("Sigmoid", ["logit"], ["probability"]),
    ]
    inputs = [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", hidden]),
              helper.make_tensor_value_info("max", TensorProto.FLOAT, ["batch", hidden]),
              helper.make_tensor_value_info("weight_sum", TensorProto.FLOAT, ["batch", 1]),
              helper.make_tensor_value_info("weighted", TensorProto.FLOAT, ["batch", hidden])]
    outputs = [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["batch"])]
    return _checked(helper.make_graph(nodes, "sentiment_lstm_streaming_head", inputs, outputs, initializers))


def _checked(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="export.step_graph")
    onnx.checker.check_model(model, full_check=True)
    return model


def export_step_graphs(model: SentimentLSTM, folder: Path) -> dict[str, Any]:
    """Write ``step.onnx`` and ``head.onnx`` of ``model`` into ``folder``; returns metadata.json's ``steps`` section.

    Raises ``ValueError`` for an LSTM the step graph cannot express (several layers, bidirectional)
    or a pooling it does not carry (``max_mean`` and ``streaming`` are carried).
    """
    pooling = pooling_of(model)
    if pooling not in ("max_mean", "streaming"):
        raise ValueError(f"the step graph carries max_mean and streaming pooling, not {pooling!r}")
    onnx.save(step_graph(model), str(folder / STEP_FILE))
    onnx.save(head_graph(model), str(folder / HEAD_FILE))
    return {"step_graph": STEP_FILE, "head_graph": HEAD_FILE, "precision": "fp32", "opset": OPSET,
            "state": state_spec(model)}


def step_parity(folder: Path, section: dict[str, Any], pad_id: int, vocab_size: int, max_tokens: int,
                step_sizes: tuple[int, ...] = (7, 32), rows: int = 48, seed: int = 0) -> dict[str, Any]:
    """Largest |P(steps) - P(whole)| over seeded random reviews of 1..``max_tokens`` ids read in ``step_sizes``.

    ``folder`` holds ``model.onnx`` and the graphs of ``section``; returned as metadata's ``steps.parity``.
    """
    from runtime.scoring import cpu_session, score_onnx
    from runtime.step_runner import StateTensor, StepGraphSpec, StepRunner

    rng = np.random.default_rng(seed)
    lengths = np.unique(np.linspace(1, max_tokens, rows).astype(int))
    sequences = [rng.integers(0, vocab_size, size=int(n)).tolist() for n in lengths]
    whole = score_onnx(cpu_session(str(folder / "model.onnx"), 1), sequences, pad_id)
    spec = StepGraphSpec(folder / section["step_graph"], folder / section["head_graph"],
                         tuple(StateTensor(**s) for s in section["state"]))
    runner = StepRunner(spec, cpu_session(str(spec.step_path), 1), cpu_session(str(spec.head_path), 1), pad_id)
    worst = max(float(np.abs(runner.score(sequences, k) - whole).max()) for k in step_sizes)
    return {"reviews": len(sequences), "step_tokens": list(step_sizes), "max_abs_diff_vs_whole": worst}
