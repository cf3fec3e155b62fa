"""``inference.GRPCInferenceService`` (KServe v2 / Open Inference Protocol) over the inference core."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from importlib import metadata

import grpc

from protos.inference import grpc_predict_v2_pb2 as pb
from protos.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from runtime.session import thread_plan
from serve.engine.core import InferenceCore
from serve.grpc import kserve_codec as codec
from serve.grpc import kserve_extensions as extensions
from serve.grpc.streaming import answer_stream
from serve.ops.edge import deadline_of
from serve.ops.errors import InvalidInput, ServingError

SERVER_NAME = "imdb-sentiment-edge"


def _server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Health, metadata, inference, configuration and statistics for the one served model."""

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
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._version,
                                         extensions=list(extensions.EXTENSIONS))

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
        return await self.infer(request, deadline_of(context))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's streaming inference: a failed request is answered with its error and the stream goes on."""
        deadline = deadline_of(context)

        async def answer(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            try:
                return pb.ModelStreamInferResponse(infer_response=await self.infer(request, deadline))
            except ServingError as exc:
                return pb.ModelStreamInferResponse(error_message=f"request id={request.id!r}: {exc}")

        async for response in answer_stream(request_iterator, answer, self._core.settings.stream_window):
            yield response

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
                          ) -> pb.ModelConfigResponse:
        model = self._core.check_model(request.name, request.version)
        settings = self._core.settings
        return pb.ModelConfigResponse(config=extensions.model_config(
            model.name, model.model_path(settings.precision).name, self._core.loaded.runner.device,
            thread_plan(settings)[0], settings.max_queue_delay_ms))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
                              ) -> pb.ModelStatisticsResponse:
        if request.name:
            model = self._core.check_model(request.name, request.version)
        elif request.version:
            raise InvalidInput(f"version {request.version!r} given without a model name; name the model too")
        else:
            model = self._core.model
        return pb.ModelStatisticsResponse(model_stats=[
            extensions.model_statistics(model.name, model.version, self._core.statistics.snapshot())])

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
                              ) -> pb.RepositoryIndexResponse:
        model = self._core.model if self._core.ready else None
        return pb.RepositoryIndexResponse(models=extensions.repository_index(
            self._core.settings.model_repository, (model.name, model.version) if model else None, request.ready))

    async def infer(self, request: pb.ModelInferRequest, deadline: float | None) -> pb.ModelInferResponse:
        """Validate and score one ModelInferRequest (from the gRPC port or, converted, the HTTP port)."""
        if not request.model_name:
            raise InvalidInput("model_name is required")
        # Checked and admitted with no await in between: a reload (which switches on this loop)
        # cannot slip between the version check and the request being bound to that version.
        self._core.check_model(request.model_name, request.model_version)
        codec.refuse_unsupported_parameters(request)
        texts, raw = codec.texts_from_request(request, self._core.settings.max_texts_per_request)
        outputs = codec.requested_outputs(request)
        timeout_s = codec.request_timeout_s(request)
        if timeout_s is not None:  # Triton's server-side timeout: whichever ends first, it or the client's deadline
            deadline = min(time.monotonic() + timeout_s, deadline or float("inf"))
        scored = await self._core.predict(texts, deadline, field=f"input {codec.INPUT!r}")
        return codec.build_response(request, scored.model.name, scored.model.version, outputs, scored.predictions,
                                    raw)
