"""The shipped model on NVIDIA Triton through PyTriton, for bench/mlserver_bench.py (not part of the product).

    /tmp/pytriton/bin/python bench/triton_server.py --model-repository models --grpc-port 8201 \\
        [--instances 2] [--threads 1] [--max-batch-size 32] [--max-queue-delay-us 5000]

PyTriton (``pip install nvidia-pytriton``, in an environment of its own) brings a tritonserver
binary and binds a Python callable as a Triton model. Written as a Triton user would write it:
the callable decodes the ``text`` input (BYTES, ``[batch, 1]``), tokenizes with the model's own
tokenizer and the same head+tail truncation as ``serve/`` (so every server scores a review
identically), pads the batch Triton's dynamic batcher formed, runs ONNX Runtime and answers
``probability`` (FP32, ``[batch, 1]``). ``--instances`` callables (model instances, each with an
ONNX Runtime session of ``--threads`` threads) run batches in parallel. Clients speak KServe v2
gRPC to Triton itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for runtime.preprocessing (tokenizers + numpy only)

from runtime.preprocessing import encode_texts, pad_batch  # noqa: E402


def make_infer(folder: Path, threads: int):
    """One model instance: its own tokenizer and ONNX Runtime session."""
    meta = json.loads((folder / "metadata.json").read_text())
    tokenizer = Tokenizer.from_file(str(folder / meta["preprocessing"]["tokenizer"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(folder / meta["precisions"]["fp32"]), options,
                                   providers=["CPUExecutionProvider"])

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        texts = [t.decode("utf-8") for t in text[:, 0]]
        ids = encode_texts(tokenizer, texts, meta["max_tokens"], meta["head_tokens"], meta["unk_id"])
        input_ids, lengths = pad_batch(ids, meta["pad_id"])
        probability = session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})[0]
        return {"probability": probability.astype(np.float32).reshape(-1, 1)}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="imdb-lstm")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--instances", type=int, default=2, help="model instances (parallel batches)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per instance")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=5000)
    args = parser.parse_args()
    model_dir = args.model_repository / args.model
    folder = model_dir / str(max(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()))
    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.grpc_port, http_address="127.0.0.1",
                          http_port=args.http_port, metrics_port=args.metrics_port, allow_gpu_metrics=False)
    with Triton(config=config) as triton:
        triton.bind(model_name=args.model, infer_func=[make_infer(folder, args.threads) for _ in range(args.instances)],
                    inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="probability", dtype=np.float32, shape=(1,))],
                    config=ModelConfig(max_batch_size=args.max_batch_size,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)))
        triton.serve()


if __name__ == "__main__":
    main()
