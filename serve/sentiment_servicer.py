"""``sentiment.v1.SentimentService``: protobuf <-> the inference core, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.core import InferenceCore, Prediction, Scored
from serve.edge import deadline_of
from serve.errors import ServingError


def _predictions(predictions: Sequence[Prediction]) -> list[pb.Prediction]:
    return [pb.Prediction(label=p.label, probability=p.probability) for p in predictions]


def _model_ref(scored: Scored) -> pb.ModelRef:
    """The version that scored these texts (not the one serving now: a reload may have switched since)."""
    return pb.ModelRef(name=scored.model.name, version=scored.model.version)


class SentimentServicer(pb_grpc.SentimentServiceServicer):
    """Predict, PredictBatch and PredictStream over one :class:`InferenceCore`."""

    def __init__(self, core: InferenceCore, stream_window: int) -> None:
        self._core = core
        self._stream_window = stream_window

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        scored = await self._core.predict([request.text], deadline_of(context), field="text")
        return pb.PredictResponse(prediction=_predictions(scored.predictions)[0], model=_model_ref(scored))

    async def PredictBatch(self, request: pb.PredictBatchRequest,
                           context: grpc.aio.ServicerContext) -> pb.PredictBatchResponse:
        scored = await self._core.predict(request.texts, deadline_of(context), field="texts")
        return pb.PredictBatchResponse(predictions=_predictions(scored.predictions), model=_model_ref(scored))

    async def PredictStream(self, request_iterator: AsyncIterator[pb.PredictStreamRequest],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PredictStreamResponse]:
        """Score up to ``stream_window`` requests at once; answer each as soon as it is scored.

        A window slot is freed only when its response has been handed to gRPC, so a client
        that stops reading stops the server from reading (and scoring) further requests.
        """
        results: asyncio.Queue[pb.PredictStreamResponse | BaseException | None] = asyncio.Queue()
        window = asyncio.Semaphore(self._stream_window)
        deadline = deadline_of(context)
        tasks: set[asyncio.Task[None]] = set()
        started = 0

        async def score(message: pb.PredictStreamRequest) -> None:
            try:
                scored = await self._core.predict(message.texts, deadline)
                results.put_nowait(pb.PredictStreamResponse(id=message.id, predictions=_predictions(scored.predictions),
                                                            model=_model_ref(scored)))
            except ServingError as exc:
                results.put_nowait(type(exc)(f"request id={message.id!r}: {exc}"))
            except Exception as exc:
                results.put_nowait(exc)

        async def read() -> None:
            nonlocal started
            try:
                async for message in request_iterator:
                    await window.acquire()
                    started += 1
                    task = asyncio.ensure_future(score(message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            except Exception as exc:
                results.put_nowait(exc)
            finally:
                results.put_nowait(None)  # end of input

        reader = asyncio.ensure_future(read())
        finished, ended = 0, False
        try:
            while not (ended and finished == started):
                item = await results.get()
                if item is None:
                    ended = True
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
                    finished += 1
                    window.release()
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
