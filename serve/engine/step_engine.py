"""``--batching steps``: the inference core's step-level path, one :class:`StepScheduler` per served version.

:func:`load_step_runner` opens a version's step graph for serving (or says in one log line
why the version stays on the whole-sequence path); :class:`StepBatching` routes each request
to the scheduler of the model version it was admitted under. When a new version starts
serving, the previous version's scheduler finishes what it holds (drain) and stops, so a
hot reload never mixes versions inside one answer, as on the whole-sequence path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tokenizers import Tokenizer

from runtime.preprocessing import encode_texts, pad_batch
from runtime.repository import ModelVersion, RepositoryError
from runtime.run_cost import DEFAULT_RUN_COST, RunCost, fit_run_cost
from runtime.session import ModelRunner, providers_for, session_options, usable_cpus
from runtime.step_runner import StepRunner, open_step_runner
from serve.engine.scheduler import SchedulerObserver, StepPolicy, StepScheduler
from serve.ops.settings import Settings

log = logging.getLogger("serve.engine.step_engine")
AGREEMENT = 1e-5  # steps vs whole graph on the probe texts: the fp32 promise (one text, one answer)


def step_threads(settings: Settings) -> int:
    """ONNX Runtime threads of the one step loop: ``--intra-op-threads``, else every usable CPU.

    One loop runs every step, so a request alone gets all the threads, and under load the
    threads work on the full batch of rows.
    """
    return settings.intra_op_threads or usable_cpus()


def load_step_runner(model: ModelVersion, settings: Settings) -> StepRunner | None:
    """The version's step runner for ``--batching steps``, or None (logged once) when it cannot have one.

    int8 stays on the whole-sequence path: dynamic quantization scales activations by the
    whole input tensor, so a row's answer would depend on its batch-mates.
    """
    reason = None
    if settings.precision != "fp32":
        reason = f"--precision {settings.precision}: the step graph is fp32 only"
    runner = None
    if reason is None:
        options = session_options(dataclasses.replace(settings, workers=1, intra_op_threads=step_threads(settings)))
        runner = open_step_runner(model, options, providers_for(settings))
        if runner is None:
            reason = "the version has no step graph (metadata.json has no 'steps' section; re-export it)"
    if reason is not None:
        log.warning("--batching steps falls back to whole-sequence batching",
                    extra={"model": model.name, "version": model.version, "reason": reason})
    return runner


def check_agreement(steps: StepRunner, whole: ModelRunner, ids: Sequence[Sequence[int]], step_tokens: int) -> None:
    """Refuse a version whose step graph and whole graph disagree on ``ids`` (RepositoryError)."""
    input_ids, lengths = pad_batch(ids, whole.model.pad_id)
    gap = float(np.abs(steps.score(ids, step_tokens) - whole.run(input_ids, lengths)).max())
    if not gap <= AGREEMENT:  # NaN fails too
        raise RepositoryError(f"{steps.spec.step_path}: the step graph's probabilities differ from model.onnx's "
                              f"by {gap:.2e} on the probe texts (at most {AGREEMENT}); re-export the version")


@dataclass(frozen=True)
class PreparedSteps:
    """A version's step runner, checked and warmed, and the measured cost of its steps (for the step size)."""

    runner: StepRunner
    cost: RunCost = DEFAULT_RUN_COST


def prepare_steps(model: ModelVersion, settings: Settings, whole: ModelRunner,
                  tokenizer: Tokenizer, probe_texts: Sequence[str]) -> PreparedSteps | None:
    """Blocking: open, check against ``whole`` on ``probe_texts``, warm and measure the version's step graph.

    None (logged once) when the version stays on the whole path; raises
    :class:`~runtime.repository.RepositoryError` when its step graph disagrees with ``model.onnx``.
    """
    runner = load_step_runner(model, settings)
    if runner is None:
        return None
    ids = encode_texts(tokenizer, list(probe_texts), model.max_tokens, model.head_tokens, model.unk_id)
    check_agreement(runner, whole, ids, settings.step_tokens)
    if not settings.warmup:
        return PreparedSteps(runner)
    rows, k = settings.max_active_rows, settings.step_tokens
    for batch in sorted({1, min(8, rows), rows}):  # first runs allocate and pick kernels
        runner.head(runner.step(np.full((batch, k), model.unk_id, dtype=np.int64), np.full(batch, k, dtype=np.int64),
                                runner.initial_state(batch)), np.full(batch, k, dtype=np.int64))
    prepared = PreparedSteps(runner, measure_step_cost(runner, model.unk_id, min(rows, 16), k))
    log.info("step graph ready", extra={"model": model.name, "version": model.version, "step_tokens": k,
                                        "max_active_rows": rows, "step_threads": step_threads(settings),
                                        "step_cost_us": {f: round(getattr(prepared.cost, f) * 1e6, 2)
                                                         for f in ("per_run", "per_step", "per_row_step")}})
    return prepared


def measure_step_cost(runner: StepRunner, unk_id: int, rows: int, max_step_tokens: int,
                      repeats: int = 3) -> RunCost:
    """Fit a :class:`~runtime.run_cost.RunCost` to steps of 1 and ``rows`` rows (best of ``repeats``; a few ms)."""
    def best_time(batch: int, length: int) -> float:
        ids, lengths = np.full((batch, length), unk_id, dtype=np.int64), np.full(batch, length, dtype=np.int64)
        state = runner.initial_state(batch)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            runner.step(ids, lengths, state)
            times.append(time.perf_counter() - started)
        return min(times)

    return fit_run_cost(best_time, rows, max(1, max_step_tokens // 8), max_step_tokens)


class Servable(Protocol):
    """What the steps path reads of the core's loaded model (``serve.engine.core.LoadedModel`` is one)."""

    @property
    def model(self) -> ModelVersion: ...

    @property
    def steps(self) -> PreparedSteps | None: ...

    @property
    def tokenizer(self) -> Tokenizer: ...



class StepBatching:
    """Routes requests to the step scheduler of the model version they were admitted under."""

    def __init__(self, settings: Settings, observer: SchedulerObserver) -> None:
        self._settings = settings
        self._observer = observer
        self._schedulers: dict[Servable, StepScheduler[str]] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def serve(self, loaded: Servable) -> None:
        """On the loop: new requests are for ``loaded``; the schedulers of older versions drain and stop."""
        for old in [key for key in self._schedulers if key is not loaded]:
            task = asyncio.get_running_loop().create_task(self._schedulers.pop(old).close(drain=True))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        if loaded not in self._schedulers and loaded.steps is not None:
            self._schedulers[loaded] = self._scheduler(loaded)

    def _scheduler(self, loaded: Servable) -> StepScheduler[str]:
        model, steps, tokenizer, s = loaded.model, loaded.steps, loaded.tokenizer, self._settings
        assert steps is not None

        def encode(texts: list[str]) -> list[list[int]]:
            return encode_texts(tokenizer, texts, model.max_tokens, model.head_tokens, model.unk_id)

        policy = StepPolicy(s.max_active_rows, s.step_tokens, steps.cost)
        return StepScheduler(steps.runner, encode, policy=policy, max_queue_size=s.max_queue_size,
                             observer=self._observer, name=f"steps_v{model.version}")

    async def submit(self, loaded: Servable, texts: list[str], deadline: float | None) -> np.ndarray:
        """P(positive) float32 [len(texts)] from ``loaded``'s scheduler (see :meth:`StepScheduler.submit`)."""
        return await self._schedulers[loaded].submit(texts, deadline)

    async def close(self) -> None:
        """Shutdown: every scheduler finishes its admitted requests and refuses queued ones."""
        schedulers, self._schedulers = list(self._schedulers.values()), {}
        await asyncio.gather(*(scheduler.close() for scheduler in schedulers), *self._retiring)
