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
from protos.inference import model_config_pb2 as config_pb
from serve.grpc.kserve_codec import decode_bytes_tensor, encode_bytes_tensor, request_timeout_s
from serve.server import KSERVE_SERVICE
from tests.conftest import REPO_ROOT
from tests.serve.conftest import REVIEWS, ServerThread, make_settings

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


# Messages declared with only the fields this server fills (the rest read as unset upstream).
PARTIAL_MESSAGES = {"ModelStatistics"}


def upstream_descriptor(module: str) -> descriptor_pb2.FileDescriptorProto:
    """tritonclient's own descriptor of ``module`` (service_pb2, model_config_pb2), read in a subprocess."""
    code = (f"import sys; from google.protobuf import descriptor_pb2; from tritonclient.grpc import {module} as s;"
            "f = descriptor_pb2.FileDescriptorProto(); s.DESCRIPTOR.CopyToProto(f);"
            "sys.stdout.write(f.SerializeToString().hex())")
    return descriptor_pb2.FileDescriptorProto.FromString(bytes.fromhex(run_python(["-c", code])))


def flatten(messages, prefix=""):
    """{message name: {(field name, number, type, label, type name)}}, nested messages included."""
    table = {}
    for message in messages:
        table[prefix + message.name] = {(f.name, f.number, f.type, f.label, f.type_name) for f in message.field}
        table.update(flatten(message.nested_type, prefix + message.name + "."))
    return table


def test_field_numbers_match_tritonclients_own_proto() -> None:
    """Every message and field we declare has tritonclient's number, type and label; so do the RPCs."""
    ours = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(ours)
    theirs = upstream_descriptor("service_pb2")
    mine, upstream = flatten(ours.message_type), flatten(theirs.message_type)
    assert len(mine) > 25
    for name, fields in mine.items():
        if name in PARTIAL_MESSAGES:
            assert fields < upstream[name], name
        else:
            assert fields == upstream.get(name), name
    upstream_methods = {m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
                        for m in theirs.service[0].method}
    for method in ours.service[0].method:
        assert upstream_methods[method.name] == (method.input_type, method.output_type, method.client_streaming,
                                                 method.server_streaming), method.name
    assert ours.package == theirs.package and ours.service[0].name == theirs.service[0].name


def test_model_config_fields_are_a_subset_of_tritons() -> None:
    ours = descriptor_pb2.FileDescriptorProto()
    config_pb.DESCRIPTOR.CopyToProto(ours)
    theirs = upstream_descriptor("model_config_pb2")
    mine, upstream = flatten(ours.message_type), flatten(theirs.message_type)
    assert {"ModelConfig", "ModelInput", "ModelOutput", "ModelInstanceGroup", "ModelDynamicBatching"} <= set(mine)
    for name, fields in mine.items():
        assert fields <= upstream[name], name
    enums = {e.name: {(v.name, v.number) for v in e.value} for e in theirs.enum_type}
    for enum in ours.enum_type:
        assert {(v.name, v.number) for v in enum.value} == enums[enum.name]

    def kinds(file: descriptor_pb2.FileDescriptorProto) -> set[tuple[str, int]]:
        return {(v.name, v.number) for m in file.message_type if m.name == "ModelInstanceGroup"
                for e in m.enum_type if e.name == "Kind" for v in e.value}

    assert kinds(ours) == kinds(theirs) and len(kinds(ours)) == 4


def test_tritonclient_works_unmodified(server: ServerThread, reference) -> None:
    texts = REVIEWS[:5]
    result = json.loads(run_python(["-m", "tests.serve.triton_probe", server.address, *texts]))
    assert result["live"] and result["ready"] and result["model_ready"]
    assert result["metadata"]["name"] == "imdb-lstm" and result["metadata"]["versions"] == ["1"]
    assert [(t["name"], t["datatype"]) for t in result["metadata"]["inputs"]] == [("text", "BYTES")]
    assert [(t["name"], t["datatype"]) for t in result["metadata"]["outputs"]] == [
        ("probability", "FP32"), ("label", "BYTES"), ("known_word_fraction", "FP32")]
    assert result["probability_dtype"] == "float32" and result["id"] == "req-42"
    np.testing.assert_allclose(result["probability"], reference(texts), atol=1e-6, rtol=0)
    assert result["label"] == ["positive" if p >= 0.5 else "negative" for p in result["probability"]]
    assert result["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    calls = result["parameters"]
    np.testing.assert_allclose(calls["timeout_ample"], reference(texts), atol=1e-6, rtol=0)
    assert calls["timeout_expired"]["status"] == "StatusCode.DEADLINE_EXCEEDED"
    assert calls["sequence"]["status"] == "StatusCode.INVALID_ARGUMENT" and "stateless" in calls["sequence"]["message"]
    assert calls["classification"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "no classification extension" in calls["classification"]["message"]
    config = result["config"]
    assert (config["name"], config["platform"], config["backend"]) == ("imdb-lstm", "onnxruntime_onnx", "onnxruntime")
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [("text", "TYPE_STRING", ["-1"])]
    assert [(t["name"], t["data_type"]) for t in config["output"]] == [
        ("probability", "TYPE_FP32"), ("label", "TYPE_STRING"), ("known_word_fraction", "TYPE_FP32")]
    assert config["instance_group"][0]["kind"] == "KIND_CPU" and config.get("max_batch_size", 0) == 0
    stats = result["statistics"]["model_stats"][0]
    assert (stats["name"], stats["version"]) == ("imdb-lstm", "1")
    assert int(stats["inference_count"]) >= len(texts) and int(stats["inference_stats"]["success"]["count"]) >= 1
    assert result["repository"]["models"] == [{"name": "imdb-lstm", "version": "1", "state": "READY"}]
    # The stream answers every request; the empty text fails alone, naming its id.
    answers = result["stream"]
    errors = [a["error"] for a in answers if "error" in a]
    assert len(answers) == len(texts) + 1 and len(errors) == 1
    assert "request id='s1'" in errors[0] and "is empty" in errors[0]
    scored = {a["id"]: a["probability"] for a in answers if "id" in a}
    assert sorted(scored) == [f"s{i}" for i in range(len(texts) + 1) if i != 1]
    np.testing.assert_allclose([scored[f"s{i}"] for i in [0, *range(2, len(texts) + 1)]], reference(texts),
                               atol=1e-6, rtol=0)


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
    assert [o.name for o in reply.outputs] == ["probability", "label", "known_word_fraction"]
    assert len(reply.raw_output_contents) == 3
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
    request = raw_request(good)
    request.parameters["timeout"].string_param = "5s"
    add("timeout-not-an-integer", request, "integer number of microseconds")
    request = raw_request(good)
    request.parameters["timeout"].int64_param = -1
    add("negative-timeout", request, "send 0 (none) or more")
    request = raw_request(good)
    request.parameters["sequence_id"].string_param = "user-7"
    add("sequence-id", request, "this model is stateless")
    request = pb.ModelInferRequest(model_name="imdb-lstm")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.parameters["shared_memory_region"].string_param = "texts"
    tensor.parameters["shared_memory_byte_size"].int64_param = 64
    add("shared-memory-input", request, "no shared-memory extension")
    request = raw_request(good)
    request.outputs.add(name="label").parameters["shared_memory_region"].string_param = "labels"
    add("shared-memory-output", request, "shared-memory region 'labels'")
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


@pytest.mark.parametrize(("microseconds", "seconds"), [(None, None), (0, None), (2_500_000, 2.5)])
def test_timeout_parameter_is_microseconds_and_zero_means_none(microseconds, seconds) -> None:
    request = raw_request([b"fine"])
    request.parameters["priority"].uint64_param = 3  # accepted, no effect
    request.parameters["sequence_id"].int64_param = 0  # tritonclient's "no sequence"
    if microseconds is not None:
        request.parameters["timeout"].int64_param = microseconds
    assert request_timeout_s(request) == seconds


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


def statistics(server: ServerThread) -> pb.ModelStatistics:
    reply = stub(server).ModelStatistics(pb.ModelStatisticsRequest(name="imdb-lstm"), timeout=TIMEOUT)
    assert len(reply.model_stats) == 1
    return reply.model_stats[0]


def test_statistics_count_what_was_done(server: ServerThread) -> None:
    before = statistics(server)
    api = stub(server)
    for texts in (REVIEWS[:3], REVIEWS[3:4]):
        api.ModelInfer(raw_request([t.encode() for t in texts]), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        api.ModelInfer(raw_request([b"  "]), timeout=TIMEOUT)
    after = statistics(server)
    assert after.inference_count - before.inference_count == 4
    assert after.execution_count - before.execution_count == 2  # one caller at a time: one batch each
    done, was = after.inference_stats, before.inference_stats
    assert (done.success.count - was.success.count, done.fail.count - was.fail.count) == (2, 1)
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert getattr(done, phase).count - getattr(was, phase).count == 2, phase
    assert done.compute_infer.ns > was.compute_infer.ns and done.success.ns > was.success.ns
    # A request's time covers its queue wait and the three compute phases.
    assert done.success.ns - was.success.ns >= sum(getattr(done, p).ns - getattr(was, p).ns for p in
                                                   ("queue", "compute_input", "compute_infer", "compute_output"))
    sizes = {b.batch_size: b.compute_infer.count for b in after.batch_stats}
    assert sizes.get(3, 0) >= 1 and sizes.get(1, 0) >= 1
    assert after.last_inference >= before.last_inference > 0 or before.execution_count == 0


def test_statistics_and_config_refuse_unknown_models(server: ServerThread) -> None:
    api = stub(server)
    for call, request in ((api.ModelStatistics, pb.ModelStatisticsRequest(name="other")),
                          (api.ModelConfig, pb.ModelConfigRequest(name="other")),
                          (api.ModelConfig, pb.ModelConfigRequest(name="imdb-lstm", version="9"))):
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        api.ModelStatistics(pb.ModelStatisticsRequest(version="1"), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "without a model name" in info.value.details()
    everything = api.ModelStatistics(pb.ModelStatisticsRequest(), timeout=TIMEOUT)
    assert [s.name for s in everything.model_stats] == ["imdb-lstm"]


def test_stream_infer_answers_each_request_and_survives_bad_ones(server: ServerThread, reference) -> None:
    good = [t.encode() for t in REVIEWS[:4]]
    requests = [raw_request([good[0], good[1]], id="a"), raw_request([b""], id="empty"),
                raw_request([good[2]], id="b", model_name="other"), raw_request([good[3]], id="c")]
    answers = list(stub(server).ModelStreamInfer(iter(requests), timeout=TIMEOUT))
    assert len(answers) == 4
    errors = sorted(a.error_message for a in answers if a.error_message)
    assert len(errors) == 2 and "request id='b'" in errors[0] and "unknown model 'other'" in errors[0]
    assert "request id='empty'" in errors[1]
    replies = {a.infer_response.id: a.infer_response for a in answers if not a.error_message}
    assert sorted(replies) == ["a", "c"]
    np.testing.assert_allclose(np.frombuffer(replies["a"].raw_output_contents[0], dtype="<f4"),
                               reference(REVIEWS[:2]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.frombuffer(replies["c"].raw_output_contents[0], dtype="<f4"),
                               reference(REVIEWS[3:4]), atol=1e-6, rtol=0)


def test_before_the_model_is_loaded_extensions_say_so(repository) -> None:
    running = ServerThread(make_settings(repository), load=False)
    try:
        api = stub(running)
        for call, request in ((api.ModelConfig, pb.ModelConfigRequest(name="imdb-lstm")),
                              (api.ModelStatistics, pb.ModelStatisticsRequest())):
            with pytest.raises(grpc.RpcError) as info:
                call(request, timeout=TIMEOUT)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in info.value.details()
        index = api.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=TIMEOUT).models
        assert [(m.version, m.state) for m in index] == [("1", "UNAVAILABLE")] and "loading" in index[0].reason
        running.load()
        assert [m.state for m in api.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=TIMEOUT).models] == ["READY"]
        assert api.ModelStatistics(pb.ModelStatisticsRequest(), timeout=TIMEOUT).model_stats[0].inference_count == 0
    finally:
        running.close()
