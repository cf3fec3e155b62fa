"""``sentiment.v1.SentimentService``: protobuf <-> the inference core, nothing more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc

from protos.sentiment.v1 import sentiment_pb2 as pb
from protos.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from serve.engine.core import InferenceCore, Prediction, Scored
from serve.engine.explain_service import Explained, ExplainService
from serve.grpc.streaming import answer_stream
from serve.ops.edge import deadline_of
from serve.ops.errors import ServingError


def _predictions(predictions: Sequence[Prediction]) -> list[pb.Prediction]:
    return [pb.Prediction(label=p.label, probability=p.probability, known_word_fraction=p.known_word_fraction)
            for p in predictions]


def _model_ref(scored: Scored) -> pb.ModelRef:
    """The version that scored these texts (not the one serving now: a reload may have switched since)."""
    return pb.ModelRef(name=scored.model.name, version=scored.model.version)


class SentimentServicer(pb_grpc.SentimentServiceServicer):
    """Predict, PredictBatch, PredictStream and GetLimits over one :class:`InferenceCore`; Explain
    over an :class:`ExplainService`."""

    def __init__(self, core: InferenceCore, stream_window: int, explainer: ExplainService) -> None:
        self._core = core
        self._stream_window = stream_window
        self._explainer = explainer

    async def Predict(self, request: pb.PredictRequest, context: grpc.aio.ServicerContext) -> pb.PredictResponse:
        scored = await self._core.predict([request.text], deadline_of(context), field="text")
        return pb.PredictResponse(prediction=_predictions(scored.predictions)[0], model=_model_ref(scored))

    async def PredictBatch(self, request: pb.PredictBatchRequest,
                           context: grpc.aio.ServicerContext) -> pb.PredictBatchResponse:
        scored = await self._core.predict(request.texts, deadline_of(context), field="texts")
        return pb.PredictBatchResponse(predictions=_predictions(scored.predictions), model=_model_ref(scored))

    async def GetLimits(self, request: pb.GetLimitsRequest, context: grpc.aio.ServicerContext) -> pb.Limits:
        settings = self._core.settings
        return pb.Limits(max_message_bytes=settings.max_message_bytes,
                         max_texts_per_request=settings.max_texts_per_request,
                         max_chars_per_text=settings.max_chars_per_text)

    async def PredictStream(self, request_iterator: AsyncIterator[pb.PredictStreamRequest],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[pb.PredictStreamResponse]:
        """Score up to ``stream_window`` requests at once; answer each as soon as it is scored.

        A client that stops reading stops the server from reading further requests
        (:func:`serve.grpc.streaming.answer_stream`). An error ends the stream, naming the request.
        """
        deadline = deadline_of(context)

        async def answer(message: pb.PredictStreamRequest) -> pb.PredictStreamResponse:
            try:
                scored = await self._core.predict(message.texts, deadline)
            except ServingError as exc:
                raise type(exc)(f"request id={message.id!r}: {exc}") from exc
            return pb.PredictStreamResponse(id=message.id, predictions=_predictions(scored.predictions),
                                            model=_model_ref(scored))

        async for response in answer_stream(request_iterator, answer, self._stream_window):
            yield response

    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        explained = await self._explainer.explain(request.text, request.per_token, deadline_of(context))
        return explain_response(explained)


def explain_response(explained: Explained) -> pb.ExplainResponse:
    """An :class:`Explained` as the sentiment.v1 message (None fields left unset)."""
    e, text, model = explained.explanation, explained.text, explained.model
    negative, positive = model.labels
    label = positive if e.probability >= model.threshold else negative
    sentences = [pb.SentenceExplanation(text=text[s.start:s.end], start=s.start, end=s.end, tokens=s.tokens,
                                        tokens_read=s.tokens_read, running_probability=s.running_probability,
                                        swing=s.swing, effect=s.effect) for s in e.sentences]
    steps = [pb.TokenExplanation(start=t.start, end=t.end, sentence=t.sentence,
                                 running_probability=t.running_probability) for t in e.token_steps]
    return pb.ExplainResponse(prediction=pb.Prediction(label=label, probability=e.probability),
                              model=pb.ModelRef(name=model.name, version=model.version), sentences=sentences,
                              turning_point=e.turning_point, most_decisive=e.most_decisive, tokens=e.tokens,
                              tokens_read=e.tokens_read, token_steps=steps)
