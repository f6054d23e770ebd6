"""Work shared between requests: one feature lookup and one model call for every request that
arrived while the previous batch ran (:class:`MicroBatcher`), and everything after the answer on one
background thread (:class:`OffPathWorker`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class Ticker:
    """Calls ``tick`` every ``interval_s`` on a daemon thread of its own; :meth:`close` stops it and
    calls ``tick`` once more, so nothing handed over before the close is left behind."""

    def __init__(self, tick: Callable[[], Any], interval_s: float, name: str) -> None:
        self.tick, self.interval_s = tick, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def close(self, timeout_s: float) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        self.tick()


class OffPathWorker:
    """One thread that wakes every ``interval_s`` and handles everything queued since, at once.

    Handing a job over is a deque append: no thread wake-up (and GIL hand-off) per request,
    which cost more than the rest of a request's own work. Past ``max_pending`` queued
    items, :meth:`submit` refuses and the caller decides (the API logs without shadow scores).
    """

    def __init__(self, handle: Callable[[list[Any]], None], interval_s: float, max_pending: int) -> None:
        self.handle, self.interval_s, self.max_pending = handle, interval_s, max_pending
        self._items: deque[Any] = deque()
        self._ticker = Ticker(self._drain, interval_s, "shadow-and-log")

    def submit(self, item: Any) -> bool:
        if len(self._items) >= self.max_pending:
            return False
        self._items.append(item)
        return True

    def _drain(self) -> None:
        items = []
        while self._items:
            items.append(self._items.popleft())
        if items:
            try:
                self.handle(items)
            except Exception:
                log.exception("off-path work on %d items failed", len(items))

    def close(self) -> None:
        """Stop the thread, then handle what is left."""
        self._ticker.close(timeout_s=30)


@dataclass
class Job:
    """One request waiting for its batch."""

    ids: list[str]
    single: bool  # answered as one Prediction, not a BatchPrediction
    started: float  # perf_counter when the request reached the endpoint
    queued: float = 0.0
    future: asyncio.Future[Any] | None = None


class MicroBatcher:
    """Concurrent requests share one feature lookup and one model call.

    A request that finds no batch running starts one at once: nothing is added at concurrency 1.
    Requests that arrive while a batch runs queue, and the next batch takes them all (up to
    ``max_rows`` customers; a request is never split). Triton's dynamic batching with no queue
    delay: under load a batch is whatever queued during the previous one, so the cost of a
    Redis round trip and a model call is shared instead of paid per request.

    ``run`` answers one outcome per job (a response, or the HTTPException to raise) on one
    thread of its own: one hop per batch, not per request, and the event loop goes on reading
    requests while a batch waits on Redis or runs the model (both release the GIL), and while a
    slow store or model server runs into its timeout.
    """

    def __init__(self, run: Callable[[list[Job]], list[Any]], max_rows: int) -> None:
        self.run, self.max_rows = run, max_rows
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookup-and-score")
        self._pending: deque[Job] = deque()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, job: Job) -> Any:
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        job.queued = time.perf_counter()
        self._pending.append(job)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await job.future

    def _next_batch(self) -> list[Job]:
        jobs = [self._pending.popleft()]
        rows = len(jobs[0].ids)
        while self._pending and rows + len(self._pending[0].ids) <= self.max_rows:
            rows += len(self._pending[0].ids)
            jobs.append(self._pending.popleft())
        return jobs

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        try:
            while self._pending:
                jobs = self._next_batch()
                try:
                    outcomes = await loop.run_in_executor(self._thread, self.run, jobs)
                    if len(outcomes) != len(jobs):
                        raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(jobs)} requests")
                except Exception as exc:  # a bug, not a known fault: every request of the batch fails
                    log.exception("batch of %d requests failed", len(jobs))
                    _fail(jobs, exc)
                    continue
                for job, outcome in zip(jobs, outcomes, strict=True):
                    if job.future is not None and not job.future.done():  # done: the client went away
                        job.future.set_result(outcome)
        finally:
            self._task = None
            # Stopped early (cancelled at shutdown, or a bug above): no request may wait forever.
            _fail([*jobs, *self._pending], RuntimeError("the request batcher stopped"))
            self._pending.clear()

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def _fail(jobs: Sequence[Job], exc: BaseException) -> None:
    """Fail every job still waiting for its answer."""
    for job in jobs:
        if job.future is not None and not job.future.done():
            job.future.set_exception(exc)
