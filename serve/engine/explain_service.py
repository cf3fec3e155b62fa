"""Explain requests on the server: admission, limits, their own worker threads, the step graph per version.

Explain is heavier than Predict (a review's explanation reads it about ``sentences / 2 + 1``
times), so it never shares the prediction queue: it has its own bounded queue and workers, a
:class:`~serve.engine.batcher.Batcher` of one request per batch (``--explain-workers``,
``--max-explain-queue``; a full queue answers RESOURCE_EXHAUSTED at once, like Predict's), and
its own limit, ``--max-explain-sentences`` read per review (the cost grows with them). A
request is validated by the core exactly as Predict validates a text (same errors), bound to
the version serving when it is admitted, and explained by that version's step graph: the one the core serves with under
``--batching steps``, else one opened on first use with the whole graph's session options
and checked against it on the probe texts (1e-5) as the core checks its own. A version
exported without a step graph answers :class:`~serve.ops.errors.ExplainUnavailable`
(FAILED_PRECONDITION).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from runtime.explain import Explanation, TooManySentences, explain_ids
from runtime.preprocessing import encode_texts, encode_with_offsets
from runtime.repository import ModelVersion, RepositoryError
from runtime.sentences import split_sentences
from runtime.session import providers_for, session_options
from runtime.step_runner import StepRunner, open_step_runner
from serve.engine.batcher import Batcher
from serve.engine.core import PROBE_TEXTS, InferenceCore, LoadedModel
from serve.engine.step_engine import check_agreement
from serve.ops.errors import ExplainUnavailable, InvalidInput, ModelNotReady
from serve.ops.settings import Settings


@dataclass(frozen=True)
class Explained:
    """An explanation, the text it explains and the model version that produced it."""

    model: ModelVersion
    text: str
    explanation: Explanation


@dataclass(frozen=True)
class _Request:
    loaded: LoadedModel
    text: str
    per_token: bool


class ExplainService:
    """``await explain(text)``: validated like Predict, queued apart from it, run on its own workers."""

    def __init__(self, core: InferenceCore, settings: Settings) -> None:
        self._core = core
        self._settings = settings
        self._batcher: Batcher[_Request, Explained] = Batcher(
            self._explain_batch, max_batch_size=1, max_queue_size=settings.max_explain_queue,
            max_concurrent=settings.explain_workers)
        self._lock = threading.Lock()
        self._runner: tuple[ModelVersion, StepRunner | None] | None = None  # the last version's, opened lazily

    async def explain(self, text: str, per_token: bool = False, deadline: float | None = None) -> Explained:
        """Explain ``text`` with the version serving now; ``deadline`` is a time.monotonic() instant.

        Raises the core's errors for bad input (:class:`InvalidInput`), :class:`ModelNotReady`,
        :class:`ExplainUnavailable` (no step graph), :class:`Overloaded` (queue full) and
        :class:`DeadlineExpired`.
        """
        if not self._core.ready:
            raise ModelNotReady("the model is not loaded and warm yet")
        texts, doubtful = self._core.validate([text], field="text")
        await self._core.refuse_unreadable(texts, doubtful, "text")  # nothing to read: refused like Predict
        (text,) = texts
        loaded = self._core.loaded
        if loaded.model.metadata.get("steps") is None:
            raise ExplainUnavailable(unavailable_message(loaded.model))
        return await self._batcher.submit(_Request(loaded, text, per_token), 1, deadline)

    async def close(self) -> None:
        """Refuse new requests; those being explained finish."""
        await self._batcher.close()

    def _step_runner(self, loaded: LoadedModel) -> StepRunner:
        """The step runner the core serves with (``--batching steps``), else one opened here once per version
        and checked against the whole graph as the core checks its own."""
        if loaded.steps is not None:
            return loaded.steps.runner
        model = loaded.model
        with self._lock:
            if self._runner is None or self._runner[0] is not model:
                options = session_options(self._settings)
                runner = open_step_runner(model, options, providers_for(self._settings))
                if runner is not None:
                    ids = encode_texts(loaded.tokenizer, list(PROBE_TEXTS), model.max_tokens, model.head_tokens,
                                       model.unk_id)
                    try:
                        check_agreement(runner, loaded.runner, ids, self._settings.step_tokens)
                    except RepositoryError as exc:
                        raise ExplainUnavailable(f"model {model.name!r} version {model.version}: {exc}") from exc
                self._runner = (model, runner)
            runner = self._runner[1]
        if runner is None:
            raise ExplainUnavailable(unavailable_message(model))
        return runner

    def _explain_batch(self, requests: list[_Request]) -> list[Explained]:
        """Worker thread: split, tokenize with offsets, run the step graph (one request per batch)."""
        return [self._explain_one(request) for request in requests]

    def _explain_one(self, request: _Request) -> Explained:
        model = request.loaded.model
        ids, offsets = encode_with_offsets(request.loaded.tokenizer, request.text)
        try:
            explanation = explain_ids(self._step_runner(request.loaded), ids, offsets, split_sentences(request.text),
                                      max_tokens=model.max_tokens, head_tokens=model.head_tokens, unk_id=model.unk_id,
                                      per_token=request.per_token, max_sentences=self._settings.max_explain_sentences)
        except TooManySentences as exc:
            raise InvalidInput(f"text: {exc} per review (server flag --max-explain-sentences); send a shorter "
                               "excerpt") from exc
        return Explained(model, request.text, explanation)


def unavailable_message(model: ModelVersion) -> str:
    """Why ``model`` cannot explain, and what to do about it."""
    return (f"model {model.name!r} version {model.version} was exported without a step graph, which Explain "
            "needs; serve a version exported with one (python -m export writes step.onnx and head.onnx, "
            "docs/model-repository.md); Predict works on this version")
