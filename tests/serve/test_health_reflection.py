"""grpc.health.v1 (NOT_SERVING until loaded and warm, then SERVING) and server reflection."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from serve.server import HEALTH_NAMES
from tests.serve.conftest import ServerThread, make_settings

TIMEOUT = 10.0
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def check(server: ServerThread, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status


def test_not_serving_until_loaded_and_warm_then_serving(repository) -> None:
    running = ServerThread(make_settings(repository), load=False)
    try:
        watch = health_pb2_grpc.HealthStub(running.channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                                  timeout=TIMEOUT)
        assert next(watch).status == NOT_SERVING
        assert all(check(running, name) == NOT_SERVING for name in HEALTH_NAMES)
        running.call(running.server.load())
        assert next(watch).status == SERVING
        watch.cancel()
        assert all(check(running, name) == SERVING for name in HEALTH_NAMES)
    finally:
        running.close()


def test_unknown_service_is_not_found(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as info:
        check(server, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_failed_model_load_never_reports_serving(tmp_path) -> None:
    running = ServerThread(make_settings(tmp_path), load=False)  # empty repository
    try:
        with pytest.raises(Exception, match="no model 'imdb-lstm'"):
            running.call(running.server.load())
        assert check(running) == NOT_SERVING
    finally:
        running.close()


def test_reflection_lists_every_service_and_serves_their_descriptors(server: ServerThread) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="sentiment.v1.SentimentService"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService")]
    replies = list(stub.ServerReflectionInfo(iter(requests), timeout=TIMEOUT))
    services = {s.name for s in replies[0].list_services_response.service}
    assert services == {"sentiment.v1.SentimentService", "inference.GRPCInferenceService", "sentiment.v1.ModelAdmin",
                        "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                        "grpc.reflection.v1.ServerReflection"}
    assert replies[1].file_descriptor_response.file_descriptor_proto
    assert replies[2].file_descriptor_response.file_descriptor_proto


def v1_request(field: int, value: str) -> bytes:
    """A grpc.reflection.v1 ServerReflectionRequest encoded by hand: one string field (ours has no v1 classes)."""
    data = value.encode()
    assert len(data) < 128  # a one-byte length
    return bytes([field << 3 | 2, len(data)]) + data


def test_reflection_v1_answers_clients_that_speak_only_v1(server: ServerThread) -> None:
    """Current grpcurl, grpcui and buf curl ask grpc.reflection.v1 first; some clients know nothing else."""
    info = server.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    requests = [v1_request(7, ""), v1_request(4, "inference.GRPCInferenceService"),
                v1_request(4, "grpc.reflection.v1.ServerReflection")]
    # The v1 response has v1alpha's field numbers (the protocols differ only in package name).
    replies = [reflection_pb2.ServerReflectionResponse.FromString(raw)
               for raw in info(iter(requests), timeout=TIMEOUT)]
    services = {s.name for s in replies[0].list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.reflection.v1.ServerReflection"} <= services
    files = [[descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in
              reply.file_descriptor_response.file_descriptor_proto] for reply in replies[1:]]
    assert "GRPCInferenceService" in [service.name for f in files[0] for service in f.service]
    (v1,) = files[1]
    method = v1.service[0].method[0]
    assert (v1.package, method.name, method.input_type, method.client_streaming) == (
        "grpc.reflection.v1", "ServerReflectionInfo", ".grpc.reflection.v1.ServerReflectionRequest", True)


def test_a_client_with_only_reflection_calls_both_apis(server: ServerThread) -> None:
    """As grpcurl does: every descriptor (imports included) comes from reflection, messages are built from them."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(server.channel))

    def call(service: str, method: str, **fields):
        descriptor = pool.FindServiceByName(service).methods_by_name[method]
        request = message_factory.GetMessageClass(descriptor.input_type)(**fields)
        rpc = server.channel.unary_unary(f"/{service}/{method}", request_serializer=type(request).SerializeToString,
                                         response_deserializer=message_factory.GetMessageClass(
                                             descriptor.output_type).FromString)
        return rpc(request, timeout=TIMEOUT)

    config = call("inference.GRPCInferenceService", "ModelConfig", name="imdb-lstm").config
    assert (config.input[0].name, pool.FindEnumTypeByName("inference.DataType").values_by_number[
        config.input[0].data_type].name) == ("text", "TYPE_STRING")
    reply = call("sentiment.v1.SentimentService", "Predict", text="A wonderful film")
    assert reply.prediction.label in ("positive", "negative") and reply.model.name == "imdb-lstm"
