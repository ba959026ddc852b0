"""An output stream that a reader going away (`planctl ... | head`) cannot break."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TextIO

__all__ = ["Sink"]

# How long a line written during a run may wait in the buffer before it is flushed.
FLUSH_DELAY = 0.05


class Sink:
    """Writes whole chunks; after a broken pipe, drops everything for good.

    The run itself must go on to its end, rollback included, when nobody reads any more;
    the stream's descriptor is pointed at /dev/null so that the interpreter's own flush
    at exit does not fail either.

    Outside an event loop every write is flushed at once. During a run (inside the loop)
    a write schedules one flush FLUSH_DELAY later, and the writes until then share it: a
    chain of 10,000 quick commands prints 20,000 lines with a few hundred system calls
    instead of 20,000, and a reader still sees each line within 50 ms.
    """

    def __init__(self, stream: TextIO, *, batch: bool = False) -> None:
        self.stream: TextIO | None = stream
        self.pending: asyncio.AbstractEventLoop | None = None  # where a flush is due
        # Outside an event loop each write is flushed at once, but for a writer of many
        # lines in one go (`planctl events`): the stream's buffer, then its owner, flush.
        self.batch = batch

    def write(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(text)
        except BrokenPipeError:
            self._gone()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if not self.batch:
                self.flush()
            return
        if self.pending is not loop:  # none scheduled on this loop (another may have ended)
            self.pending = loop
            loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Flush now (also what the scheduled flush calls)."""
        self.pending = None
        if self.stream is None:
            return
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._gone()
        except ValueError:  # closed by its owner in the meantime
            self.stream = None

    def _gone(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
        self.stream = None
