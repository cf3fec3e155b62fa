"""The HTTP port: NVIDIA's tritonclient.http unmodified, curl-style requests, errors, limits, metrics.

Real servers on loopback (gRPC and HTTP ports both ephemeral), real ONNX Runtime sessions.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from protos.inference import grpc_predict_v2_pb2 as kpb
from protos.inference import grpc_predict_v2_pb2_grpc as kpb_grpc
from protos.sentiment.v1 import sentiment_pb2 as spb
from protos.sentiment.v1 import sentiment_pb2_grpc as spb_grpc
from serve.grpc.kserve_codec import decode_bytes_tensor, encode_bytes_tensor
from serve.ops.errors import ConfigurationError
from serve.ops.settings import load_settings
from tests.conftest import REPO_ROOT
from tests.fixtures.http_client import Reply, infer_body, request
from tests.serve.conftest import REVIEWS, ServerThread, make_settings

TIMEOUT = 30.0
INFER = "/v2/models/imdb-lstm/infer"


def call(server: ServerThread, method: str, path: str, body=None, headers: dict[str, str] | None = None) -> Reply:
    return request(server.server.http_port, method, path, body, headers)


def test_tritonclient_http_works_unmodified(server: ServerThread, reference) -> None:
    texts = REVIEWS[:5]
    address = f"127.0.0.1:{server.server.http_port}"
    done = subprocess.run([sys.executable, "-m", "tests.serve.triton_http_probe", address, *texts],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["live"] and result["ready"] and result["model_ready"] and not result["other_version_ready"]
    assert result["server"]["name"] == "imdb-sentiment-edge"
    assert result["metadata"]["name"] == "imdb-lstm" and result["metadata"]["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in result["metadata"]["inputs"]] == [("text", "BYTES", [-1])]
    expected = reference(texts)
    # Binary data both ways (the client's default), JSON both ways, JSON in and binary out, gzip-compressed.
    for way in ("binary", "json", "mixed", "gzip", "timeout_ample"):
        answer = result[way]
        assert answer["probability_dtype"] == "float32", way
        np.testing.assert_allclose(answer["probability"], expected, atol=1e-6, rtol=0, err_msg=way)
        assert answer["label"] == ["positive" if p >= 0.5 else "negative" for p in answer["probability"]], way
    assert result["binary"]["id"] == "req-42" and result["json"]["id"] == "req-43"
    assert result["unknown_model"] == {"status": "404",
                                       "message": "unknown model 'no-such-model'; this server serves 'imdb-lstm'"}
    assert result["empty_text"]["status"] == "400" and "is empty" in result["empty_text"]["message"]
    assert result["timeout_expired"]["status"] == "504"
    assert result["sequence"]["status"] == "400" and "stateless" in result["sequence"]["message"]
    assert result["classification"]["status"] == "400"
    assert "no classification extension" in result["classification"]["message"]
    config = result["config"]
    assert (config["name"], config["backend"], config["max_batch_size"]) == ("imdb-lstm", "onnxruntime", 0)
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("text", "TYPE_STRING", [-1])]
    stats = result["statistics"]["model_stats"][0]
    assert (stats["name"], stats["version"]) == ("imdb-lstm", "1")
    assert stats["inference_count"] >= 5 * len(texts) and stats["inference_stats"]["success"]["count"] >= 5
    assert result["repository"] == [{"name": "imdb-lstm", "version": "1", "state": "READY", "reason": ""}]


def test_one_text_one_answer_on_both_ports_and_every_http_route(server: ServerThread) -> None:
    texts = REVIEWS
    grpc_batch = spb_grpc.SentimentServiceStub(server.channel).PredictBatch(spb.PredictBatchRequest(texts=texts),
                                                                            timeout=TIMEOUT)
    grpc_probabilities = [p.probability for p in grpc_batch.predictions]
    kserve = call(server, "POST", INFER, infer_body(texts))
    assert kserve.status == 200, kserve.body
    outputs = {o["name"]: o for o in kserve.json()["outputs"]}
    assert outputs["probability"]["data"] == grpc_probabilities  # float32 values, exactly
    assert outputs["label"]["data"] == [p.label for p in grpc_batch.predictions]
    batch = call(server, "POST", "/v1/predict:batch", {"texts": texts}).json()
    assert [p["probability"] for p in batch["predictions"]] == grpc_probabilities
    assert batch["model"] == {"name": "imdb-lstm", "version": 1}
    for text, probability in zip(texts, grpc_probabilities, strict=True):
        single = call(server, "POST", "/v1/predict", {"text": text}).json()
        assert single["prediction"]["probability"] == probability
        assert single["prediction"]["label"] == ("positive" if probability >= 0.5 else "negative")


def test_curl_one_liner_from_the_readme(server: ServerThread) -> None:
    """The README's example, sent by curl itself when it is installed (else the same bytes by http.client)."""
    body = '{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["A wonderful film"]}]}'
    url = f"{server.http_url}{INFER}"
    curl = "/usr/bin/curl"
    if os.path.exists(curl):
        done = subprocess.run([curl, "-s", "-X", "POST", url, "-H", "Content-Type: application/json", "-d", body],
                              capture_output=True, text=True, timeout=TIMEOUT)
        answer = json.loads(done.stdout)
    else:
        answer = call(server, "POST", INFER, body, {"Content-Type": "application/json"}).json()
    assert answer["model_name"] == "imdb-lstm" and answer["model_version"] == "1"
    assert [o["name"] for o in answer["outputs"]] == ["probability", "label", "known_word_fraction"]


def binary_request(texts: list[bytes], outputs: list[dict] | None = None, **parameters) -> tuple[bytes, dict]:
    raw = encode_bytes_tensor(texts)
    header = binary_input(len(texts), binary_data_size=len(raw))
    if outputs is not None:
        header["outputs"] = outputs
    if parameters:
        header["parameters"] = parameters
    return with_binary(header, raw)


def split_binary(reply: Reply) -> tuple[dict, dict[str, bytes]]:
    """The JSON header of a binary answer and each binary output's bytes."""
    length = int(reply.headers["inference-header-content-length"])
    header = json.loads(reply.body[:length])
    chunks, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            chunks[output["name"]] = reply.body[offset:offset + size]
            offset += size
    assert offset == len(reply.body)
    return header, chunks


def test_binary_data_extension_by_hand(server: ServerThread, reference) -> None:
    texts = [t.encode() for t in REVIEWS[:3]]
    body, headers = binary_request(texts, binary_data_output=True)
    reply = call(server, "POST", INFER, body, headers)
    assert reply.status == 200 and reply.headers["content-type"] == "application/octet-stream"
    header, chunks = split_binary(reply)
    assert [o["name"] for o in header["outputs"]] == ["probability", "label", "known_word_fraction"]
    np.testing.assert_allclose(np.frombuffer(chunks["probability"], "<f4"), reference(REVIEWS[:3]), atol=1e-6)
    assert set(decode_bytes_tensor(chunks["label"], 3)) <= {b"positive", b"negative"}
    # Per output: the label as JSON, the probability as binary data.
    body, headers = binary_request(texts, [{"name": "label", "parameters": {"binary_data": False}},
                                           {"name": "probability", "parameters": {"binary_data": True}}])
    header, chunks = split_binary(call(server, "POST", INFER, body, headers))
    assert header["outputs"][0]["data"] == ["positive" if p >= 0.5 else "negative"
                                            for p in np.frombuffer(chunks["probability"], "<f4")]
    # Binary in, nothing asked as binary: plain JSON out.
    body, headers = binary_request(texts)
    reply = call(server, "POST", INFER, body, headers)
    assert reply.headers["content-type"].startswith("application/json") and len(reply.json()["outputs"][0]["data"]) == 3


HUGE_SHAPE = 2**70
RAW_A = b"\x01\x00\x00\x00a"  # a BYTES tensor of one element, "a"


def binary_input(count: int, data: list[str] | None = None, **parameters) -> dict:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [count], "parameters": parameters}
    return {"inputs": [tensor if data is None else {**tensor, "data": data}]}


def with_binary(header: dict, tail: bytes) -> tuple[bytes, dict[str, str]]:
    """A body and headers of the binary data extension: ``header`` as JSON, then ``tail``."""
    text = json.dumps(header).encode()
    return text + tail, {"Inference-Header-Content-Length": str(len(text))}


# (method, path, body, extra headers, status, part of the error message)
CASES = [
    ("POST", "/v2/health/live", b"", {}, 405, "does not take POST"),
    ("DELETE", "/v2", None, {}, 405, "allowed: GET"),
    ("GET", INFER, None, {}, 405, "allowed: POST"),
    ("GET", "/v1/predict", None, {}, 405, "allowed: POST"),
    ("GET", "/v3/anything", None, {}, 404, "no such endpoint: GET /v3/anything"),
    ("GET", "/index.html", None, {}, 404, "no such endpoint"),  # / is the inspector page
    ("GET", "/v2/models/other", None, {}, 404, "unknown model 'other'"),
    ("GET", "/v2/models/imdb-lstm/versions/9/ready", None, {}, 404, "no version '9'"),
    ("GET", "/v2/models/imdb-lstm/versions/x/config", None, {}, 404, "no version 'x'"),
    ("POST", "/v2/models/other/infer", infer_body(["fine"]), {}, 404, "unknown model 'other'"),
    ("POST", INFER, b"{bad", {}, 400, "not valid JSON"),
    ("POST", INFER, b"", {}, 400, "not valid JSON"),
    ("POST", INFER, b"\xff\xfe{}", {}, 400, "not valid UTF-8"),
    ("POST", INFER, b"[]", {}, 400, "must be a JSON object, not array"),
    ("POST", INFER, b'{"inputs": NaN}', {}, 400, "NaN is not a JSON number"),
    ("POST", INFER, b"[" * 100_000, {}, 400, "too deeply"),
    ("POST", INFER, {}, {}, 400, "'inputs' is required"),
    ("POST", INFER, {"inputs": {"name": "text"}}, {}, 400, "'inputs' must be an array, not object"),
    ("POST", INFER, {"inputs": [5]}, {}, 400, "inputs[0] must be a JSON object"),
    ("POST", INFER, {"inputs": [{"name": "text", "shape": [1], "data": ["a"]}]}, {}, 400, "'datatype' are required"),
    ("POST", INFER, infer_body([5]), {}, 400, "element 0 is number 5: BYTES elements travel as JSON strings"),
    ("POST", INFER, infer_body([None]), {}, 400, "element 0 is null"),
    ("POST", INFER, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [["a"]]}]}, {}, 400,
     "element 0 is array"),
    ("POST", INFER, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}, {}, 400,
     "'shape' is [2] but 'data' holds 1 elements"),
    ("POST", INFER, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": ["1"], "data": ["a"]}]}, {}, 400,
     "each dimension is an integer"),
    ("POST", INFER, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [HUGE_SHAPE], "data": ["a"]}]}, {},
     400, "each dimension is an integer"),
    ("POST", INFER, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [["a"]]}]}, {}, 400,
     "must have shape [N]"),
    ("POST", INFER, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}, {}, 400, "'data' is required"),
    ("POST", INFER, {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, {}, 400,
     "datatype BYTES"),
    ("POST", INFER, {"inputs": [{"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, {}, 400,
     "exactly one input named 'text'"),
    ("POST", INFER, infer_body(["a", " "]), {}, 400, "is empty"),
    ("POST", INFER, infer_body(["x" * 100_001]), {}, 400, "at most 100000 accepted"),
    ("POST", INFER, infer_body(["a"] * 1025), {}, 400, "at most 1024 per request"),
    ("POST", INFER, infer_body(["a\ud800"]), {}, 400, "not valid UTF-8"),
    ("POST", INFER, infer_body(["a"], outputs=[{"name": "logits"}]), {}, 400, "unknown output"),
    ("POST", INFER, infer_body(["a"], outputs=[{"parameters": {}}]), {}, 400, "outputs[0]: 'name' is required"),
    ("POST", INFER, infer_body(["a"], parameters={"timeout": -1}), {}, 400, "request parameter 'timeout'"),
    ("POST", INFER, infer_body(["a"], parameters={"timeout": "soon"}), {}, 400, "request parameter 'timeout'"),
    ("POST", INFER, infer_body(["a"], parameters={"timeout": -2**64}), {}, 400,
     "request parameter 'timeout' is out of the 64-bit integer range"),
    ("POST", INFER, infer_body(["a"], parameters={"custom": None}), {}, 400, "parameter 'custom' is null"),
    ("POST", INFER, infer_body(["a"], parameters={"custom": [1]}), {}, 400, "parameter 'custom' is array"),
    ("POST", INFER, infer_body(["a"], parameters={"custom": HUGE_SHAPE}), {}, 400, "64-bit integer range"),
    ("POST", INFER, infer_body(["a"], parameters="x"), {}, 400, "'parameters' must be an object"),
    ("POST", INFER, infer_body(["a"], parameters={"binary_data_output": 1}), {}, 400, "must be a boolean"),
    ("POST", INFER, infer_body(["a"], parameters={"sequence_id": 3}), {}, 400, "stateless"),
    ("POST", INFER, infer_body(["a"], id=5), {}, 400, "'id' must be a string, not number"),
    ("POST", INFER, infer_body(["a"]), {"Inference-Header-Content-Length": "abc"}, 400,
     "Inference-Header-Content-Length 'abc'"),
    ("POST", INFER, infer_body(["a"]), {"Inference-Header-Content-Length": "99999"}, 400, "(0 to "),
    ("POST", INFER, infer_body(["a"]), {"Inference-Header-Content-Length": "\u00b2".encode()}, 400,
     "Inference-Header-Content-Length '\u00b2'"),  # sent as UTF-8: a digit to str.isdigit, not to int()
    ("POST", INFER, b'{"inputs":[]}xyz', {"Inference-Header-Content-Length": "13"}, 400,
     "3 bytes of binary data follow the JSON"),
    ("POST", INFER, *with_binary(binary_input(1, binary_data_size=50), RAW_A), 400, "runs past the binary data"),
    ("POST", INFER, *with_binary(binary_input(1, binary_data_size=5, data=["a"]), RAW_A), 400,
     "both 'data' and parameter 'binary_data_size'"),
    ("POST", INFER, *with_binary(binary_input(2, binary_data_size=5), RAW_A), 400, "ends at element 1 of 2"),
    ("POST", INFER, *with_binary(binary_input(1, binary_data_size=-1), RAW_A), 400, "runs past the binary data"),
    ("POST", INFER, *with_binary(binary_input(1, binary_data_size="5"), RAW_A), 400, "must be an integer"),
    ("POST", INFER, *with_binary(binary_input(1, binary_data_size=5), b"\x01\x00\x00\x00\xff"), 400,
     "not valid UTF-8"),
    ("POST", "/v1/predict", {"text": 5}, {}, 400, "'text' must be a string, not number"),
    ("POST", "/v1/predict", {"txt": "a"}, {}, 400, "unknown field(s) ['txt']"),
    ("POST", "/v1/predict", {}, {}, 400, "'text' is required"),
    ("POST", "/v1/predict", {"text": " "}, {}, 400, "text is empty"),
    ("POST", "/v1/predict", {"text": "bad \ud800 half"}, {}, 400, "lone surrogate (U+D800"),
    ("POST", "/v1/predict", "null", {}, 400, "must be a JSON object, not null"),
    ("POST", "/v1/predict:batch", {"texts": "a"}, {}, 400, "'texts' must be an array, not string"),
    ("POST", "/v1/predict:batch", {"texts": ["a", 1]}, {}, 400, "'texts'[1] must be a string"),
    ("POST", "/v1/predict:batch", {"texts": []}, {}, 400, "send at least one text"),
    ("POST", "/v1/predict:batch", {"texts": ["a"] * 1025}, {}, 400, "at most 1024 per request"),
    ("POST", "/v2/repository/index", {"ready": "yes"}, {}, 400, "'ready' must be a boolean"),
    ("POST", "/v1/predict", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xff\xff\xff", {"Content-Encoding": "gzip"},
     400, "could not be read: Can not decode content-encoding: gzip"),
    ("POST", "/v1/predict", gzip.compress(b'{"text": "a fine film"}')[:12], {"Content-Encoding": "gzip"}, 400,
     "not valid JSON"),  # a cut gzip stream decodes to what it holds: here nothing
    ("POST", "/v1/predict", b"garbage", {"Content-Encoding": "deflate"}, 400, "(Content-Encoding 'deflate')"),
    ("POST", INFER, b"garbage", {"Content-Encoding": "br"}, 400, "could not be read"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "needle"), CASES,
                         ids=[f"{c[0]} {c[1]} {c[5] or c[4]}"[:80] for c in CASES])
def test_bad_requests_get_the_kserve_error_object_with_the_right_status(server: ServerThread, method, path, body,
                                                                      headers, status, needle) -> None:
    reply = call(server, method, path, body, headers)
    assert reply.status == status, reply.body[:300]
    assert needle in reply.error
    assert call(server, "GET", "/v2/health/ready").status == 200


def test_health_metadata_and_extensions(server: ServerThread) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/imdb-lstm/ready",
                 "/v2/models/imdb-lstm/versions/1/ready"):
        reply = call(server, "GET", path)
        assert (reply.status, reply.body) == (200, b""), path  # the protocol: status says it, body empty
    metadata = call(server, "GET", "/v2").json()
    assert metadata["name"] == "imdb-sentiment-edge" and "statistics" in metadata["extensions"]
    model = call(server, "GET", "/v2/models/imdb-lstm/versions/1").json()
    assert model == call(server, "GET", "/v2/models/imdb-lstm").json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["outputs"]] == [
        ("probability", "FP32", [-1]), ("label", "BYTES", [-1]), ("known_word_fraction", "FP32", [-1])]
    stats = call(server, "GET", "/v2/models/stats").json()
    assert [(m["name"], m["version"]) for m in stats["model_stats"]] == [("imdb-lstm", "1")]
    assert isinstance(stats["model_stats"][0]["inference_count"], int)  # numbers, not protobuf's int64 strings
    assert call(server, "POST", "/v2/repository/index", {"ready": True}).json()[0]["state"] == "READY"


def test_gzip_request_bodies_are_read(server: ServerThread) -> None:
    body = gzip.compress(json.dumps({"text": "a fine film"}).encode())
    reply = call(server, "POST", "/v1/predict", body, {"Content-Encoding": "gzip"})
    assert reply.status == 200 and reply.json()["prediction"]["label"] in ("positive", "negative")


def scrape(server: ServerThread) -> str:
    url = f"http://127.0.0.1:{server.server.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()


def counted(text: str, method: str, code: str) -> float:
    needle = f'sentiment_requests_total{{code="{code}",method="{method}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(needle))


def test_http_requests_are_counted_by_route_template_and_status(server: ServerThread) -> None:
    before = scrape(server)
    call(server, "POST", INFER, infer_body(["fine"]))
    call(server, "POST", "/v2/models/some-other-name/infer", infer_body(["fine"]))
    call(server, "GET", "/no/such/path")
    after = scrape(server)
    route = "POST /v2/models/{name}/infer"
    assert counted(after, route, "200") - counted(before, route, "200") == 1
    assert counted(after, route, "404") - counted(before, route, "404") == 1
    assert counted(after, "HTTP unmatched", "404") - counted(before, "HTTP unmatched", "404") == 1
    assert "some-other-name" not in after  # model names never become label values


@pytest.fixture
def unloaded(repository: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_settings(repository), load=False)
    yield running
    running.close()


def test_before_the_model_is_loaded(unloaded: ServerThread) -> None:
    assert call(unloaded, "GET", "/v2/health/live").status == 200
    assert (call(unloaded, "GET", "/v2/health/ready").status, call(unloaded, "GET", "/v2/health/ready").body) == \
        (400, b"")
    assert call(unloaded, "GET", "/v2/models/imdb-lstm/ready").status == 400
    for path, body in ((INFER, infer_body(["fine"])), ("/v1/predict", {"text": "fine"})):
        reply = call(unloaded, "POST", path, body)
        assert reply.status == 503 and "not loaded" in reply.error
        assert reply.headers["retry-after"] == "1"  # RFC 9110: come back later (429 gets it too)
    unloaded.load()
    assert call(unloaded, "GET", "/v2/health/ready").status == 200


def test_bodies_over_the_message_limit_get_413(repository: Path) -> None:
    small = ServerThread(make_settings(repository, max_message_bytes=4096))
    try:
        fits = call(small, "POST", "/v1/predict:batch", {"texts": ["fine"] * 100})
        assert fits.status == 200
        reply = call(small, "POST", "/v1/predict:batch", {"texts": ["fine"] * 1000})
        assert reply.status == 413 and "limit of 4096 bytes (--max-message-bytes)" in reply.error
        # Without a Content-Length (chunked), refused while reading.
        with socket.create_connection(("127.0.0.1", small.server.http_port), timeout=TIMEOUT) as sock:
            chunk = b"x" * 3000
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2 + b"0\r\n\r\n")
            head = sock.recv(65536).decode("latin-1")
        assert head.startswith("HTTP/1.1 413") and "--max-message-bytes" in head
        # The limit holds for the decompressed body: a small gzip of a large body is refused.
        bomb = gzip.compress(json.dumps({"text": "a" * 1_000_000}).encode())
        assert len(bomb) < 4096
        reply = call(small, "POST", "/v1/predict", bomb, {"Content-Encoding": "gzip"})
        assert reply.status == 413 and "--max-message-bytes" in reply.error
        assert call(small, "GET", "/v2/health/ready").status == 200
    finally:
        small.close()


def test_http_port_off_and_port_in_use(repository: Path, server: ServerThread) -> None:
    off = ServerThread(make_settings(repository, http_port=-1), load=False)
    try:
        assert off.server.rest is None and off.server.http_port is None
    finally:
        off.close()
    with pytest.raises(ConfigurationError, match=f"cannot serve HTTP on 127.0.0.1:{server.server.http_port}"):
        ServerThread(make_settings(repository, http_port=server.server.http_port), load=False)


def test_kserve_grpc_and_rest_refuse_the_same_request_with_the_same_message(server: ServerThread) -> None:
    """One validation behind both ports: the gRPC status and the HTTP status name the same defect."""
    stub = kpb_grpc.GRPCInferenceServiceStub(server.channel)
    for texts in (["fine", ""], ["x" * 100_001], ["a"] * 1025):
        grpc_request = kpb.ModelInferRequest(model_name="imdb-lstm")
        grpc_request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)]).contents.bytes_contents.extend(
            t.encode() for t in texts)
        with pytest.raises(Exception) as caught:
            stub.ModelInfer(grpc_request, timeout=TIMEOUT)
        reply = call(server, "POST", INFER, infer_body(texts))
        assert reply.status == 400 and reply.error == caught.value.details()



def test_http_settings_come_from_flags_and_env() -> None:
    assert load_settings([], {}).http_port == 8000 and load_settings([], {}).http_read_timeout_s == 30.0
    assert load_settings([], {"SENTIMENT_HTTP_PORT": "-1"}).http_port == -1
    assert load_settings(["--http-port", "0"], {"SENTIMENT_HTTP_PORT": "9000"}).http_port == 0
    for argv, needle in ((["--http-port", "-2"], "http_port must be >= -1"),
                         (["--http-read-timeout-s", "0"], "http_read_timeout_s must be >= 0.001")):
        with pytest.raises(ConfigurationError, match=needle):
            load_settings(argv, {})


def test_a_null_text_is_named_once_and_no_banner_names_versions(server: ServerThread) -> None:
    reply = call(server, "POST", "/v1/predict", {"text": None})
    assert (reply.status, reply.error) == (400, "'text' must be a string, not null")
    for answer in (reply, call(server, "GET", "/v2"), call(server, "GET", "/nowhere")):
        assert answer.headers["server"] == "imdb-sentiment-edge", answer.headers
