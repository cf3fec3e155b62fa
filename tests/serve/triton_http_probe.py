"""Drive a server's HTTP port with NVIDIA's ``tritonclient.http``, unmodified; prints one JSON object.

Run in its own process (``python -m tests.serve.triton_http_probe HOST:PORT TEXT...``), like
the gRPC probe: tritonclient's packages stay out of the test process. Every call uses the
client's defaults unless its name says otherwise (binary data both ways, by default).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.http as triton


def texts_input(texts: list[str], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts], dtype=np.object_), binary_data=binary)
    return tensor


def scored(result: triton.InferResult) -> dict:
    return {"probability": result.as_numpy("probability").astype(float).tolist(),
            "probability_dtype": str(result.as_numpy("probability").dtype),
            "label": [label.decode() if isinstance(label, bytes) else label for label in result.as_numpy("label")],
            "id": result.get_response().get("id")}


def failure(call) -> dict:
    try:
        call()
    except triton.InferenceServerException as exc:
        return {"status": exc.status(), "message": exc.message()}
    return {"status": "no error"}


def main(url: str, texts: list[str]) -> dict:
    client = triton.InferenceServerClient(url=url)
    out: dict = {"live": client.is_server_live(), "ready": client.is_server_ready(),
                 "model_ready": client.is_model_ready("imdb-lstm"),
                 "other_version_ready": client.is_model_ready("imdb-lstm", "7"),
                 "server": client.get_server_metadata(), "metadata": client.get_model_metadata("imdb-lstm")}
    both = [triton.InferRequestedOutput("probability"), triton.InferRequestedOutput("label")]
    out["binary"] = scored(client.infer("imdb-lstm", [texts_input(texts)], request_id="req-42"))
    out["json"] = scored(client.infer("imdb-lstm", [texts_input(texts, binary=False)], request_id="req-43",
                                      outputs=[triton.InferRequestedOutput(name, binary_data=False)
                                               for name in ("probability", "label")]))
    out["mixed"] = scored(client.infer("imdb-lstm", [texts_input(texts, binary=False)], outputs=both,
                                       model_version="1"))
    out["gzip"] = scored(client.infer("imdb-lstm", [texts_input(texts)], outputs=both,
                                      request_compression_algorithm="gzip"))
    out["unknown_model"] = failure(lambda: client.infer("no-such-model", [texts_input(texts)]))
    out["empty_text"] = failure(lambda: client.infer("imdb-lstm", [texts_input(["fine", " "])]))
    out["timeout_ample"] = scored(client.infer("imdb-lstm", [texts_input(texts)], outputs=both, timeout=30_000_000,
                                               priority=1))
    out["timeout_expired"] = failure(lambda: client.infer("imdb-lstm", [texts_input(texts)], timeout=1))
    out["sequence"] = failure(lambda: client.infer("imdb-lstm", [texts_input(texts)], sequence_id=7,
                                                   sequence_start=True))
    out["classification"] = failure(lambda: client.infer(
        "imdb-lstm", [texts_input(texts)], outputs=[triton.InferRequestedOutput("probability", class_count=1)]))
    out["config"] = client.get_model_config("imdb-lstm")
    out["statistics"] = client.get_inference_statistics("imdb-lstm")
    out["repository"] = client.get_model_repository_index()
    client.close()
    return out


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(sys.argv[1], sys.argv[2:])))
