"""KServe v2 / Open Inference Protocol: tritonclient unmodified, typed and raw tensors, errors."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pb2

from protos.inference import grpc_predict_v2_pb2 as pb
from protos.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from serve.kserve_codec import decode_bytes_tensor, encode_bytes_tensor
from serve.server import KSERVE_SERVICE
from tests.conftest import REPO_ROOT
from tests.serve.conftest import REVIEWS, ServerThread

TIMEOUT = 10.0


def stub(server: ServerThread) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(server.channel)


def raw_request(texts: list[bytes], count: int | None = None, **fields) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(**{"model_name": "imdb-lstm", **fields})
    request.inputs.add(name="text", datatype="BYTES", shape=[len(texts) if count is None else count])
    request.raw_input_contents.append(encode_bytes_tensor(texts))
    return request


def run_python(code_or_module: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, *code_or_module], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_field_numbers_match_tritonclients_own_proto() -> None:
    """Every message and field we declare has tritonclient's number, type and label."""
    ours = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(ours)
    code = ("import sys; from google.protobuf import descriptor_pb2; from tritonclient.grpc import service_pb2 as s;"
            "f = descriptor_pb2.FileDescriptorProto(); s.DESCRIPTOR.CopyToProto(f);"
            "sys.stdout.write(f.SerializeToString().hex())")
    theirs = descriptor_pb2.FileDescriptorProto.FromString(bytes.fromhex(run_python(["-c", code])))

    def flatten(messages, prefix=""):
        table = {}
        for message in messages:
            table[prefix + message.name] = {(f.name, f.number, f.type, f.label, f.type_name) for f in message.field}
            table.update(flatten(message.nested_type, prefix + message.name + "."))
        return table

    mine, upstream = flatten(ours.message_type), flatten(theirs.message_type)
    assert len(mine) > 15
    for name, fields in mine.items():
        assert fields == upstream.get(name), name
    upstream_methods = {m.name: (m.input_type, m.output_type) for m in theirs.service[0].method}
    for method in ours.service[0].method:
        assert upstream_methods[method.name] == (method.input_type, method.output_type)
    assert ours.package == theirs.package and ours.service[0].name == theirs.service[0].name


def test_tritonclient_works_unmodified(server: ServerThread, reference) -> None:
    texts = REVIEWS[:5]
    result = json.loads(run_python(["-m", "tests.serve.triton_probe", server.address, *texts]))
    assert result["live"] and result["ready"] and result["model_ready"]
    assert result["metadata"]["name"] == "imdb-lstm" and result["metadata"]["versions"] == ["1"]
    assert [(t["name"], t["datatype"]) for t in result["metadata"]["inputs"]] == [("text", "BYTES")]
    assert [(t["name"], t["datatype"]) for t in result["metadata"]["outputs"]] == [
        ("probability", "FP32"), ("label", "BYTES")]
    assert result["probability_dtype"] == "float32" and result["id"] == "req-42"
    np.testing.assert_allclose(result["probability"], reference(texts), atol=1e-6, rtol=0)
    assert result["label"] == ["positive" if p >= 0.5 else "negative" for p in result["probability"]]
    assert result["unknown_model"]["status"] == "StatusCode.NOT_FOUND"


def test_typed_contents_get_typed_answers(server: ServerThread, reference) -> None:
    request = pb.ModelInferRequest(model_name="imdb-lstm", model_version="1", id="typed")
    request.inputs.add(name="text", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(
        t.encode() for t in REVIEWS[:3])
    request.outputs.add(name="label")
    request.outputs.add(name="probability")
    reply = stub(server).ModelInfer(request, timeout=TIMEOUT)
    assert [o.name for o in reply.outputs] == ["label", "probability"] and not reply.raw_output_contents
    assert list(reply.outputs[1].shape) == [3] and reply.id == "typed" and reply.model_version == "1"
    np.testing.assert_allclose(reply.outputs[1].contents.fp32_contents, reference(REVIEWS[:3]), atol=1e-6, rtol=0)
    assert all(label in (b"positive", b"negative") for label in reply.outputs[0].contents.bytes_contents)


def test_raw_contents_get_raw_answers(server: ServerThread, reference) -> None:
    reply = stub(server).ModelInfer(raw_request([t.encode() for t in REVIEWS]), timeout=TIMEOUT)
    assert [o.name for o in reply.outputs] == ["probability", "label"] and len(reply.raw_output_contents) == 2
    probability = np.frombuffer(reply.raw_output_contents[0], dtype="<f4")
    np.testing.assert_allclose(probability, reference(REVIEWS), atol=1e-6, rtol=0)
    labels = decode_bytes_tensor(reply.raw_output_contents[1], len(REVIEWS))
    assert labels == [b"positive" if p >= 0.5 else b"negative" for p in probability]


def malformed() -> list[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]]:
    cases = []

    def add(name, request, needle, code=grpc.StatusCode.INVALID_ARGUMENT):
        cases.append(pytest.param(request, code, needle, id=name))

    good = [b"fine film", b"awful"]
    add("shape-larger-than-buffer", raw_request(good, count=3), "ends at element 2 of 3")
    add("shape-smaller-than-buffer", raw_request(good, count=1), "bytes left after the 1 elements")
    request = raw_request([])
    request.inputs[0].shape[:] = [1]
    request.raw_input_contents[0] = struct.pack("<I", 1_000_000) + b"short"
    add("length-prefix-beyond-buffer", request, "declares 1000000 bytes")
    request = raw_request([])
    request.inputs[0].shape[:] = [1]
    request.raw_input_contents[0] = b"\x01\x00"
    add("truncated-length-prefix", request, "ends at element 0 of 1")
    add("invalid-utf8", raw_request([b"\xff\xfe bad"]), "not valid UTF-8")
    add("empty-text", raw_request([b"good", b"   "]), "is empty")
    add("zero-texts", raw_request([]), "send at least one text")
    add("too-many-texts", raw_request([b"x"] * 2, count=5000), "at most 1024 per request")
    request = raw_request(good)
    request.inputs[0].datatype = "FP32"
    add("wrong-datatype", request, "datatype BYTES")
    request = raw_request(good)
    request.inputs[0].name = "review"
    add("wrong-input-name", request, "exactly one input named 'text'")
    request = raw_request(good)
    request.inputs[0].shape[:] = [2, 1]
    add("wrong-rank", request, "shape [N]")
    request = raw_request(good)
    request.inputs[0].contents.bytes_contents.append(b"both")
    add("raw-and-typed", request, "both raw_input_contents and contents")
    request = pb.ModelInferRequest(model_name="imdb-lstm")
    request.inputs.add(name="text", datatype="BYTES", shape=[2]).contents.bytes_contents.append(b"one")
    add("typed-count-mismatch", request, "has 1 elements")
    request = pb.ModelInferRequest(model_name="imdb-lstm")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.fp32_contents.append(1.0)
    add("typed-wrong-field", request, "bytes_contents")
    request = raw_request(good)
    request.raw_input_contents.append(b"extra")
    add("raw-count-mismatch", request, "2 entries for 1 input")
    request = raw_request(good)
    request.outputs.add(name="logits")
    add("unknown-output", request, "unknown output")
    add("no-model-name", raw_request(good, model_name=""), "model_name is required")
    add("unknown-model", raw_request(good, model_name="other"), "unknown model 'other'", grpc.StatusCode.NOT_FOUND)
    add("unknown-version", raw_request(good, model_version="7"), "no version '7'", grpc.StatusCode.NOT_FOUND)
    return cases


@pytest.mark.parametrize(("request_message", "code", "needle"), malformed())
def test_malformed_requests_get_specific_codes_never_internal(server: ServerThread, request_message, code,
                                                              needle: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub(server).ModelInfer(request_message, timeout=TIMEOUT)
    assert info.value.code() == code, info.value.details()
    assert needle in info.value.details()


def test_health_and_metadata_rpcs(server: ServerThread) -> None:
    api = stub(server)
    assert api.ServerLive(pb.ServerLiveRequest(), timeout=TIMEOUT).live
    assert api.ServerReady(pb.ServerReadyRequest(), timeout=TIMEOUT).ready
    assert api.ModelReady(pb.ModelReadyRequest(name="imdb-lstm", version="1"), timeout=TIMEOUT).ready
    meta = api.ServerMetadata(pb.ServerMetadataRequest(), timeout=TIMEOUT)
    assert meta.name == "imdb-sentiment-edge"
    with pytest.raises(grpc.RpcError) as info:
        api.ModelMetadata(pb.ModelMetadataRequest(name="nope"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert KSERVE_SERVICE == "inference.GRPCInferenceService"
