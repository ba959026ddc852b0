"""Tests of planner.reporters: which view a run gets."""

from __future__ import annotations

import io

import pytest

from planner.reporters import JSON, LIVE, PLAIN, choose_view


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("output", "tty", "environ", "view"), [
    ("json", True, {"TERM": "xterm"}, JSON),
    ("text", True, {"TERM": "xterm"}, LIVE),
    ("text", True, {}, LIVE),
    ("text", False, {"TERM": "xterm"}, PLAIN),
    ("text", True, {"TERM": "xterm", "NO_COLOR": "1"}, PLAIN),
    ("text", True, {"TERM": "xterm", "NO_COLOR": ""}, LIVE),  # no-color.org: empty is unset
    ("text", True, {"TERM": "dumb"}, PLAIN),
])
def test_view_by_output_terminal_and_environment(output: str, tty: bool,
                                                 environ: dict[str, str], view: str) -> None:
    stream = _Terminal() if tty else io.StringIO()
    assert choose_view(output, stream, environ) == view
