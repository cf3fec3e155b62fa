"""Answering a bidirectional request stream with flow control, for any message types.

Both streaming RPCs (``PredictStream`` and Triton's ``ModelStreamInfer``) read requests,
score up to ``window`` of them at once and send each answer as soon as it is ready. A
window slot is freed only when its answer has been handed to gRPC, so a client that stops
reading stops the server from reading (and scoring) further requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")


async def answer_stream(requests: AsyncIterator[Request], answer: Callable[[Request], Awaitable[Answer]],
                        window: int) -> AsyncIterator[Answer]:
    """Yield ``await answer(request)`` for every request, in the order they finish.

    An exception from ``answer`` (or from reading the requests) ends the stream with it; an
    ``answer`` that wants the stream to go on turns its errors into answers itself.
    """
    results: asyncio.Queue[Answer | BaseException | None] = asyncio.Queue()
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()
    started = 0

    async def score(request: Request) -> None:
        try:
            results.put_nowait(await answer(request))
        except Exception as exc:
            results.put_nowait(exc)

    async def read() -> None:
        nonlocal started
        try:
            async for request in requests:
                await slots.acquire()
                started += 1
                task = asyncio.ensure_future(score(request))
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
                slots.release()
    finally:
        reader.cancel()
        for task in list(tasks):
            task.cancel()
