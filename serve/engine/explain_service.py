"""Explain requests on the server: admission, limits, and where their model work runs.

An explanation is a set of row plans (runtime/explain.py, runtime/row_plan.py) on the
version's step graph; it reads the review about ``sentences / 2 + 1`` times. Where it runs:

* ``--batching steps`` (the version is served by a step scheduler): its rows join **the same
  scheduler as the predictions**, taking turns with them row by row (round robin, at most
  the per-request share of places), so an explanation never holds a prediction up for more
  than a step, and its rows fill steps the predictions leave partly empty. At most
  ``--explain-workers + --max-explain-queue`` explanations are in progress at once; beyond
  that Explain answers RESOURCE_EXHAUSTED at once.
* ``--batching whole``: there is no step scheduler; explanations run on their own
  ``--explain-workers`` threads, one at a time each, behind a queue of ``--max-explain-queue``
  (a :class:`~serve.engine.batcher.Batcher` of one request per batch), on a step graph opened
  on first use with the whole graph's session options and checked against it on the probe
  texts (1e-5) as the core checks its own.

Either way a request is validated by the core exactly as Predict validates a text (same
errors), bound to the version serving when it is admitted, and limited to
``--max-explain-sentences`` read sentences (the cost grows with them). A version exported
without a step graph answers :class:`~serve.ops.errors.ExplainUnavailable` (FAILED_PRECONDITION), and so
does a server started with ``--precision int8``: the step graph is fp32, and an explanation whose
probability differed from the same server's prediction would break "one text, one answer".
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from runtime.explain import ExplainJob, Explanation, TooManySentences, explain_ids, prepare_explanation
from runtime.preprocessing import encode_texts, encode_with_offsets
from runtime.repository import ModelVersion, RepositoryError
from runtime.sentences import split_sentences
from runtime.session import providers_for, session_options
from runtime.step_runner import StepRunner, open_step_runner
from serve.engine.batcher import Batcher
from serve.engine.core import PROBE_TEXTS, InferenceCore, LoadedModel
from serve.engine.step_engine import check_agreement
from serve.ops.errors import ExplainUnavailable, InvalidInput, ModelNotReady, Overloaded
from serve.ops.settings import Settings

log = logging.getLogger("serve.engine.explain_service")


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
        self._in_steps = 0  # explanations in progress on the step scheduler
        if settings.precision != "fp32":
            log.warning("Explain is unavailable on this server",
                        extra={"reason": precision_message(settings.precision)})

    async def explain(self, text: str, per_token: bool = False, deadline: float | None = None) -> Explained:
        """Explain ``text`` with the version serving now; ``deadline`` is a time.monotonic() instant.

        Raises the core's errors for bad input (:class:`InvalidInput`), :class:`ModelNotReady`,
        :class:`ExplainUnavailable` (no step graph, or a server not serving fp32), :class:`Overloaded` (queue full) and
        :class:`DeadlineExpired`.
        """
        if not self._core.ready:
            raise ModelNotReady("the model is not loaded and warm yet")
        texts, doubtful = self._core.validate([text], field="text")
        await self._core.refuse_unreadable(texts, doubtful, "text")  # nothing to read: refused like Predict
        (text,) = texts
        loaded = self._core.loaded
        if self._settings.precision != "fp32":
            raise ExplainUnavailable(precision_message(self._settings.precision))
        if loaded.model.metadata.get("steps") is None:
            raise ExplainUnavailable(unavailable_message(loaded.model))
        steps = self._core.step_batching
        if steps is not None and steps.serves_steps(loaded):
            return await self._explain_on_steps(loaded, text, per_token, deadline)
        return await self._batcher.submit(_Request(loaded, text, per_token), 1, deadline)

    async def _explain_on_steps(self, loaded: LoadedModel, text: str, per_token: bool,
                                deadline: float | None) -> Explained:
        """Prepare the plans in a worker thread, run them on the predictions' step scheduler, assemble."""
        steps = self._core.step_batching
        assert steps is not None
        capacity = self._settings.explain_workers + self._settings.max_explain_queue
        if self._in_steps >= capacity:
            raise Overloaded(f"{self._in_steps} explanations in progress (at most {capacity}: --explain-workers + "
                             "--max-explain-queue); retry with backoff")
        self._in_steps += 1
        try:
            results, job = await steps.submit_plans(loaded, lambda: self._prepare(loaded, text, per_token), deadline)
        finally:
            self._in_steps -= 1
        return Explained(loaded.model, text, job.finish(results))

    def _prepare(self, loaded: LoadedModel, text: str, per_token: bool) -> tuple[tuple, int, ExplainJob]:
        """Worker thread: tokenize with offsets, split sentences, build the row plans (InvalidInput: too many)."""
        model = loaded.model
        ids, offsets = encode_with_offsets(loaded.tokenizer, text)
        try:
            job = prepare_explanation(ids, offsets, split_sentences(text), max_tokens=model.max_tokens,
                                      head_tokens=model.head_tokens, unk_id=model.unk_id, per_token=per_token,
                                      max_sentences=self._settings.max_explain_sentences)
        except TooManySentences as exc:
            raise too_many(exc) from exc
        return job.roots, job.slots, job

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
            raise too_many(exc) from exc
        return Explained(model, request.text, explanation)


def too_many(exc: TooManySentences) -> InvalidInput:
    """The INVALID_ARGUMENT for a review with more read sentences than --max-explain-sentences."""
    return InvalidInput(f"text: {exc} per review (server flag --max-explain-sentences); send a shorter excerpt")


def precision_message(precision: str) -> str:
    """Why a server serving ``precision`` (not fp32) does not explain, and what to do about it."""
    return (f"this server serves --precision {precision}; Explain reads the fp32 step graph, so its numbers would "
            f"differ from this server's {precision} predictions (one text, one answer); ask a server started with "
            "--precision fp32 (the default) for explanations; Predict works here")


def unavailable_message(model: ModelVersion) -> str:
    """Why ``model`` cannot explain, and what to do about it."""
    return (f"model {model.name!r} version {model.version} was exported without a step graph, which Explain "
            "needs; serve a version exported with one (python -m export writes step.onnx and head.onnx, "
            "docs/model-repository.md); Predict works on this version")
