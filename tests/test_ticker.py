"""The poll ticker: sleeps end in order, never early, at most a tick late, cancellable."""

from __future__ import annotations

import asyncio

from planner.executor import _Ticker


def test_sleeps_end_in_order_never_early_and_at_most_a_tick_late() -> None:
    """Each sleep ends after its delay and within one TICK of it; shorter ones first."""
    async def main() -> list[tuple[float, float]]:
        loop = asyncio.get_running_loop()
        ticker = _Ticker(loop)
        ended: list[tuple[float, float]] = []

        async def nap(delay: float) -> None:
            start = loop.time()
            await ticker.sleep(delay)
            ended.append((delay, loop.time() - start))

        # Delays in different slots: within one slot, sleepers wake in the order they slept.
        await asyncio.gather(*(nap(d) for d in (0.03, 0.012, 0.042, 0.0)))
        return ended

    ended = asyncio.run(main())
    assert [d for d, _ in ended] == [0.0, 0.012, 0.03, 0.042]
    for delay, took in ended:
        assert took >= delay - 1e-6  # the loop may run a timer a clock resolution early
        assert took <= delay + _Ticker.TICK + 0.05  # a tick, plus a busy machine's lag


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
