"""``inference.GRPCInferenceService`` (KServe v2 / Open Inference Protocol) over the inference core."""

from __future__ import annotations

from importlib import metadata

import grpc

from protos.inference import grpc_predict_v2_pb2 as pb
from protos.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from serve import kserve_codec as codec
from serve.core import InferenceCore
from serve.edge import deadline_of
from serve.errors import InvalidInput

SERVER_NAME = "imdb-sentiment-edge"


def _server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Health, metadata and inference for the one served model."""

    def __init__(self, core: InferenceCore) -> None:
        self._core = core
        self._version = _server_version()

    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._core.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelReadyResponse:
        if not self._core.ready:
            return pb.ModelReadyResponse(ready=False)
        self._core.check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
                             ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=[])

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
                            ) -> pb.ModelMetadataResponse:
        model = self._core.check_model(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.name, versions=[str(model.version)], platform="onnxruntime_onnx",
            inputs=[tensor(name=codec.INPUT, datatype="BYTES", shape=[-1])],
            outputs=[tensor(name=name, datatype=datatype, shape=[-1]) for name, datatype in codec.OUTPUTS.items()])

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelInferResponse:
        if not request.model_name:
            raise InvalidInput("model_name is required")
        # Checked and admitted with no await in between: a reload (which switches on this loop)
        # cannot slip between the version check and the request being bound to that version.
        self._core.check_model(request.model_name, request.model_version)
        texts, raw = codec.texts_from_request(request, self._core.settings.max_texts_per_request)
        outputs = codec.requested_outputs(request)
        scored = await self._core.predict(texts, deadline_of(context), field=f"input {codec.INPUT!r}")
        return codec.build_response(request, scored.model.name, scored.model.version, outputs, scored.predictions,
                                    raw)
