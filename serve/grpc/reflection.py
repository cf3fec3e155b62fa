"""gRPC server reflection in both of its versions, so every reflection client can list and call us.

``grpc.reflection.v1`` is what current tools (grpcurl, grpcui, buf curl) ask first, and the
only version some clients speak; ``grpc.reflection.v1alpha`` is what older ones ask, and the
only one grpcio-reflection ships. The two are the same messages, field for field, under two
package names, so the wire bytes are identical: v1 is answered by grpcio-reflection's
servicer through a handler registered under the v1 name. The v1 descriptors (v1alpha's,
renamed) are added to the default pool, so that v1 can describe itself like any service.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, made from v1alpha's descriptor by renaming its package."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", f".{V1_PACKAGE}."
    file.name, file.package = _V1_FILE, V1_PACKAGE
    file.ClearField("options")  # v1alpha's language options name v1alpha packages
    for message in file.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # proto2: assigning even "" would mark a scalar field as typed
                field.type_name = field.type_name.replace(old, new, 1)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new, 1)
            method.output_type = method.output_type.replace(old, new, 1)
    return file


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)  # already there: a second server in this process, or a library
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor().SerializeToString())


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and both reflection services."""
    _register_v1_descriptor(descriptor_pool.Default())
    names = (*service_names, V1_SERVICE, V1ALPHA_SERVICE)
    servicer = reflection.aio.ReflectionServicer(names)
    v1_info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    v1 = grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1_info})
    server.add_generic_rpc_handlers((v1,))
    reflection.enable_server_reflection(names, server)
