"""Drive a server with NVIDIA's tritonclient, unmodified; prints one JSON object.

Run in its own process (``python -m tests.serve.triton_probe ADDRESS TEXT...``): tritonclient
registers its own copy of the ``inference`` protobuf package, which cannot share a process
with ours (protobuf refuses duplicate symbols).
"""

from __future__ import annotations

import json
import queue
import sys

import numpy as np
import tritonclient.grpc as triton


def main(address: str, texts: list[str]) -> dict:
    client = triton.InferenceServerClient(url=address)
    out: dict = {"live": client.is_server_live(), "ready": client.is_server_ready(),
                 "model_ready": client.is_model_ready("imdb-lstm"),
                 "server": client.get_server_metadata(as_json=True),
                 "metadata": client.get_model_metadata("imdb-lstm", as_json=True)}
    tensor = triton.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode("utf-8") for t in texts], dtype=np.object_))
    outputs = [triton.InferRequestedOutput("probability"), triton.InferRequestedOutput("label")]
    result = client.infer("imdb-lstm", [tensor], outputs=outputs, request_id="req-42")
    out["probability"] = result.as_numpy("probability").astype(float).tolist()
    out["probability_dtype"] = str(result.as_numpy("probability").dtype)
    out["label"] = [label.decode() for label in result.as_numpy("label")]
    out["id"] = result.get_response().id
    try:
        client.infer("no-such-model", [tensor])
    except triton.InferenceServerException as exc:
        out["unknown_model"] = {"status": exc.status(), "message": exc.message()}
    out["parameters"] = parameters(client, tensor)
    out["config"] = client.get_model_config("imdb-lstm", as_json=True)["config"]
    out["statistics"] = client.get_inference_statistics("imdb-lstm", as_json=True)
    out["repository"] = client.get_model_repository_index(as_json=True)
    out["stream"] = stream(client, texts)
    client.close()
    return out


def parameters(client: triton.InferenceServerClient, tensor: triton.InferInput) -> dict:
    """tritonclient's request parameters: each call's probabilities, or its error's status and message."""
    calls = {
        "timeout_ample": dict(timeout=30_000_000, priority=1),  # microseconds; one priority level here
        "timeout_expired": dict(timeout=1),
        "sequence": dict(sequence_id=7, sequence_start=True),
        "classification": dict(outputs=[triton.InferRequestedOutput("probability", class_count=1)]),
    }
    out = {}
    for name, options in calls.items():
        try:
            out[name] = client.infer("imdb-lstm", [tensor], **options).as_numpy("probability").astype(float).tolist()
        except triton.InferenceServerException as exc:
            out[name] = {"status": exc.status(), "message": exc.message()}
    return out


def stream(client: triton.InferenceServerClient, texts: list[str]) -> list[dict]:
    """One ModelStreamInfer stream: a request per text, with an empty text second (it must fail alone)."""
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = [texts[0], " ", *texts[1:]]
    for index, text in enumerate(sent):
        tensor = triton.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=np.object_))
        client.async_stream_infer("imdb-lstm", [tensor], request_id=f"s{index}")
    client.stop_stream()  # waits for every answer
    out = []
    while not answers.empty():
        result, error = answers.get_nowait()
        if error is not None:
            out.append({"error": error.message()})
        else:
            out.append({"id": result.get_response().id,
                        "probability": float(result.as_numpy("probability")[0])})
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
