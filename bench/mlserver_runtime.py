"""The shipped model as a Seldon MLServer custom runtime, for bench/mlserver_bench.py (not part of the product).

Written as an MLServer user would write it: decode the ``text`` input, tokenize with the
model's own tokenizer and the same head+tail truncation as ``serve/`` (so both servers score
every review identically), pad the batch MLServer's adaptive batcher formed to its longest
text, run ONNX Runtime, answer ``probability`` (FP32) and ``label`` (BYTES). ONNX Runtime gets
``intra_op_threads`` from the model settings' ``parameters.extra``, graph optimisation on,
spinning off (as ``serve/`` by default). Imported by MLServer only: this project does not
depend on mlserver.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from tokenizers import Tokenizer

sys.path.insert(0, os.environ["SENTIMENT_REPO_ROOT"])  # for runtime.preprocessing (tokenizers + numpy only)

from runtime.preprocessing import encode_texts, pad_batch  # noqa: E402


class SentimentRuntime(MLModel):
    """IMDB sentiment: texts in, P(positive) and a label out."""

    async def load(self) -> bool:
        folder = Path(self.settings.parameters.uri)
        extra = self.settings.parameters.extra or {}
        self._meta = json.loads((folder / "metadata.json").read_text())
        self._tokenizer = Tokenizer.from_file(str(folder / self._meta["preprocessing"]["tokenizer"]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 1))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(folder / self._meta["precisions"]["fp32"]), options,
                                             providers=["CPUExecutionProvider"])
        self._threshold = float(self._meta["threshold"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        ids = encode_texts(self._tokenizer, texts, self._meta["max_tokens"], self._meta["head_tokens"],
                           self._meta["unk_id"])
        input_ids, lengths = pad_batch(ids, self._meta["pad_id"])
        probability = self._session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})[0]
        labels = ["positive" if p >= self._threshold else "negative" for p in probability]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[
            ResponseOutput(name="probability", datatype="FP32", shape=[len(texts)],
                           data=probability.astype(np.float32).tolist()),
            StringCodec.encode_output("label", labels)])
