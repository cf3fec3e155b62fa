"""Hot model reload: serve a new version without failing or mis-answering a request.

:class:`ModelReloader` does one reload at a time: it opens the version in a worker thread
(:meth:`InferenceCore.open_version`: checksums, graph signature, warm-up, a probe scored end
to end), then switches the core to it with one reference assignment on the event loop.
Requests admitted before the switch finish on the old version, later ones get the new one.
A version that fails any step is rejected: the reason is logged and counted, the caller gets
:class:`~serve.ops.errors.ReloadRejected`, and the old version keeps serving.

:class:`RepositoryWatcher` polls the repository (``--repository-poll-s``, only while serving
``latest``) and hands the reloader any version higher than every version served so far. A
rejected version is tried again only once its files change, so a broken one is logged once,
not at every poll. Export publishes a version by renaming a finished staging folder into
place; hidden and non-numeric folders are never looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runtime.repository import RepositoryError, list_versions, resolve_version
from serve.engine.core import InferenceCore
from serve.ops.errors import ModelNotFound, ReloadRejected
from serve.ops.settings import Settings

log = logging.getLogger("serve.reload")
TRIGGER_WATCH, TRIGGER_ADMIN = "watch", "admin"
# A version folder's state as far as retrying goes: (file name, size, mtime) of each file.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class ReloadAttempt:
    """What one reload attempt did."""

    trigger: str  # TRIGGER_WATCH or TRIGGER_ADMIN
    version: int  # the version tried (0: 'latest' could not be resolved)
    outcome: str  # "switched", "unchanged", "rejected" or "not_found"
    message: str
    previous_version: int  # serving before the attempt
    served_version: int  # serving after it
    finished_unix_s: float


class ReloadObserver(Protocol):
    """Counts reload attempts (the metrics module implements it)."""

    def reload_done(self, trigger: str, outcome: str) -> None: ...


class ModelReloader:
    """Loads, verifies and warms a version off the event loop, then switches the core to it."""

    def __init__(self, core: InferenceCore, observer: ReloadObserver | None = None) -> None:
        self._core = core
        self._observer = observer
        self._lock = asyncio.Lock()
        self._highest_switched = 0
        self.last: ReloadAttempt | None = None

    @property
    def highest_served(self) -> int:
        """The highest version served since start-up (an admin rollback does not lower it)."""
        return max(self._highest_switched, self._core.model.version)

    async def reload(self, version: int | None, trigger: str) -> ReloadAttempt:
        """Serve ``version`` (None: the highest present); one reload runs at a time.

        Raises :class:`ModelNotFound` for a version that is not in the repository and
        :class:`ReloadRejected` (with the reason) for one that fails to load, verify or warm up;
        either way the old version keeps serving.
        """
        async with self._lock:
            previous = self._core.model.version
            try:
                number = self._resolve(version)
            except ModelNotFound as exc:
                self._record(trigger, version or 0, "not_found", str(exc), previous)
                raise
            if number == previous:
                return self._record(trigger, number, "unchanged", f"version {number} is already serving", previous)
            loop = asyncio.get_running_loop()
            try:
                loaded = await loop.run_in_executor(None, self._core.open_version, number)
            except Exception as exc:  # whatever breaks while loading, the version is refused, never served
                reason = f"{type(exc).__name__}: {exc}"
                self._record(trigger, number, "rejected", reason, previous)
                log.warning("model version rejected; the previous version keeps serving",
                            extra={"trigger": trigger, "version": number, "serving_version": previous,
                                   "reason": reason})
                raise ReloadRejected(f"version {number} was rejected and version {previous} keeps serving: "
                                     f"{exc}") from exc
            self._core.switch(loaded)
            self._highest_switched = max(self._highest_switched, number)
            message = f"switched from version {previous} to {number} (loaded, verified and warmed in " \
                      f"{loaded.load_seconds:.3f} s)"
            log.info("model switched", extra={"trigger": trigger, "model": loaded.model.name,
                                              "previous_version": previous, "version": number,
                                              "load_s": round(loaded.load_seconds, 3)})
            return self._record(trigger, number, "switched", message, previous)

    def _resolve(self, version: int | None) -> int:
        settings = self._core.settings
        try:
            return resolve_version(settings.model_repository, settings.model, version)
        except RepositoryError as exc:
            raise ModelNotFound(str(exc)) from exc

    def _record(self, trigger: str, version: int, outcome: str, message: str, previous: int) -> ReloadAttempt:
        self.last = ReloadAttempt(trigger, version, outcome, message, previous, self._core.model.version, time.time())
        if self._observer is not None:
            self._observer.reload_done(trigger, outcome)
        return self.last


def fingerprint(version_dir: Path) -> Fingerprint:
    """The folder's files with their sizes and modification times (changes when anything is rewritten)."""
    try:
        entries = [(p.name, p.stat()) for p in version_dir.iterdir() if p.is_file()]
    except OSError:
        return ()
    return tuple(sorted((name, stat.st_size, stat.st_mtime_ns) for name, stat in entries))


class RepositoryWatcher:
    """Every ``poll_s`` seconds, reloads the newest version above all served ones that is not known broken."""

    def __init__(self, reloader: ModelReloader, settings: Settings) -> None:
        self._reloader = reloader
        self._model_dir = Path(settings.model_repository) / settings.model
        self._settings = settings
        self._rejected: dict[int, Fingerprint] = {}
        self._task: asyncio.Task[None] | None = None
        self._listing_error: str | None = None

    def start(self) -> None:
        """Start polling in the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="repository-watcher")
        log.info("watching the repository for new versions",
                 extra={"model_dir": str(self._model_dir), "poll_s": self._settings.repository_poll_s})

    async def stop(self) -> None:
        """Stop polling; a reload in progress is abandoned (nothing is switched)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._settings.repository_poll_s)
            try:
                await self.poll()
            except Exception:  # the watcher must never take serving down; it tries again next time
                log.exception("repository poll failed")

    async def poll(self) -> ReloadAttempt | None:
        """Look once; reload a newer version if there is one. Returns the attempt, or None if none was made."""
        candidate = self._candidate()
        if candidate is None:
            return None
        state = fingerprint(self._model_dir / str(candidate))  # taken before loading: a later rewrite is new
        try:
            return await self._reloader.reload(candidate, TRIGGER_WATCH)
        except (ReloadRejected, ModelNotFound):
            self._rejected[candidate] = state  # logged by the reloader; retried only if its files change
            return self._reloader.last

    def _candidate(self) -> int | None:
        settings = self._settings
        try:
            versions = list_versions(settings.model_repository, settings.model)
        except RepositoryError as exc:
            if str(exc) != self._listing_error:  # say it once, not at every poll
                log.warning("cannot list the repository; still serving", extra={"reason": str(exc)})
            self._listing_error = str(exc)
            return None
        self._listing_error = None
        floor = self._reloader.highest_served
        for version in reversed(versions):
            if version <= floor:
                return None
            if self._rejected.get(version) != fingerprint(self._model_dir / str(version)):
                return version
        return None
