"""Run planctl on a real pseudo-terminal, for tests of what a person sees at one."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping
from pathlib import Path


def on_terminal(cwd: Path, env: Mapping[str, str], *args: str, rows: int = 40,
                cols: int = 120, timeout: float = 60) -> tuple[int, str]:
    """Run `planctl ARGS` with a pseudo-terminal of ``rows`` x ``cols`` as stdin, stdout
    and stderr; ``env`` is the whole environment (give it a TERM, and leave NO_COLOR out
    of it for colours). Its exit code and everything it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    full = {**env, "COLUMNS": str(cols), "LINES": str(rows)}
    proc = subprocess.Popen([sys.executable, "-m", "planner", *args], cwd=cwd, env=full,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            raise AssertionError(f"planctl did not end in {timeout}s: {bytes(out)[-2000:]!r}")
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode("utf-8", errors="replace")
    assert "Traceback" not in text, text
    return code, text
