"""The API's micro-batcher: concurrent requests share a batch, and no request waits forever."""

from __future__ import annotations

import asyncio
import time

import pytest

from propensity.serving.batching import Job, MicroBatcher


def _job(*ids: str) -> Job:
    return Job(list(ids), single=len(ids) == 1, started=time.perf_counter())


def test_requests_arriving_during_a_batch_share_the_next_one() -> None:
    import threading

    seen: list[list[str]] = []
    release = threading.Event()

    def run(jobs: list[Job]) -> list[str]:
        seen.append([i for j in jobs for i in j.ids])
        release.wait(5)  # the first batch runs until the others have queued
        return ["-".join(j.ids) for j in jobs]

    async def main() -> list[str]:
        batcher = MicroBatcher(run, max_rows=10)
        first = asyncio.ensure_future(batcher.submit(_job("a")))
        while not seen:
            await asyncio.sleep(0.001)
        rest = [asyncio.ensure_future(batcher.submit(_job(c))) for c in ("b", "c")]
        rest.append(asyncio.ensure_future(batcher.submit(_job("d", "e"))))
        await asyncio.sleep(0.01)  # let them queue
        release.set()
        out = await asyncio.gather(first, *rest)
        batcher.close()
        return out

    assert asyncio.run(main()) == ["a", "b", "c", "d-e"]
    assert seen == [["a"], ["b", "c", "d", "e"]]


@pytest.mark.parametrize(
    ("answer", "message"),
    [(RuntimeError("model crashed"), "model crashed"), ([], "0 outcomes for a batch of 2 requests")],
)
def test_a_failed_batch_fails_its_requests_instead_of_leaving_them_waiting(answer, message) -> None:
    def run(jobs: list[Job]) -> list[str]:
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def main() -> list[BaseException | str]:
        batcher = MicroBatcher(run, max_rows=10)
        out = await asyncio.wait_for(
            asyncio.gather(batcher.submit(_job("a")), batcher.submit(_job("b")), return_exceptions=True), 5
        )
        batcher.close()
        return out

    outcomes = asyncio.run(main())
    assert [str(o) for o in outcomes] == [message, message]
