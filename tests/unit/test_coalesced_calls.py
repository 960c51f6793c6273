"""Coalesced CE actor calls: the gateway's calls made in one pass of the event loop travel as one, each caller gets
its own answer or its own error, nothing waits to fill a batch, and the CE actor's per-item answers survive the trip
(pure asyncio, no actor)."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

from intercede.actors.ce import _each
from intercede.actors.gateway import MAX_BATCH, Coalescer
from intercede.errors import ConnectivityError, InvalidSpecError


class Recorder:
    """A ``send`` that records each call's items and answers ``item * 10``, or the error named for an item."""

    def __init__(self, errors: dict[int, BaseException] | None = None, fail: BaseException | None = None) -> None:
        self.calls: list[list[int]] = []
        self.errors = errors or {}
        self.fail = fail

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.calls.append(list(items))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [self.errors.get(i, i * 10) for i in items]


async def test_calls_made_together_go_as_one_and_each_gets_its_own_answer() -> None:
    send = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(send)
    answers = await asyncio.gather(*(coalescer.ask(i) for i in range(5)))
    assert answers == [0, 10, 20, 30, 40]
    assert send.calls == [[0, 1, 2, 3, 4]]


async def test_a_lone_call_goes_out_by_itself_and_later_calls_make_a_new_batch() -> None:
    send = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(send)
    assert await coalescer.ask(7) == 70
    assert list(await asyncio.gather(coalescer.ask(1), coalescer.ask(2))) == [10, 20]
    assert send.calls == [[7], [1, 2]]


async def test_an_item_that_failed_raises_for_its_caller_only() -> None:
    refused = InvalidSpecError("no such queue")
    send = Recorder(errors={2: refused})
    coalescer: Coalescer[int, int] = Coalescer(send)
    results = await asyncio.gather(*(coalescer.ask(i) for i in range(4)), return_exceptions=True)
    assert results[:2] == [0, 10] and results[3] == 30
    assert results[2] is refused


async def test_a_call_that_failed_as_a_whole_fails_each_of_its_items_with_that_error() -> None:
    lost = ConnectivityError("actor call 'submit_many' lost")
    coalescer: Coalescer[int, int] = Coalescer(Recorder(fail=lost))
    results = await asyncio.gather(*(coalescer.ask(i) for i in range(3)), return_exceptions=True)
    assert results == [lost, lost, lost]


async def test_a_wrong_number_of_answers_fails_every_item_instead_of_pairing_them_up() -> None:
    async def short(items: list[int]) -> list[int | BaseException]:
        return [0] * (len(items) - 1)

    coalescer: Coalescer[int, int] = Coalescer(short)
    results = await asyncio.gather(*(coalescer.ask(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "answered 2 items for 3" in str(r) for r in results)


async def test_more_than_max_batch_items_are_split_into_calls_of_at_most_max_batch() -> None:
    send = Recorder()
    coalescer: Coalescer[int, int] = Coalescer(send)
    count = 2 * MAX_BATCH + 3
    assert await asyncio.gather(*(coalescer.ask(i) for i in range(count))) == [i * 10 for i in range(count)]
    assert [len(c) for c in send.calls] == [MAX_BATCH, MAX_BATCH, 3]
    assert [i for c in send.calls for i in c] == list(range(count))


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[int | BaseException]:
        await release.wait()
        return [i for i in items]

    coalescer: Coalescer[int, int] = Coalescer(slow)
    first, second = (asyncio.ensure_future(coalescer.ask(i)) for i in (1, 2))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == 2
    with pytest.raises(asyncio.CancelledError):
        await first


class Unpicklable(ConnectivityError):
    """A temporary error holding something pickle cannot carry (a lock, as some client libraries' errors do)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


async def test_the_ce_actor_answers_each_item_and_keeps_an_unpicklable_error_temporary() -> None:
    async def ok() -> int:
        return 1

    async def refused() -> int:
        raise InvalidSpecError("no such queue")

    async def lost() -> int:
        raise Unpicklable("connection dropped")

    answers = await _each([ok(), refused(), lost()])
    assert answers[0] == 1
    assert isinstance(answers[1], InvalidSpecError)
    assert isinstance(answers[2], ConnectivityError) and not isinstance(answers[2], Unpicklable)
    assert "Unpicklable: connection dropped" in str(answers[2])
    pickle.dumps(answers)  # what Ray ships back
