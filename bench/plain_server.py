"""The floor for a lone request: a plain grpcio server that runs ONNX Runtime once per request.

    python bench/plain_server.py --model-repository models --port 8101 [--threads 2]

What a user writes in an afternoon, from grpc's Python examples: a synchronous
``grpc.server`` with a thread pool, ``sentiment.v1`` Predict and PredictBatch (so the same load
generator drives it), the standard health service, and per request: tokenize, pad, one
``session.run`` with ``--threads`` intra-op threads (ONNX Runtime's default: every CPU). No
batching across requests, no limits, no metrics. Same model files and preprocessing as the
real server, so the answers agree. bench/steps_ab.py starts it as the ``plain`` mode.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import onnxruntime as ort  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402

from protos.sentiment.v1 import sentiment_pb2 as pb  # noqa: E402
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc  # noqa: E402
from runtime.preprocessing import encode_texts, pad_batch  # noqa: E402
from runtime.repository import load_version, open_session  # noqa: E402


class PlainSentiment(pb_grpc.SentimentServiceServicer):
    """Predict / PredictBatch: one ONNX Runtime run per request, nothing shared between requests."""

    def __init__(self, repository: Path, name: str, threads: int) -> None:
        self.model = load_version(repository, name)
        self.tokenizer = self.model.load_tokenizer()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = open_session(self.model, "fp32", options)
        self.ref = pb.ModelRef(name=self.model.name, version=self.model.version)

    def _score(self, texts: list[str]) -> list[pb.Prediction]:
        m = self.model
        ids = encode_texts(self.tokenizer, texts, m.max_tokens, m.head_tokens, m.unk_id)
        input_ids, lengths = pad_batch(ids, m.pad_id)
        probabilities = self.session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})[0]
        return [pb.Prediction(label="positive" if p >= m.threshold else "negative", probability=float(p))
                for p in probabilities]

    def Predict(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> pb.PredictResponse:
        return pb.PredictResponse(prediction=self._score([request.text])[0], model=self.ref)

    def PredictBatch(self, request: pb.PredictBatchRequest, context: grpc.ServicerContext) -> pb.PredictBatchResponse:
        return pb.PredictBatchResponse(predictions=self._score(list(request.texts)), model=self.ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="imdb-lstm")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="ONNX Runtime intra-op threads per run (default: every usable CPU)")
    parser.add_argument("--max-workers", type=int, default=64, help="gRPC handler threads")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.max_workers))
    pb_grpc.add_SentimentServiceServicer_to_server(PlainSentiment(args.model_repository, args.model, args.threads),
                                                   server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
