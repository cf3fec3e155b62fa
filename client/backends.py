"""Where scoring happens: in this process (ONNX Runtime) or on a server (gRPC).

Both take a list of texts and give back, in the same order, P(positive) as float32 and the
label. The local backend tokenizes with the model's own ``tokenizer.json`` through
:func:`runtime.preprocessing.encode_texts`, exactly as the server does, so both give identical
probabilities for identical input. ONNX Runtime is imported only when the local backend is
built, so the gRPC-only client needs none of it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from client.api import Security

# What a backend returns for a list of texts, in their order: P(positive) (float32), the
# label, per text either None or why it could not be scored (then its label is None), and
# the share of its words the model's vocabulary knew whole (None: refused, or not answered).
Scores = tuple[np.ndarray, list[str | None], list[str | None], list[float | None]]


@dataclass(frozen=True)
class LocalScores:
    """:meth:`LocalModel.score`'s answer, per text in input order: P(positive) float32 [N]
    (NaN when refused), the share of its words the vocabulary knew whole float32 [N] (NaN
    when refused), and None or why the text was refused (the server's words)."""

    probabilities: np.ndarray
    known_word_fractions: np.ndarray
    errors: list[str | None]


class Backend(Protocol):
    """Anything that scores texts: ``score(texts) -> (probabilities, labels, errors, known)``, order kept."""

    def describe(self) -> dict[str, Any]: ...

    def score(self, texts: Sequence[str]) -> Scores: ...

    def close(self) -> None: ...


# Texts tokenized per call: a tokenizers Encoding also holds token strings, offsets and
# masks, several times the size of the ids kept from it, so a whole chunk at once costs
# hundreds of MB for long reviews.
ENCODE_BATCH = 256


def available_cpus() -> int:
    """CPUs this process may run on (affinity, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split_model_path(path: str | Path) -> tuple[Path, str, int | None]:
    """``models/imdb-lstm`` -> (models, imdb-lstm, None); ``models/imdb-lstm/3`` -> (..., 3)."""
    path = Path(path)
    if path.name.isdigit():
        return path.parent.parent, path.parent.name, int(path.name)
    return path.parent, path.name, None


def session_options(threads: int) -> Any:
    """ORT options with explicit thread counts and no busy-waiting between runs.

    Spinning threads burn a core while idle; on a machine shared with other work that costs
    far more than the few microseconds spinning saves.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The CPU arena stays on: it keeps the largest batch's buffers (bounded by batch size x
    # max_tokens) and scores about 25% faster here than allocating per run.
    return options


class LocalModel:
    """A verified model version and one ONNX Runtime session: texts in, probabilities out.

    Shared by the local backend and the Ray actors (one instance per actor).
    """

    def __init__(self, model_path: str | Path, threads: int = 1, batch_size: int = 64,
                 precision: str = "fp32", max_chars: int | None = None) -> None:
        from runtime.preprocessing import MAX_CHARS_PER_TEXT, Vocabulary
        from runtime.repository import load_version, open_session, rows_per_run

        repository, name, version = split_model_path(model_path)
        self.model = load_version(repository, name, version)
        self.tokenizer = self.model.load_tokenizer()
        self.vocabulary = Vocabulary.of(self.tokenizer, self.model.unk_id)
        self.session = open_session(self.model, precision, session_options(threads))
        self.batch_size = batch_size
        self.rows_per_run = rows_per_run(precision, batch_size)  # int8: one text per run, as the server does
        self.precision = precision
        self.threads = threads
        self.max_chars = MAX_CHARS_PER_TEXT if max_chars is None else max_chars

    def score(self, texts: Sequence[str]) -> LocalScores:
        """Score ``texts`` with the server's rules: the same refusals (empty, over ``max_chars``,
        nothing to read after cleaning) and the same probability for every text.

        Texts are sorted by token count and run in that order, ``rows_per_run`` at a time, so
        each run pads to nearly its own length; an fp32 row's output does not depend on
        padding, and int8 rows run alone.
        """
        from runtime.preprocessing import NOTHING_TO_READ, encode_for_model, pad_batch, text_problem

        model = self.model
        errors: list[str | None] = [text_problem(text, self.max_chars) for text in texts]
        good = [i for i, error in enumerate(errors) if error is None]
        ids: dict[int, list[int]] = {}
        known = np.full(len(texts), np.nan, dtype=np.float32)
        for start in range(0, len(good), ENCODE_BATCH):
            rows = good[start:start + ENCODE_BATCH]
            encoded = encode_for_model(self.tokenizer, self.vocabulary, [texts[i] for i in rows], model.max_tokens,
                                       model.head_tokens)
            for i, x in zip(rows, encoded, strict=True):
                if x is None:
                    errors[i] = NOTHING_TO_READ
                else:
                    ids[i], known[i] = x.ids, x.known_word_fraction
        order = sorted(ids, key=lambda i: len(ids[i]))
        out = np.full(len(texts), np.nan, dtype=np.float32)
        for start in range(0, len(order), self.rows_per_run):
            rows = order[start:start + self.rows_per_run]
            input_ids, lengths = pad_batch([ids[i] for i in rows], model.pad_id)
            (probability,) = self.session.run(["probability"], {"input_ids": input_ids, "lengths": lengths})
            out[rows] = probability
        return LocalScores(out, known, [None if e is None else f"text {e}" for e in errors])

    def labels_for(self, probabilities: np.ndarray) -> list[str]:
        negative, positive = self.model.labels
        return [positive if p >= self.model.threshold else negative for p in probabilities.tolist()]


class LocalBackend:
    """ONNX Runtime in this process, from a model repository path (no server needed)."""

    def __init__(self, model_path: str | Path, threads: int | None = None, batch_size: int = 64,
                 precision: str = "fp32") -> None:
        self.local = LocalModel(model_path, threads or available_cpus(), batch_size, precision)

    @property
    def labels(self) -> tuple[str, str]:
        return self.local.model.labels

    def describe(self) -> dict[str, Any]:
        return {"backend": "local", "model": self.local.model.name, "version": self.local.model.version,
                "precision": self.local.precision, "threads": self.local.threads}

    def score(self, texts: Sequence[str]) -> Scores:
        scored = self.local.score(texts)
        labels = self.local.labels_for(scored.probabilities)
        return (scored.probabilities, [None if e else label for label, e in zip(labels, scored.errors, strict=True)],
                scored.errors, [None if e else k for k, e in zip(scored.known_word_fractions.tolist(), scored.errors,
                                                                 strict=True)])

    def close(self) -> None:
        """Nothing to release: the session goes with the object."""


class ServerBackend:
    """The gRPC server's PredictStream: requests of up to ``batch_size`` texts, ``concurrency`` in flight.

    Requests are also cut to the server's advertised limits (texts per request, message
    bytes; :mod:`client.sizing`), and a text over its characters-per-text limit is a bad row
    with the server's own words, without a round trip. Each call of :meth:`score` is one
    stream (a chunk of the input). Its deadline grows with the number of request waves it
    holds, so a large chunk is not cut short, while a stuck server still fails the call.
    UNAVAILABLE and RESOURCE_EXHAUSTED are retried with backoff, re-sending only the
    unanswered requests. ``security`` (a :class:`client.api.Security`) carries TLS files and
    the bearer token; ``credentials`` hand-built grpc channel credentials.
    """

    def __init__(self, target: str, batch_size: int = 64, concurrency: int = 8, timeout_s: float = 30.0,
                 credentials: Any = None, security: Security | None = None) -> None:
        from client.api import SentimentClient

        self.client = SentimentClient(target, credentials=credentials, security=security, timeout_s=timeout_s)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self._model: tuple[str, int] | None = None
        self._limits: Any = None

    def describe(self) -> dict[str, Any]:
        if self._model is None:
            # Ask once, so the state file can refuse to resume against another model.
            probe = self.client.predict("model probe")
            self._model = (probe.model, probe.version)
        return {"backend": "server", "target": self.client.target, "model": self._model[0],
                "version": self._model[1]}

    @property
    def limits(self) -> Any:
        """The server's :class:`client.api.ServerLimits`, asked once."""
        if self._limits is None:
            self._limits = self.client.limits()
        return self._limits

    @property
    def labels(self) -> tuple[str, str]:
        return "negative", "positive"  # fixed by sentiment.v1

    def score(self, texts: Sequence[str]) -> Scores:
        import grpc

        from client.sizing import plan_requests

        requests, errors = plan_requests(texts, self.limits, self.batch_size)
        batches = {str(i): [texts[row] for row in rows] for i, rows in enumerate(requests)}
        waves = max(1, math.ceil(len(batches) / self.concurrency))
        predictions: list[Any] = [None] * len(texts)
        try:
            results = self.client.score_stream(batches, window=self.concurrency, timeout_s=self.timeout_s * waves)
            for i, rows in enumerate(requests):
                answered = results[str(i)]
                if len(answered) != len(rows):
                    raise RuntimeError(f"server answered {len(answered)} predictions for {len(rows)} texts")
                for row, prediction in zip(rows, answered, strict=True):
                    predictions[row] = prediction
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            # A text the server refuses (say, one with nothing to read) ended the stream: score
            # request by request, then text by text, so only the refused texts go unscored.
            for rows in requests:
                answered, refused = self._one_by_one([texts[row] for row in rows])
                for row, prediction, error in zip(rows, answered, refused, strict=True):
                    predictions[row], errors[row] = prediction, error
        probabilities = np.array([np.nan if p is None else p.probability for p in predictions], dtype=np.float32)
        return (probabilities, [None if p is None else p.label for p in predictions], errors,
                [None if p is None else p.known_word_fraction for p in predictions])

    def explain(self, texts: Sequence[str]) -> list[dict[str, Any] | None]:
        """score --explain: per text, :func:`client.explain.explain_columns` of its Explain call (``concurrency``
        in flight), or None when the server refuses to explain it (INVALID_ARGUMENT: more sentences than its
        limit). Other errors (FAILED_PRECONDITION: the served model has no step graph) end the run."""
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        from client.explain import explain_columns

        def one(text: str) -> dict[str, Any] | None:
            try:
                return explain_columns(self.client.explain(text))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                return None

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, texts))

    def _one_by_one(self, batch: list[str]) -> tuple[list[Any], list[str | None]]:
        """One request's texts as one PredictBatch, or, if the server refuses it, text by text."""
        import grpc

        try:
            return self.client.predict_batch(batch), [None] * len(batch)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
        predictions: list[Any] = []
        errors: list[str | None] = []
        for text in batch:
            try:
                predictions.append(self.client.predict(text))
                errors.append(None)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                predictions.append(None)
                errors.append(f"server refused the text: {exc.details()}")
        return predictions, errors

    def close(self) -> None:
        self.client.close()
