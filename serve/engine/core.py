"""The one inference core behind both APIs: validate, tokenize, batch, run, label.

Transports hand it lists of texts and get a :class:`Scored` result back (the predictions
and the model version that produced them), or a domain error from :mod:`serve.ops.errors`.
Tokenization happens in the batcher's worker thread, for a whole coalesced batch at once
(``encode_batch_fast``), never on the event loop.

The served model is one immutable :class:`LoadedModel`, replaced as a whole by
:meth:`InferenceCore.switch` (hot reload). A request is bound to the model that is serving
when it is admitted, and is scored entirely by it: a switch never mixes versions inside one
answer, and an old model's session is freed once no queued or running request holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from runtime.preprocessing import (
    NOTHING_TO_READ,
    Vocabulary,
    encode_for_model,
    nothing_to_read,
    pad_batch,
    quick_readability,
    text_problem,
)
from runtime.repository import ModelVersion, RepositoryError, load_version, rows_per_run, shown
from runtime.run_cost import DEFAULT_RUN_COST, RunCost
from runtime.session import ModelRunner, load_runner, thread_plan
from serve.engine.batcher import Batcher, BatchObserver
from serve.engine.grouping import length_groups
from serve.engine.scheduler import StepRecord
from serve.engine.statistics import InferenceStatistics
from serve.engine.step_engine import PreparedSteps, StepBatching, prepare_steps
from serve.ops.errors import InvalidInput, ModelNotFound, ModelNotReady
from serve.ops.settings import Settings

log = logging.getLogger("serve.core")
# Scored end to end (tokenizer, graph, labels) before a version may serve: catches graphs
# that load but answer NaN or out-of-range values.
PROBE_TEXTS = ("A wonderful, moving film.", "A dull and boring mess.")


@dataclass(frozen=True)
class Prediction:
    """One text's score, and the share of its words the model's vocabulary knew whole (see
    :meth:`runtime.preprocessing.Vocabulary.known_word_fraction`)."""

    label: str
    probability: float
    known_word_fraction: float = 1.0


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A verified, opened and warmed model version; never changed once built (the core swaps whole objects)."""

    runner: ModelRunner
    tokenizer: Tokenizer
    vocabulary: Vocabulary
    load_seconds: float
    run_cost: RunCost = DEFAULT_RUN_COST  # how batches are split into runs (measured at warm-up)
    steps: PreparedSteps | None = None  # --batching steps with a step graph: serve/engine/step_engine.py

    @property
    def model(self) -> ModelVersion:
        return self.runner.model


@dataclass(frozen=True)
class Scored:
    """One request's predictions (in the order of its texts) and the model version that produced all of them."""

    model: ModelVersion
    predictions: list[Prediction]


class CoreObserver(BatchObserver, Protocol):
    """The batcher's and the step scheduler's measurements plus the core's own (padding, model load)."""

    def step_done(self, record: StepRecord) -> None: ...

    def padding(self, real_tokens: int, padded_tokens: int) -> None: ...

    def model_loaded(self, model: ModelVersion, precision: str, device: str, seconds: float) -> None: ...


@dataclass
class PhaseTimes:
    """Seconds one batch spent preparing inputs (tokenize, pad), in model runs, and labelling."""

    input: float = 0.0
    infer: float = 0.0
    output: float = 0.0


class _BatchObservers:
    """The batcher's (and step scheduler's) one observer: the core's statistics, then the outside observer."""

    def __init__(self, statistics: InferenceStatistics, observer: CoreObserver | None) -> None:
        self._statistics = statistics
        self._observer = observer

    def queue_depth(self, units: int) -> None:
        if self._observer is not None:
            self._observer.queue_depth(units)

    def batch_done(self, units: int, queue_seconds: Sequence[float], compute_seconds: float,
                   cpu_seconds: float) -> None:
        self._statistics.queued(queue_seconds)
        if self._observer is not None:
            self._observer.batch_done(units, queue_seconds, compute_seconds, cpu_seconds)

    def step_done(self, record: StepRecord) -> None:
        self._statistics.queued(record.queue_seconds)
        self._statistics.batch_done(record.rows, record.requests, record.encode_seconds, record.seconds, 0.0)
        if self._observer is not None:
            self._observer.step_done(record)


def label(model: ModelVersion, probabilities: Sequence[float] | np.ndarray,
          known: Sequence[float]) -> list[Prediction]:
    """One :class:`Prediction` per P(positive), labelled by the version's threshold, with each
    text's known-word fraction (``known``, aligned with ``probabilities``)."""
    negative, positive = model.labels
    threshold = model.threshold
    return [Prediction(positive if p >= threshold else negative, float(p), k)
            for p, k in zip(probabilities, known, strict=True)]


def length_chunks(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of ``texts`` sorted by length (characters, a proxy for tokens), cut into chunks of ``size``."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    return [order[start:start + size] for start in range(0, len(order), size)]


def mean_length(request: tuple[LoadedModel, list[str]]) -> float:
    """A request's mean text length in characters: the batcher groups similar lengths (tokens follow characters)."""
    texts = request[1]
    return sum(map(len, texts)) / len(texts)


class InferenceCore:
    """Owns the served model and the batcher; ``predict`` is the one entry point."""

    def __init__(self, settings: Settings, observer: CoreObserver | None = None) -> None:
        self.settings = settings
        self._observer = observer
        self.statistics = InferenceStatistics()  # Triton-style totals for the served version
        self._loaded: LoadedModel | None = None
        self._batcher: Batcher[tuple[LoadedModel, list[str]], Scored] | None = None
        self.ready = False
        # int8 runs each text alone, as --local and --ray do (runtime.repository.rows_per_run):
        # batching never changes a result (coalescing still saves the thread hops).
        self._rows_per_run = rows_per_run(settings.precision, min(settings.max_rows_per_run, settings.max_batch_size))
        # Half a model run: chunks of a large request pair up with like-length chunks in a batch.
        self._chunk_size = max(1, min(settings.max_batch_size, settings.max_rows_per_run // 2))
        self._observers = _BatchObservers(self.statistics, observer)
        self._steps = StepBatching(settings, self._observers) if settings.batching == "steps" else None

    @property
    def loaded(self) -> LoadedModel:
        """The model serving now (:class:`ModelNotReady` before loading)."""
        if self._loaded is None:
            raise ModelNotReady("the model is still loading")
        return self._loaded

    @property
    def step_batching(self) -> StepBatching | None:
        """The step schedulers (``--batching steps``), or None on the whole-sequence path."""
        return self._steps

    @property
    def model(self) -> ModelVersion:
        """The served model version (:class:`ModelNotReady` before loading)."""
        return self.loaded.model

    async def load(self) -> None:
        """Load, verify and warm the configured version in a worker thread, then start taking requests."""
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(None, self.open_version, self.settings.version_number)
        workers, intra_op_threads = thread_plan(self.settings)
        self._batcher = Batcher(self._score_batch, max_batch_size=self.settings.max_batch_size,
                                max_queue_size=self.settings.max_queue_size,
                                max_delay_s=self.settings.max_queue_delay_ms / 1000, max_concurrent=workers,
                                observer=self._observers,
                                key=mean_length)
        self._install(loaded)
        self.ready = True
        log.info("model ready", extra={"model": loaded.model.name, "version": loaded.model.version,
                                       "precision": self.settings.precision, "device": loaded.runner.device,
                                       "batching": "steps" if loaded.steps is not None else "whole",
                                       "workers": workers, "intra_op_threads": intra_op_threads,
                                       "load_s": round(loaded.load_seconds, 3),
                                       "run_cost_us": {k: round(v * 1e6, 2) for k, v in
                                                       dataclasses.asdict(loaded.run_cost).items()}})

    def open_version(self, version: int | None) -> LoadedModel:
        """Blocking (run it in a worker thread): verify, open, warm and probe ``version`` (None: the highest).

        Raises :class:`~runtime.repository.RepositoryError` or
        :class:`~runtime.errors.ConfigurationError` naming what is wrong; nothing is served yet.
        """
        started = time.perf_counter()
        s = self.settings
        model = load_version(s.model_repository, s.model, version)
        runner = load_runner(model, s)
        tokenizer = model.load_tokenizer()
        run_cost = DEFAULT_RUN_COST
        if s.warmup:
            runner.warm_up(s.max_batch_size)
            run_cost = runner.measure_run_cost(self._rows_per_run)
        loaded = LoadedModel(runner, tokenizer, Vocabulary.of(tokenizer, model.unk_id),
                             time.perf_counter() - started, run_cost)
        probabilities = [p.probability for p in self._score_texts(loaded, list(PROBE_TEXTS), observe=False)]
        if not all(0.0 <= p <= 1.0 for p in probabilities):  # NaN fails both comparisons
            raise RepositoryError(f"{shown(model.model_path(s.precision))}: the graph answers {probabilities} for the "
                                  "probe texts; a probability must lie in [0, 1]")
        if s.batching == "steps":  # serve/engine/step_engine.py
            loaded = dataclasses.replace(loaded, steps=prepare_steps(model, s, runner, tokenizer, PROBE_TEXTS))
        return dataclasses.replace(loaded, load_seconds=time.perf_counter() - started)

    def switch(self, loaded: LoadedModel) -> LoadedModel:
        """Serve ``loaded`` from now on (one reference assignment); returns the model it replaces.

        Call it on the event loop: requests admitted before keep their model, later ones get
        ``loaded``. Refused once the core is shutting down.
        """
        previous = self.loaded
        if not self.ready:
            raise ModelNotReady("the server is shutting down")
        self._install(loaded)
        return previous

    def _install(self, loaded: LoadedModel) -> None:
        self._loaded = loaded
        if self._steps is not None:
            self._steps.serve(loaded)
        self.statistics.reset()
        if self._observer is not None:
            self._observer.model_loaded(loaded.model, self.settings.precision, loaded.runner.device,
                                        loaded.load_seconds)

    async def close(self) -> None:
        """Refuse new work; let queued and running batches finish."""
        self.ready = False
        if self._batcher is not None:
            await self._batcher.close()
        if self._steps is not None:
            await self._steps.close()

    def check_model(self, name: str, version: str = "") -> ModelVersion:
        """The served model if ``name``/``version`` designate it ('' means the served version)."""
        model = self.model
        if name != model.name:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {model.name!r}")
        if version not in ("", str(model.version)):
            raise ModelNotFound(f"model {name!r} has no version {version!r} here; served version: {model.version}")
        return model

    def validate(self, texts: Sequence[str], field: str = "texts") -> tuple[list[str], list[int]]:
        """Enforce the documented limits (cheap checks, on the loop); returns the texts as a
        list and the indices of those that start with markup, which only the tokenizer can
        tell readable or not (:meth:`refuse_unreadable`)."""
        limit = self.settings.max_texts_per_request
        if not texts:
            raise InvalidInput(f"{field} is empty: send at least one text")
        if len(texts) > limit:
            raise InvalidInput(f"{field} has {len(texts)} texts; at most {limit} per request")
        max_chars = self.settings.max_chars_per_text
        doubtful = []
        for i, text in enumerate(texts):
            problem = text_problem(text, max_chars)
            readable = quick_readability(text) if problem is None else True
            if problem is None and readable is False:
                problem = NOTHING_TO_READ
            if problem is not None:
                raise InvalidInput(f"{self._where(field, len(texts), i)} {problem}")
            if readable is None:
                doubtful.append(i)
        return list(texts), doubtful

    @staticmethod
    def _where(field: str, count: int, index: int) -> str:
        return field if count == 1 else f"{field}[{index}]"

    async def refuse_unreadable(self, texts: list[str], doubtful: list[int], field: str) -> None:
        """Tokenize the ``doubtful`` texts (off the loop) and refuse the request if one has nothing to read."""
        if not doubtful:
            return
        tokenizer = self.loaded.tokenizer
        empty = await asyncio.get_running_loop().run_in_executor(
            None, lambda: [i for i in doubtful if nothing_to_read(tokenizer, texts[i])])
        if empty:
            raise InvalidInput(f"{self._where(field, len(texts), empty[0])} {NOTHING_TO_READ}")

    async def predict(self, texts: Sequence[str], deadline: float | None = None, field: str = "texts") -> Scored:
        """Score ``texts`` (validated here) with the model serving now; ``deadline`` is a time.monotonic() instant."""
        started = time.perf_counter()
        try:
            scored = await self._predict(texts, deadline, field)
        except BaseException:  # refused, failed or cancelled: all count as failures
            self.statistics.request_done(False, time.perf_counter() - started)
            raise
        self.statistics.request_done(True, time.perf_counter() - started)
        return scored

    async def _predict(self, texts: Sequence[str], deadline: float | None, field: str) -> Scored:
        if not self.ready or self._batcher is None:
            raise ModelNotReady("the model is not loaded and warm yet" if self._loaded is None
                                else "the server is shutting down")
        batch, doubtful = self.validate(texts, field)
        await self.refuse_unreadable(batch, doubtful, field)
        loaded = self.loaded
        if self._steps is not None and loaded.steps is not None:
            probabilities, known = await self._steps.submit(loaded, batch, deadline)
            return Scored(loaded.model, label(loaded.model, probabilities, known))
        if len(batch) <= self.settings.max_batch_size:
            return await self._batcher.submit((loaded, batch), len(batch), deadline)
        # A request larger than a batch is shared out among the workers in small chunks of
        # similar length, which the batcher combines with chunks of like length from other
        # requests: fewer padding tokens than big chunks (4% against 9% at 32 x 32 texts).
        chunks = length_chunks(batch, self._chunk_size)
        parts = await self._batcher.submit_all([((loaded, [batch[i] for i in rows]), len(rows)) for rows in chunks],
                                               deadline)
        predictions: list[Prediction] = [None] * len(batch)  # type: ignore[list-item]  # all filled below
        for rows, part in zip(chunks, parts, strict=True):
            for row, prediction in zip(rows, part.predictions, strict=True):
                predictions[row] = prediction
        return Scored(loaded.model, predictions)

    def _score_batch(self, requests: list[tuple[LoadedModel, list[str]]]) -> list[Scored]:
        """Worker thread: score each request with the model it was admitted under (one pass per model)."""
        out: list[Scored] = []
        phases = PhaseTimes()
        # Only a batch that straddles a switch holds two models; it gets two passes.
        for loaded, group in itertools.groupby(requests, key=lambda request: request[0]):
            texts_of = [texts for _, texts in group]
            predictions = self._score_texts(loaded, [text for texts in texts_of for text in texts], phases=phases)
            start = 0
            for texts in texts_of:
                out.append(Scored(loaded.model, predictions[start:start + len(texts)]))
                start += len(texts)
        self.statistics.batch_done(sum(len(texts) for _, texts in requests), len(requests), phases.input,
                                   phases.infer, phases.output)
        return out

    def _score_texts(self, loaded: LoadedModel, texts: list[str], observe: bool = True,
                     phases: PhaseTimes | None = None) -> list[Prediction]:
        """Tokenize ``texts`` together, run them by length groups, label them.

        ``observe``: record padding; ``phases``: add the time of each phase to it.
        """
        model = loaded.model
        clock = time.perf_counter
        began = clock()
        inputs = encode_for_model(loaded.tokenizer, loaded.vocabulary, texts, model.max_tokens, model.head_tokens)
        if None in inputs:  # validate() and refuse_unreadable() let no such text through
            raise RuntimeError(f"text {inputs.index(None)} of the batch has nothing to read but was admitted")
        ids = [x.ids for x in inputs]  # type: ignore[union-attr]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        probabilities = np.empty(len(ids), dtype=np.float32)
        running = 0.0
        for group in length_groups(lengths, self._rows_per_run, loaded.run_cost):
            input_ids, group_lengths = pad_batch([ids[i] for i in group], model.pad_id)
            run_began = clock()
            probabilities[group] = loaded.runner.run(input_ids, group_lengths)
            running += clock() - run_began
            if observe and self._observer is not None:
                self._observer.padding(int(group_lengths.sum()), input_ids.size)
        labelling = clock()
        predictions = label(model, probabilities, [x.known_word_fraction for x in inputs])  # type: ignore[union-attr]
        if phases is not None:
            phases.input += labelling - began - running
            phases.infer += running
            phases.output += clock() - labelling
        return predictions
