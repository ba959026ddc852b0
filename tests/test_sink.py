"""Sink: flushes at once outside an event loop, once per burst inside one, survives `| head`."""

from __future__ import annotations

import asyncio
import io
import os

from planner import sink
from planner.sink import Sink


class Recording(io.StringIO):
    """A text stream that counts its flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_outside_an_event_loop_every_write_is_flushed() -> None:
    """With no running loop (summaries, messages), each write is flushed at once."""
    stream = Recording()
    out = Sink(stream)
    out.write("a\n")
    out.write("b\n")
    assert stream.getvalue() == "a\nb\n"
    assert stream.flushes == 2


def test_inside_an_event_loop_a_burst_of_writes_shares_one_flush() -> None:
    """During a run, writes wait at most FLUSH_DELAY and a burst is flushed once."""
    stream = Recording()
    out = Sink(stream)

    async def main() -> tuple[int, int]:
        for n in range(100):
            out.write(f"{n}\n")
        before = stream.flushes
        await asyncio.sleep(sink.FLUSH_DELAY * 2)
        return before, stream.flushes

    before, after = asyncio.run(main())
    assert (before, after) == (0, 1)
    assert stream.getvalue().splitlines() == [str(n) for n in range(100)]


def test_a_write_after_the_loop_ended_is_flushed_with_what_was_pending() -> None:
    """A flush scheduled on a loop that ended is not waited for: the next write flushes."""
    stream = Recording()
    out = Sink(stream)

    async def main() -> None:
        out.write("during\n")

    asyncio.run(main())
    assert stream.flushes == 0
    out.write("after\n")
    assert stream.flushes == 1


def test_a_reader_that_went_away_silences_the_sink() -> None:
    """After a broken pipe the sink drops writes instead of raising."""
    read, write = os.pipe()
    stream = os.fdopen(write, "w")
    os.close(read)
    out = Sink(stream)
    out.write("nobody reads this\n")
    out.write("nor this\n")
    assert out.stream is None
