"""The one inference core behind both APIs: validate, tokenize, batch, run, label.

Transports hand it lists of texts and get :class:`Prediction` objects back, or a domain
error from :mod:`serve.errors`. Tokenization happens in the batcher's worker thread, for a
whole coalesced batch at once (``encode_batch``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from serve.batcher import Batcher, BatchObserver
from serve.errors import InvalidInput, ModelNotFound, ModelNotReady
from serve.preprocessing import encode_texts, pad_batch
from serve.repository import ModelVersion, load_version
from serve.runtime import ModelRunner, load_runner, thread_plan
from serve.settings import Settings

log = logging.getLogger("serve.core")
# Length grouping: a model run may carry at most this share of padding tokens, unless it
# would then hold fewer than MIN_GROUP_ROWS texts (a lone row costs about twice a row in a
# small run, measured on the shipped LSTM).
MAX_PADDING_FRACTION = 0.2
MIN_GROUP_ROWS = 2


@dataclass(frozen=True)
class Prediction:
    """One text's score."""

    label: str
    probability: float


class CoreObserver(BatchObserver, Protocol):
    """The batcher's measurements plus the core's own (padding, model load)."""

    def padding(self, real_tokens: int, padded_tokens: int) -> None: ...

    def model_loaded(self, model: ModelVersion, precision: str, device: str, seconds: float) -> None: ...


def length_groups(lengths: np.ndarray, max_rows: int) -> list[np.ndarray]:
    """Split row indices into model runs of similar length (few padding tokens), at most ``max_rows`` each."""
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start, total = 0, 0
    for end, row in enumerate(order):
        rows = end - start + 1
        total += int(lengths[row])
        padded = int(lengths[row]) * rows  # sorted ascending: this row is the longest so far
        too_padded = rows - 1 >= MIN_GROUP_ROWS and (padded - total) > MAX_PADDING_FRACTION * padded
        if rows > max_rows or too_padded:
            groups.append(order[start:end])
            start, total = end, int(lengths[row])
    groups.append(order[start:])
    return groups


class InferenceCore:
    """Owns the model, the tokenizer and the batcher; ``predict`` is the one entry point."""

    def __init__(self, settings: Settings, observer: CoreObserver | None = None) -> None:
        self.settings = settings
        self._observer = observer
        self.runner: ModelRunner | None = None
        self._tokenizer: Tokenizer | None = None
        self._batcher: Batcher[list[str], list[Prediction]] | None = None
        self.ready = False
        # Dynamic quantization (int8) scales activations by the whole input tensor, so a row's
        # result would depend on its batch-mates: int8 runs each text alone, keeping the promise
        # that batching never changes a result (coalescing still saves the thread hops).
        self._rows_per_run = min(settings.max_rows_per_run, settings.max_batch_size) if settings.precision == "fp32" \
            else 1

    @property
    def model(self) -> ModelVersion:
        """The loaded model version (:class:`ModelNotReady` before loading)."""
        if self.runner is None:
            raise ModelNotReady("the model is still loading")
        return self.runner.model

    async def load(self) -> None:
        """Load, verify and warm the model in a worker thread, then start taking requests."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        runner, tokenizer, warm_s = await loop.run_in_executor(None, self._load_blocking)
        self.runner, self._tokenizer = runner, tokenizer
        workers, intra_op_threads = thread_plan(self.settings)
        self._batcher = Batcher(self._score_batch, max_batch_size=self.settings.max_batch_size,
                                max_queue_size=self.settings.max_queue_size,
                                max_delay_s=self.settings.max_queue_delay_ms / 1000, max_concurrent=workers,
                                observer=self._observer)
        seconds = time.perf_counter() - started
        if self._observer is not None:
            self._observer.model_loaded(runner.model, self.settings.precision, runner.device, seconds)
        self.ready = True
        log.info("model ready", extra={"model": runner.model.name, "version": runner.model.version,
                                       "precision": self.settings.precision, "device": runner.device,
                                       "workers": workers, "intra_op_threads": intra_op_threads,
                                       "load_s": round(seconds, 3), "warmup_s": round(warm_s, 3)})

    def _load_blocking(self) -> tuple[ModelRunner, Tokenizer, float]:
        s = self.settings
        model = load_version(s.model_repository, s.model, s.version_number)
        runner = load_runner(model, s)
        tokenizer = model.load_tokenizer()
        warm_s = 0.0
        if s.warmup:
            warm_s = runner.warm_up(s.max_batch_size)
            tokenizer.encode_batch(["warm up the tokenizer"], add_special_tokens=False)
        return runner, tokenizer, warm_s

    async def close(self) -> None:
        """Refuse new work; let queued and running batches finish."""
        self.ready = False
        if self._batcher is not None:
            await self._batcher.close()

    def check_model(self, name: str, version: str = "") -> ModelVersion:
        """The loaded model if ``name``/``version`` designate it ('' means the served version)."""
        model = self.model
        if name != model.name:
            raise ModelNotFound(f"unknown model {name!r}; this server serves {model.name!r}")
        if version not in ("", str(model.version)):
            raise ModelNotFound(f"model {name!r} has no version {version!r} here; served version: {model.version}")
        return model

    def validate(self, texts: Sequence[str], field: str = "texts") -> list[str]:
        """Enforce the documented limits; returns the texts as a list."""
        limit = self.settings.max_texts_per_request
        if not texts:
            raise InvalidInput(f"{field} is empty: send at least one text")
        if len(texts) > limit:
            raise InvalidInput(f"{field} has {len(texts)} texts; at most {limit} per request")
        max_chars = self.settings.max_chars_per_text
        for i, text in enumerate(texts):
            where = field if len(texts) == 1 else f"{field}[{i}]"
            if not text or text.isspace():
                raise InvalidInput(f"{where} is empty: a review needs at least one non-space character")
            if len(text) > max_chars:
                raise InvalidInput(f"{where} has {len(text)} characters; at most {max_chars} accepted "
                                   "(the model reads only the first and last tokens of long reviews)")
        return list(texts)

    async def predict(self, texts: Sequence[str], deadline: float | None = None,
                      field: str = "texts") -> list[Prediction]:
        """Score ``texts`` (validated here); ``deadline`` is a time.monotonic() instant or None."""
        if not self.ready or self._batcher is None:
            raise ModelNotReady("the model is not loaded and warm yet" if self.runner is None
                                else "the server is shutting down")
        batch = self.validate(texts, field)
        return await self._batcher.submit(batch, len(batch), deadline)

    def _score_batch(self, requests: list[list[str]]) -> list[list[Prediction]]:
        """Worker thread: tokenize every text of the coalesced requests, run by length groups, label."""
        assert self.runner is not None and self._tokenizer is not None
        model = self.runner.model
        texts = [text for request in requests for text in request]
        ids = encode_texts(self._tokenizer, texts, model.max_tokens, model.head_tokens, model.unk_id)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        probabilities = np.empty(len(ids), dtype=np.float32)
        for group in length_groups(lengths, self._rows_per_run):
            input_ids, group_lengths = pad_batch([ids[i] for i in group], model.pad_id)
            probabilities[group] = self.runner.run(input_ids, group_lengths)
            if self._observer is not None:
                self._observer.padding(int(group_lengths.sum()), input_ids.size)
        negative, positive = model.labels
        threshold = model.threshold
        predictions = [Prediction(positive if p >= threshold else negative, float(p)) for p in probabilities]
        out, start = [], 0
        for request in requests:
            out.append(predictions[start:start + len(request)])
            start += len(request)
        return out
