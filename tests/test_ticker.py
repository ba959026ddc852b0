"""The poll ticker: sleeps end in order, never early, due at most a tick late, cancellable."""

from __future__ import annotations

import asyncio

from planner.executor import _Ticker


def test_sleeps_end_in_order_never_early_and_at_most_a_tick_late() -> None:
    """Each sleep ends after its delay, on a timer due within one TICK of it, in the order
    they are due. How late a busy loop runs a due timer is not the ticker's doing, and
    depends on the machine's load: it is not measured."""
    async def main() -> tuple[list[float], dict[float, tuple[float, float, float, float]]]:
        loop = asyncio.get_running_loop()
        ticker = _Ticker(loop)
        slept: list[float] = []
        ended: dict[float, tuple[float, float, float, float]] = {}  # in the order they end

        async def nap(delay: float) -> None:
            before = loop.time()
            future = ticker.sleep(delay)
            after = loop.time()
            slept.append(delay)
            (slot,) = [s for s, sleepers in ticker.slots.items() if future in sleepers]
            due = slot * _Ticker.TICK
            timers = [t.when() for t in loop._scheduled]  # type: ignore[attr-defined]
            assert due in timers, (due, timers)
            await future
            ended[delay] = (before, after, due, loop.time())

        # Delays in different slots: within one slot, sleepers wake in the order they slept.
        await asyncio.gather(*(nap(d) for d in (0.03, 0.012, 0.042, 0.0)))
        return slept, ended

    slept, ended = asyncio.run(main())
    assert sorted(ended) == [0.0, 0.012, 0.03, 0.042]
    assert list(ended) == sorted(slept, key=lambda d: (ended[d][2], slept.index(d))), ended
    for delay, (before, after, due, woke) in ended.items():
        # 1e-6: the float rounding of a slot's time, and the loop may run a timer a clock
        # resolution early.
        assert before + delay - 1e-6 <= due <= after + delay + _Ticker.TICK + 1e-6
        assert woke >= before + delay - 1e-6


def test_sleepers_of_one_slot_share_one_timer() -> None:
    """A hundred sleeps due in the same slot schedule one timer, not a hundred."""
    async def main() -> int:
        loop = asyncio.get_running_loop()
        ticker = _Ticker(loop)
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        futures = [ticker.sleep(0.05) for _ in range(100)]
        timers = len(loop._scheduled) - before  # type: ignore[attr-defined]
        await asyncio.gather(*futures)
        return timers

    assert asyncio.run(main()) <= 2  # the deadline may straddle two slots at most


def test_a_cancelled_sleeper_does_not_disturb_the_others() -> None:
    """Cancelling a task asleep on the ticker leaves the other sleepers of its slot alone."""
    async def main() -> list[str]:
        ticker = _Ticker(asyncio.get_running_loop())
        woke: list[str] = []

        async def nap(name: str) -> None:
            await ticker.sleep(0.02)
            woke.append(name)

        first, second = asyncio.create_task(nap("a")), asyncio.create_task(nap("b"))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        return woke

    assert asyncio.run(main()) == ["b"]
